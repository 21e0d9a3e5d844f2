"""The tutorial's code blocks run as tests: every ```python block of a chapter, in order.

Blocks of one chapter share one namespace, as a reader running them top to bottom
would. A ```python block's printed output is kept; an ```output block right after
it is what that output must be (doctest's rules: ``...`` matches anything, runs of
whitespace are equal). The blocks inside an exercise's folded ``??? note "Solution"`` run
too, in their place (Sybil reads indented fences; ``tests/test_course.py`` checks that
every solution's blocks are among the examples collected here).

Each chapter runs in ``docs/``: a chapter saves its figures to ``figures/`` under the folder
it runs in (making it if needed, so it runs from any folder), which here is ``docs/figures/``
(git-ignored), where the site's ``../figures/…`` links from ``docs/tutorial/`` find them.

Chapters that load MNIST need ``TINYNN_DATA``: without it they skip, with one line.
In CI (``CI`` set) a missing MNIST is a failure, as in ``tests/conftest.py``.

pytest collects ``docs`` before ``tinynn``: its ``--import-mode=importlib`` doctest run
of ``tinynn/backend.py`` loads a second copy of that module and leaves it on the package
as ``tinynn.backend``, so a chapter's ``tinynn.backend.using(...)`` after it would switch
a backend nobody reads.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
from pathlib import Path

import pytest
from sybil import Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

DOCS = Path(__file__).parent
CHAPTERS = sorted((DOCS / "tutorial").glob("*.md"))
NEEDS_MNIST = [p for p in CHAPTERS if "mnist.load_data" in p.read_text(encoding="utf-8")]
OUTPUT_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; no window opens


class PrintingEvaluator(PythonEvaluator):
    """Runs a block and keeps what it printed, for the ```output block that may follow."""

    def __call__(self, example: Example) -> None:
        __tracebackhide__ = True
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            super().__call__(example)
        example.namespace["__printed__"] = out.getvalue()


class PythonBlocks(PythonCodeBlockParser):
    def __init__(self):
        super().__init__()
        self.codeblock_parser = CodeBlockParser("python", PrintingEvaluator())


def check_output(example: Example) -> str | None:
    """Compare the ```output block with what the block before it printed."""
    want = example.parsed
    got = example.namespace.pop("__printed__", None)
    if got is None:
        return "an ```output block must follow a ```python block that printed something"
    checker = doctest.OutputChecker()
    if checker.check_output(want, got, OUTPUT_FLAGS):
        return None
    return checker.output_difference(doctest.Example("", want), got, OUTPUT_FLAGS)


PARSERS = [PythonBlocks(), CodeBlockParser("output", check_output), SkipParser()]


def enter_docs(namespace: dict) -> None:
    import tinynn

    # A reader starts on the default backend, whatever earlier tests left selected (the
    # package's own functions: pytest's importlib mode may load a second tinynn.backend).
    namespace["__backend__"] = tinynn.get_backend()
    tinynn.set_backend(os.environ.get("TINYNN_BACKEND", "numba"))
    namespace["__cwd__"] = os.getcwd()
    os.chdir(DOCS)


def leave_docs(namespace: dict) -> None:
    cwd = namespace.pop("__cwd__", None)  # None when setup skipped the chapter
    if cwd is not None:
        os.chdir(cwd)
    backend = namespace.pop("__backend__", None)
    if backend is not None:
        import tinynn

        tinynn.set_backend(backend)
    import matplotlib.pyplot as plt

    plt.close("all")


def enter_docs_with_mnist(namespace: dict) -> None:
    if not os.environ.get("TINYNN_DATA") and not os.environ.get("CI"):
        pytest.skip("MNIST chapters need TINYNN_DATA=<folder holding mnist/>")
    enter_docs(namespace)


def _relative(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(DOCS)) for p in paths] or ["no chapter matches this"]


pytest_collect_file = (
    Sybil(parsers=PARSERS, path=str(DOCS), patterns=_relative(NEEDS_MNIST),
          setup=enter_docs_with_mnist, teardown=leave_docs, name="mnist")
    + Sybil(parsers=PARSERS, path=str(DOCS),
            patterns=_relative([p for p in CHAPTERS if p not in NEEDS_MNIST]),
            setup=enter_docs, teardown=leave_docs, name="plain")
).pytest()

# The site's MkDocs hooks need the ``docs`` extra, not the tests.
collect_ignore = ["hooks.py", "math_hooks.py", "griffe_doctests.py"]
