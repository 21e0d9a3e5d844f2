"""A Griffe extension for the API reference: doctest examples render as Python code.

tinynn's docstrings hold doctests as plain ``>>>`` paragraphs (pytest runs them). As
Markdown they would be prose, with their output read as link syntax; this fences each
doctest paragraph as ``pycon`` before mkdocstrings renders it.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    r"""Wrap each paragraph that starts with ``>>>`` in a ```pycon fence.

    >>> fence_doctests("Sum:\n\n" + ">" * 3 + " 1 + 1\n2\n\nDone.").splitlines()
    ['Sum:', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'Done.']
    """
    out, in_block, fenced = [], False, False
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fenced = not fenced
        if not fenced and not in_block and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_block = True
        elif in_block and not stripped:
            out.append(f"{indent}```")
            in_block = False
        out.append(line)
    if in_block:
        out.append(f"{indent}```")
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    """Fences the doctests of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
