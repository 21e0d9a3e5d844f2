"""The course's shape: chapters, exercises with runnable solutions, figures made by the code.

``docs/conftest.py`` runs every chapter's code blocks; these tests check what that run
cannot see by itself:

* there are at least eleven chapters (0 to 10), and every chapter but the maintainers' (08)
  has at least two exercises, at least 29 in all (the issue's 24, and chapter 10's five);
* every exercise ("### Exercise: …") has a folded solution (``??? note "Solution"``)
  holding Python code, and each of those code blocks is an example that the docs' own
  Sybil parsers collect, so the suite runs it (a solution written so that the parsers miss
  it, say without a fence or with a ``skip`` directive, fails here);
* every figure a chapter links to is saved by that chapter's code into ``figures/`` under
  the folder it runs in, never to a path outside it (so the chapters run from any folder).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHAPTERS = sorted((DOCS / "tutorial").glob("[0-9]*.md"))
MAINTAINERS = "08-compiled.md"

EXERCISE = re.compile(r"^#{2,4} Exercise\b.*$", re.M)
SOLUTION = re.compile(r'^\?\?\? note "Solution"\s*$', re.M)
NEXT_HEADING = re.compile(r"^#{1,4} ", re.M)
INDENTED_PYTHON = re.compile(r"^    ```python\s*$", re.M)


def _docs_parsers() -> list:
    """The parsers ``docs/conftest.py`` gives Sybil (loaded from the file, not imported as
    a conftest, so that pytest's own conftest handling is left alone)."""
    spec = importlib.util.spec_from_file_location("tinynn_docs_conftest", DOCS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PARSERS


def exercises(text: str) -> list[tuple[str, str]]:
    """(title, body) of each exercise: from its heading to the next heading."""
    found = []
    for match in EXERCISE.finditer(text):
        following = NEXT_HEADING.search(text, match.end())
        found.append((match.group(0), text[match.end():following.start() if following else None]))
    return found


def test_there_are_eleven_chapters_and_29_exercises():
    assert len(CHAPTERS) >= 11, [p.name for p in CHAPTERS]
    counts = {p.name: len(exercises(p.read_text(encoding="utf-8"))) for p in CHAPTERS}
    thin = {name: n for name, n in counts.items() if n < 2 and name != MAINTAINERS}
    assert not thin, f"chapters with fewer than two exercises: {thin}"
    assert sum(counts.values()) >= 29, counts


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_solution_runs(chapter):
    from sybil import Sybil

    text = chapter.read_text(encoding="utf-8")
    document = Sybil(parsers=_docs_parsers()).parse(chapter)
    collected = {example.start for example in document.examples()}
    for title, body in exercises(text):
        solution = SOLUTION.search(body)
        assert solution, f"{chapter.name}: {title!r} has no '??? note \"Solution\"' block"
        assert not re.search(r"skip\s*:", body[solution.end():]), (
            f"{chapter.name}: the solution of {title!r} skips a block: solutions must run")
        blocks = list(INDENTED_PYTHON.finditer(body, solution.end()))
        assert blocks, f"{chapter.name}: the solution of {title!r} holds no ```python block"
        offset = text.index(body)
        for block in blocks:
            start = offset + block.start()  # Sybil's region starts with the fence's line
            assert start in collected, (
                f"{chapter.name}: a code block of the solution of {title!r} (line "
                f"{text.count(chr(10), 0, start) + 1}) is not collected, so never runs")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_figures_are_made_by_the_chapter_where_it_runs(chapter):
    if chapter.name == MAINTAINERS:
        pytest.skip("the maintainers' chapter draws no figure")
    text = chapter.read_text(encoding="utf-8")
    linked = set(re.findall(r"!\[[^\]]*\]\(\.\./figures/([^)]+)\)", text))
    saved = set(re.findall(r'FIGURES / (?:f?)"([^"{}]+\.png)"', text))
    saved |= {name + ".png" for name in re.findall(r'\("([0-9]{2}-[a-z-]+)", ', text)}
    assert linked <= saved, f"{chapter.name}: figures linked but not saved: {linked - saved}"
    if linked:
        assert 'FIGURES = Path("figures")' in text and "FIGURES.mkdir(exist_ok=True)" in text
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    assert "../" not in code, f"{chapter.name}: code reaches outside the folder it runs in"
