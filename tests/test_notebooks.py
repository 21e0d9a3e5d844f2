"""The course's chapters as Jupyter notebooks, run by a real kernel in an empty folder.

Each chapter becomes a notebook as ``make notebooks`` makes it (jupytext, Markdown to
ipynb; the folded exercise solutions stay Markdown, for the reader to try first), and
nbclient runs it with the ``python3`` kernel (ipykernel, the Python running this test) in a
new, empty folder: the chapter's code must make whatever folder it writes to, and must not
lean on a solution having run. Matplotlib is left to the kernel's own inline backend, so a
chapter that draws shows its figures in the notebook: each such chapter's outputs must
hold a PNG image.

Chapters that load MNIST need ``TINYNN_DATA``, as in ``docs/conftest.py``. The notebooks
need the ``notebooks`` extra (jupytext, nbclient, nbformat, ipykernel): without it the
test skips with one line, except in CI (``CI`` set), where its absence is a failure. A
notebook's cells get ``CELL_TIMEOUT`` seconds each; the whole course takes about a minute.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "docs" / "tutorial").glob("[0-9]*.md"))
NEEDS = ("jupytext", "nbclient", "nbformat", "ipykernel")
CELL_TIMEOUT = 600


def _missing() -> str | None:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    return ", ".join(missing) or None


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_as_a_notebook(chapter, tmp_path):
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the notebook test needs, in CI: {missing} (the notebooks extra)")
        pytest.skip(f"the notebook test needs {missing}: make notebooks installs them")
    text = chapter.read_text(encoding="utf-8")
    if ("mnist.load_data" in text and not os.environ.get("TINYNN_DATA")
            and not os.environ.get("CI")):
        pytest.skip("MNIST chapters need TINYNN_DATA=<folder holding mnist/>")

    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.reads(text, fmt="md")
    # The kernel's own environment, less the Agg backend that docs/conftest.py sets for
    # its in-process run: a notebook reader gets the inline backend.
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(cwd=str(tmp_path), env=env)  # raises CellExecutionError on any error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    draws = "plt.show()" in text
    assert bool(images) == draws, (
        f"{chapter.name}: {len(images)} inline figures, but the chapter "
        f"{'calls' if draws else 'never calls'} plt.show()")
    if draws:
        assert any((tmp_path / "figures").glob("*.png")), "no figure saved under figures/"
