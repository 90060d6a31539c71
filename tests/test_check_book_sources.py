"""scripts/check_book_sources.py: the TAB check, on small MyST files written here."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from check_book_sources import check_file  # noqa: E402

PROSE_WITH_TAB = "The weight is a $784\times 784$ matrix.\n"
CODE_WITH_TAB = "```{code-cell} ipython3\nif True:\n\tprint(1)\n```\n"
MATH_WITH_TAB = "```{math}\nW \\in \\mathbb{R}^{784\times 784}\n```\n"
COMMENT_WITH_TAB = "% nbval-output\n% a\tb\n"


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "page.md"
    path.write_text("Some prose.\n\n" + text, encoding="utf-8")
    errors, _ = check_file(path)
    return errors


def test_a_tab_in_prose_or_math_is_an_error_with_its_line_and_column(tmp_path) -> None:
    (error,) = _errors(tmp_path, PROSE_WITH_TAB)
    assert "page.md:3: a TAB character at column 21" in error
    (error,) = _errors(tmp_path, MATH_WITH_TAB)
    assert "page.md:4: a TAB character" in error


def test_a_tab_in_a_code_cell_or_a_comment_passes(tmp_path) -> None:
    assert _errors(tmp_path, CODE_WITH_TAB) == []
    assert _errors(tmp_path, COMMENT_WITH_TAB) == []
    assert _errors(tmp_path, PROSE_WITH_TAB.replace("\t", "\\t")) == []


def test_the_book_sources_hold_no_tab() -> None:
    sources = sorted((ROOT / "chapters").glob("*.md")) + sorted((ROOT / "exercises").glob("*.md"))
    found = [error for path in sources for error in check_file(path)[0] if "TAB" in error]
    assert found == []
