"""Collect the book's text notebooks (chapters/*.md, exercises/*.md) as pytest items.

Each MyST-Markdown notebook with a ``kernelspec`` header becomes one test that executes it
top to bottom in a fresh ``python3`` kernel, with the notebook's folder as working
directory. Any cell error (a failing ``assert`` included) fails the test. Cells tagged
``raises-exception`` may raise. The environment, ``EBFLOW_FAST`` included, is inherited.
A table of notebook run times is printed at the end of the session.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

_NOTEBOOK_DIRS = {"chapters", "exercises"}
_TIMINGS: list[tuple[str, float]] = []


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix != ".md" or not _NOTEBOOK_DIRS & set(file_path.parts):
        return None
    head = file_path.read_text(encoding="utf-8")[:3000]
    if "kernelspec" not in head:
        return None
    return NotebookFile.from_parent(parent, path=file_path)


class NotebookFile(pytest.File):
    def collect(self):
        yield NotebookItem.from_parent(self, name="notebook")


class NotebookItem(pytest.Item):
    def runtest(self) -> None:
        import jupytext
        from nbclient import NotebookClient

        notebook = jupytext.read(self.path)
        client = NotebookClient(
            notebook,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(self.path.parent)}},
        )
        start = time.perf_counter()
        try:
            client.execute()
        finally:
            _TIMINGS.append((str(self.path.relative_to(self.config.rootpath)),
                             time.perf_counter() - start))

    def repr_failure(self, excinfo, style=None):
        from nbclient.exceptions import CellExecutionError

        if isinstance(excinfo.value, CellExecutionError):
            return f"{self.path.name}: a cell failed\n{excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, f"notebook {self.path.name}"


def pytest_terminal_summary(terminalreporter) -> None:
    if not _TIMINGS:
        return
    terminalreporter.section("notebook run times")
    for name, seconds in sorted(_TIMINGS):
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
