"""The notebooks run under nbval (tests/nbval_markdown.py): failures name the chapter and cell."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbval_markdown import code_cell_sources, is_notebook_source, write_ipynb

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

A throwaway notebook written by tests/test_nbval_notebooks.py.
"""

BROKEN = HEADER + """
```{code-cell} ipython3
from pathlib import Path

assert Path.cwd().name == "chapters", Path.cwd()  # the kernel runs in the notebook's folder
```

```{code-cell} ipython3
---
tags: [nbval-check-output]
---
total = 1 + 1
print("total:", total)
```

% nbval-output
% total: 2

```{code-cell} ipython3
:tags: [raises-exception]
raise ValueError("this cell may raise")
```

```{code-cell} ipython3
def half(x):
    return x / 2

assert half(total) == 3, "half of two is not three"
```

```{code-cell} ipython3
print("not run: an earlier cell failed")
```
"""

FROZEN_MISMATCH = HEADER + """
```{code-cell} ipython3
:tags: [nbval-check-output]
print("one", 1)
```

% nbval-output
% one 2
"""


def book_notebooks() -> list[Path]:
    paths = sorted((ROOT / "chapters").glob("*.md")) + sorted((ROOT / "exercises").glob("*.md"))
    return [path for path in paths if is_notebook_source(path)]


def line_of(text: str, needle: str) -> int:
    """1-based number of the line of `text` that contains `needle`."""
    return next(number for number, line in enumerate(text.splitlines(), start=1)
                if needle in line)


def test_every_book_notebook_is_collected():
    names = {path.name for path in book_notebooks()}
    assert {"01-change-of-variables.md", "ch01-exercises.md"} <= names
    assert "appendix-notation.md" not in names  # no kernelspec: not a notebook
    assert len(names) >= 16


@pytest.mark.parametrize("path", book_notebooks(), ids=lambda path: path.name)
def test_cell_lines_point_into_the_markdown(path, tmp_path):
    """The lines a report gives for each cell hold exactly that cell's source."""
    target = tmp_path / "notebook.ipynb"
    write_ipynb(path, target, path.name)
    lines = path.read_text(encoding="utf-8").splitlines()
    cells = [cell for cell in nbformat.read(target, as_version=4).cells
             if cell.cell_type == "code"]
    assert cells
    assert all(not cell.outputs and cell.execution_count is None for cell in cells)
    for cell in cells:
        first, last = cell.metadata["nbval_markdown"]["lines"]
        assert "\n".join(lines[first - 1:last]) == cell.source
    assert len(cells) == len(code_cell_sources(path.read_text(encoding="utf-8")))
    jupytext_cells = [c for c in jupytext.read(path).cells if c.cell_type == "code"]
    assert [c.source for c in jupytext_cells] == [c.source for c in cells]


def test_a_checked_cell_needs_its_expected_output(tmp_path):
    source = tmp_path / "chapters" / "97-unfrozen.md"
    source.parent.mkdir()
    source.write_text(FROZEN_MISMATCH.replace("% nbval-output\n% one 2\n", ""),
                      encoding="utf-8")
    with pytest.raises(ValueError, match=r"97-unfrozen\.md:\d+: Cell 0 is marked for output"):
        write_ipynb(source, tmp_path / "out.ipynb", "chapters/97-unfrozen.md")


def test_a_failing_notebook_fails_the_run_and_names_its_cell(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "99-broken.md").write_text(BROKEN, encoding="utf-8")
    (chapters / "98-frozen.md").write_text(FROZEN_MISMATCH, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    junit = tmp_path / "junit.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "nbval_markdown",
         "--nbval-lax", "--nbval-current-env", "-c", str(tmp_path / "pytest.ini"),
         "--rootdir", str(tmp_path), f"--junitxml={junit}", "chapters"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output

    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = next((child.tag for child in case if child.tag in {"failure", "error",
                                                                     "skipped"}), "passed")
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = kind
    broken = "chapters.99-broken.md"
    assert outcomes == {
        f"{broken}::Cell 0": "passed",   # ran in chapters/
        f"{broken}::Cell 1": "passed",   # its output equals the frozen one
        f"{broken}::Cell 2": "passed",   # raises-exception
        f"{broken}::Cell 3": "failure",  # the failing assert
        f"{broken}::Cell 4": "skipped",  # after the failure
        "chapters.98-frozen.md::Cell 0": "failure",
    }, output

    # the report names the chapter file, the cell and the line of the failing assert
    assert_line = line_of(BROKEN, "assert half(total)")
    assert "chapters/99-broken.md::Cell 3" in output
    assert (f"chapters/99-broken.md:{assert_line}: AssertionError: half of two is not three"
            f"  [Cell 3, lines {assert_line - 3}-{assert_line}]") in output
    assert "not run: an earlier cell failed" not in output
    frozen_line = line_of(FROZEN_MISMATCH, 'print("one", 1)')
    assert (f"chapters/98-frozen.md:{frozen_line}: the output differs from the "
            f"'% nbval-output' block after the cell") in output
    assert "Cell outputs differ" in output  # nbval's own report follows
    assert "notebook run times" in output
    assert "chapters/99-broken.md  (Cell 3 failed)" in output
    # the notebooks nbval ran were written to the build folder, none beside the chapters
    assert sorted(p.name for p in (tmp_path / "_build" / "nbval" / "chapters").iterdir()) == [
        "98-frozen.ipynb", "99-broken.ipynb"]
    assert not list(chapters.glob("*.ipynb"))
