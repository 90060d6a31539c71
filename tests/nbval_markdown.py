"""nbval for the book's MyST-Markdown notebooks (a pytest plugin, loaded by the root conftest.py).

The notebooks stay jupytext MyST Markdown (``chapters/*.md``, ``exercises/*.md``: an ``.md``
file in one of those folders whose front matter has a ``kernelspec``). With nbval switched on
(``--nbval-lax``, set in ``pyproject.toml``), each one is collected like this:

* jupytext turns it into ``_build/nbval/<folder>/<stem>.ipynb`` (no outputs), and nbval's own
  collector (``nbval.plugin.IPyNbFile``) reads that notebook: one pytest item per code cell,
  named ``Cell 0``, ``Cell 1``, ... as nbval names them, all run in one fresh kernel per
  notebook. The kernel is the one of the current environment with ``--nbval-current-env``
  and inherits the environment (``EBFLOW_FAST`` included).
* The collector's path stays the ``.md`` file, so a report names the chapter
  (``chapters/04-score-matching.md::Cell 3``) and nbval starts the kernel in the chapter's own
  folder (it starts it in the folder of the collector's path), where relative files and the
  ``solutions`` package of the workbooks are found. No ``.ipynb`` is written beside a chapter.
* A failing cell (an ``assert`` included) fails its item, and its report starts with the
  chapter file and the line of the failing statement, ``chapters/04-score-matching.md:212:
  AssertionError: ...``; the cells after it are skipped (the kernel's state is broken).
* All cells of a notebook share one time budget, the ini option ``notebook_timeout``
  (seconds); nbval's ``--nbval-cell-timeout`` still bounds each cell.
* Output comparison: under ``--nbval-lax`` nbval compares a cell's output only where the cell
  is marked (tag ``nbval-check-output`` or a ``# NBVAL_CHECK_OUTPUT`` comment). Markdown holds
  no outputs, so the expected stdout is written right after the cell as a MyST comment block
  (invisible in the book), which becomes the reference output in the ``.ipynb``::

      ```{code-cell} ipython3
      :tags: [nbval-check-output]
      print(torch.eye(3).det().item())
      ```

      % nbval-output
      % 1.0

  Other nbval markers (``raises-exception``, ``nbval-skip``, ...) work as documented by nbval.
* The end of the session prints a table of notebook run times (kernel start to stop).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from nbval.plugin import IPyNbFile, find_comment_markers, find_metadata_tags

NOTEBOOK_DIRS = ("chapters", "exercises")
BUILD_DIR = ("_build", "nbval")  # under the rootdir; `make clean` removes it
CODE_DIRECTIVE = "{code-cell}"
OUTPUT_MARKER = "% nbval-output"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_FRAME = re.compile(r"Cell In\[\d*\], line (\d+)")
_TIMINGS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "notebook_timeout",
        "seconds that all the cells of one notebook may run together under nbval (fast mode)",
        default="300",
    )
    parser.addini(
        "notebook_timeout_full",
        "the same budget in full mode (EBFLOW_FAST unset), where chapters train for minutes",
        default="3600",
    )


def notebook_timeout(config: pytest.Config) -> str:
    """The per-notebook budget of the current run mode, in seconds."""
    fast = bool(os.environ.get("EBFLOW_FAST"))
    return config.getini("notebook_timeout" if fast else "notebook_timeout_full")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TIMINGS] = []


def nbval_enabled(config: pytest.Config) -> bool:
    option = config.option
    return bool(getattr(option, "nbval", False) or getattr(option, "nbval_lax", False))


def is_notebook_source(path: Path) -> bool:
    """A MyST-Markdown notebook of the book: chapters/*.md or exercises/*.md with a kernel."""
    if path.suffix != ".md" or path.parent.name not in NOTEBOOK_DIRS:
        return False
    return "kernelspec" in path.read_text(encoding="utf-8")[:3000]


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if nbval_enabled(parent.config) and is_notebook_source(file_path):
        return MarkdownNotebook.from_parent(parent, path=file_path)
    return None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    """An .ipynb beside a chapter (a copy saved from Jupyter) is not a source: skip it."""
    if (nbval_enabled(config) and collection_path.suffix == ".ipynb"
            and collection_path.parent.name in NOTEBOOK_DIRS
            and collection_path.with_suffix(".md").exists()):
        return True
    return None


def pytest_report_header(config: pytest.Config) -> str | None:
    if not nbval_enabled(config):
        return None
    fast = os.environ.get("EBFLOW_FAST")
    mode = "EBFLOW_FAST unset" if fast is None else f"EBFLOW_FAST={fast}"
    kernel = ("current environment" if config.option.nbval_current_env
              else config.option.nbval_kernel_name or "the notebook's kernelspec")
    flag = "--nbval-lax" if config.option.nbval_lax else "--nbval"
    return (f"notebooks: nbval {flag}, kernel: {kernel}, {mode}, "
            f"notebook_timeout: {notebook_timeout(config)} s")


@dataclass
class CellSource:
    """Where a code cell's body lies in the Markdown file (1-based lines) and its expected
    stdout (the `% nbval-output` block after it, if any)."""

    first: int
    last: int
    expected_output: str | None


def code_cell_sources(text: str) -> list[CellSource]:
    """The code cells of a MyST notebook, in order, as jupytext reads them (top-level
    ``{code-cell}`` fences, through jupytext's own Markdown parser)."""
    from jupytext.myst import get_parser, read_fenced_cell

    lines = text.splitlines()
    cells = []
    nesting = 0
    for token in get_parser().parse(text + "\n"):
        nesting += token.nesting
        if nesting or token.type != "fence" or not token.info.startswith(CODE_DIRECTIVE):
            continue
        start, end = token.map  # 0-based: the opening fence, one past the closing fence
        closed = end - 1 > start and lines[end - 1].strip().startswith(token.markup)
        last = end - 1 if closed else end  # 1-based number of the body's last line
        _, body = read_fenced_cell(token, len(cells), "Code")
        first = last - len(body) + 1 if body else last + 1  # empty body: first > last
        cells.append(CellSource(first, last, _expected_output(lines, end)))
    return cells


def _expected_output(lines: list[str], index: int) -> str | None:
    """The text of a `% nbval-output` comment block at lines[index] (after blank lines)."""
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index >= len(lines) or lines[index].strip() != OUTPUT_MARKER:
        return None
    out = []
    for line in lines[index + 1:]:
        if not line.startswith("%"):
            break
        out.append(line[2:] if line.startswith("% ") else line[1:])
    return "\n".join(out) + "\n"


def write_ipynb(source: Path, target: Path, display_name: str) -> None:
    """Write a MyST notebook as an .ipynb for nbval: no outputs, except the expected stdout of
    the cells marked for output comparison; each code cell records its lines in the source."""
    import jupytext
    import nbformat

    text = source.read_text(encoding="utf-8")
    notebook = jupytext.reads(text, fmt="md:myst")
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    sources = code_cell_sources(text)
    if len(sources) != len(code_cells):
        raise ValueError(f"{display_name}: {len(sources)} code-cell fences, but jupytext "
                         f"reads {len(code_cells)} code cells")
    for number, (cell, where) in enumerate(zip(code_cells, sources, strict=True)):
        cell.metadata["nbval_markdown"] = {"file": display_name,
                                           "lines": [where.first, where.last]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbval warns about conflicting markers itself
            options = dict(find_metadata_tags(cell.metadata))
            options.update(find_comment_markers(cell.source))
        if not options.get("check"):
            continue
        if where.expected_output is None:
            raise ValueError(
                f"{display_name}:{where.first}: Cell {number} is marked for output "
                f"comparison, but no '{OUTPUT_MARKER}' comment block follows it")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                               text=where.expected_output)]
        cell.execution_count = number + 1  # nbval compares only cells that have been run
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(target))


class MarkdownNotebook(IPyNbFile):
    """nbval's notebook collector, fed from a MyST-Markdown file through jupytext.

    Its path is the .md file (for reports, and for the kernel's working directory, which nbval
    takes from it); nbval reads the cells from the .ipynb generated in the build folder.
    """

    failed_cell: str | None = None  # the name of the first cell that failed
    started: float | None = None
    deadline: float = float("inf")

    @property
    def display_name(self) -> str:
        try:
            return self.path.relative_to(self.config.rootpath).as_posix()
        except ValueError:
            return str(self.path)

    @property
    def ipynb_path(self) -> Path:
        try:
            relative = self.path.relative_to(self.config.rootpath)
        except ValueError:
            relative = Path(self.path.parent.name, self.path.name)
        return self.config.rootpath.joinpath(*BUILD_DIR, relative).with_suffix(".ipynb")

    def collect(self):
        source, ipynb = self.path, self.ipynb_path
        try:
            write_ipynb(source, ipynb, self.display_name)
        except Exception as error:  # unreadable notebook: one collection error, no traceback
            raise self.CollectError(str(error)) from error
        self.path = ipynb  # IPyNbFile.collect reads the notebook from self.fspath
        try:
            cells = list(super().collect())
        finally:
            self.path = source
        for cell in cells:
            cell.path = source  # reports name chapters/NN-name.md::Cell k
            cell.output_timeout = 30  # nbval waits 5 s for a cell's last message: too short
            # on a busy machine
        return cells

    def setup(self):
        self.started = time.perf_counter()
        self.deadline = self.started + float(notebook_timeout(self.config))
        super().setup()

    def teardown(self):
        try:
            super().teardown()
        finally:
            if self.started is not None:
                self.config.stash[_TIMINGS].append(
                    (self.display_name, time.perf_counter() - self.started, self.failed_cell))

    def describe_failure(self, cell, excinfo, longrepr) -> str:
        """nbval's failure report, after one line with the chapter, line and error."""
        first, last = cell.cell.metadata["nbval_markdown"]["lines"]
        error = excinfo.value
        traceback = _ANSI.sub("", getattr(error, "inner_traceback", None) or "")
        frame = _CELL_FRAME.search(traceback)
        line = first + int(frame.group(1)) - 1 if frame else first
        tail = [text.strip() for text in traceback.splitlines() if text.strip()]
        if self.timed_out and getattr(cell, "notebook_budget_binds", False):
            what = (f"the notebook ran past its notebook_timeout of "
                    f"{notebook_timeout(self.config)} s")
        elif self.timed_out:
            what = f"the cell ran past --nbval-cell-timeout ({error})"
        elif str(error) == "Cell outputs differ":
            what = f"the output differs from the '{OUTPUT_MARKER}' block after the cell"
        elif str(error) == "Cell execution caused an exception" and tail:
            what = tail[-1]  # e.g. "AssertionError: ..."
        else:
            what = str(error)
        span = f"line {first}" if first >= last else f"lines {first}-{last}"
        head = f"{self.display_name}:{line}: {what}  [{cell.name}, {span}]"
        body = str(longrepr)
        if not self.config.get_terminal_writer().hasmarkup:
            body = _ANSI.sub("", body)
        return f"{head}\n{body}"


def _notebook_of(item: pytest.Item) -> MarkdownNotebook | None:
    parent = item.parent
    return parent if isinstance(parent, MarkdownNotebook) else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    notebook = _notebook_of(item)
    if notebook is None or notebook.failed_cell is None:
        return
    pytest.skip(f"{notebook.failed_cell} of {notebook.display_name} failed")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Give the cell what is left of its notebook's time budget (nbval reads its cell timeout
    from the options when the cell starts)."""
    notebook = _notebook_of(item)
    if notebook is None:
        return (yield)
    option = item.config.option
    cell_timeout = option.nbval_cell_timeout
    left = notebook.deadline - time.perf_counter()
    item.notebook_budget_binds = left < cell_timeout
    if left <= 0:
        notebook.timed_out = True
        pytest.fail("no time left", pytrace=False)
    option.nbval_cell_timeout = min(cell_timeout, left)
    try:
        return (yield)
    finally:
        option.nbval_cell_timeout = cell_timeout


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    notebook = _notebook_of(item)
    if notebook is None or not report.failed:
        return report
    if notebook.failed_cell is None:
        notebook.failed_cell = item.name
    if call.when == "call" and isinstance(report.longrepr, str):
        report.longrepr = notebook.describe_failure(item, call.excinfo, report.longrepr)
    return report


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    timings = config.stash.get(_TIMINGS, [])
    if not timings:
        return
    terminalreporter.section("notebook run times")
    for name, seconds, failed_cell in sorted(timings):
        note = f"  ({failed_cell} failed)" if failed_cell else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}{note}")
    count = f"{len(timings)} notebook" + ("s" if len(timings) > 1 else "")
    terminalreporter.write_line(f"{sum(t for _, t, _ in timings):7.1f} s  in all ({count})")
