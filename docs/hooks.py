"""MkDocs hooks: the README becomes the home page, and the repository files it links to
(figures, the benchmark results, the failure-mode tests) are published beside it.

The README's links are written for the repository (``docs/tutorial/…``,
``examples/figures/…``); on the site the README is ``index.md`` at the top, so
``docs/`` is dropped from its links and the other files are copied to the same
paths they have in the repository. ``benchmarks/RESULTS.md`` is on the site as the
page ``benchmarks.md`` (which includes it), and ``CONTRIBUTING.md``, not on the
site, keeps its name but loses its link. Every link then resolves, and ``--strict``
catches one that does not.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Repository files the site's pages link to, published at the same paths.
PUBLISHED = ["examples/figures/*", "benchmarks/results/*.png", "tests/test_failure_*.py",
             "tests/test_datasets.py", "tests/test_contracts.py", "tests/test_saving_faults.py",
             "tests/test_interrupt.py", "tests/test_overflow.py", "tests/test_backup.py",
             "tests/test_backup_killed.py"]


def readme_as_home_page(text: str) -> str:
    """The README with its links made for the site's top: into ``docs/`` without the
    prefix, to ``benchmarks/RESULTS.md`` to the page that includes it, and to
    ``CONTRIBUTING.md`` (a repository file only) as plain text."""
    text = re.sub(r"\]\(docs/", "](", text)
    text = re.sub(r"\]\(benchmarks/RESULTS\.md", "](benchmarks.md", text)
    return re.sub(r"\[([^\]]+)\]\(CONTRIBUTING\.md[^)]*\)", r"\1", text)


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "index.md",
                                content=readme_as_home_page((ROOT / "README.md").read_text())))
    for pattern in PUBLISHED:
        for path in sorted(ROOT.glob(pattern)):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and files.get_file_from_path(rel) is None:
                files.append(File.generated(config, rel, abs_src_path=str(path)))
    return files
