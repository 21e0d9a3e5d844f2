"""The README's worked example of a user's own layer and optimizer runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


@pytest.mark.usefixtures("backend")
def test_add_your_own_layer_or_optimizer_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", section("Add your own layer or optimizer"),
                        re.DOTALL)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # its asserts are the test
    assert namespace["model"].optimizer.iterations == 30 * 8
