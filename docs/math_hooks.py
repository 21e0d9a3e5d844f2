"""MkDocs hook: the pages' formulas become MathML when the site is built.

``pymdownx.arithmatex`` (generic mode) leaves each formula in a page as
``<span class="arithmatex">\\(…\\)</span>`` (inline) or ``<div class="arithmatex">\\[…\\]</div>``
(display). This hook turns each into a ``<math>`` element with ``latex2mathml``, so the
browser draws the formula itself (MathML Core): no script, no font or file fetched from
anywhere, and the site reads the same offline. A formula that ``latex2mathml`` cannot
convert fails the build, naming the page and the formula.

Registered in ``mkdocs.yml`` under ``hooks:``; ``tests/test_site_math.py`` checks the result
in headless Chromium with every request outside the site refused.
"""

from __future__ import annotations

import html
import re

#: What arithmatex writes (generic mode): the TeX is HTML-escaped inside the element.
FORMULA = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*'
    r"(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<display>.*?)\\\])\s*</(?P=tag)>",
    re.S,
)


def to_mathml(tex: str, display: bool) -> str:
    """One formula's TeX (without its delimiters) as a ``<math>`` element."""
    from latex2mathml.converter import convert

    mathml = convert(tex.strip(), display="block" if display else "inline")
    # The TeX travels with the formula: readers can copy it, screen readers may speak it.
    return mathml.replace("<math ", f'<math alttext="{html.escape(tex.strip())}" ', 1)


def render(page_html: str, where: str = "a page") -> str:
    """``page_html`` with every arithmatex formula replaced by MathML."""

    def replace(match: re.Match) -> str:
        display = match["display"] is not None
        tex = html.unescape(match["display"] if display else match["inline"])
        try:
            mathml = to_mathml(tex, display)
        except Exception as error:  # latex2mathml raises its own exception types
            raise ValueError(f"{where}: cannot render the formula {tex!r} as MathML: "
                             f"{error}") from error
        if display:
            # The theme scrolls a wide display formula sideways; a MathML formula's ink can
            # overhang its box by a pixel, which would add a vertical scroll bar too.
            return f'<div class="arithmatex" style="overflow-y: hidden">{mathml}</div>'
        return f'<span class="arithmatex">{mathml}</span>'

    return FORMULA.sub(replace, page_html)


def on_page_content(page_html, page, config, files):
    from mkdocs.exceptions import PluginError

    try:
        return render(page_html, page.file.src_uri)
    except ValueError as error:
        raise PluginError(str(error)) from error
