"""scripts/check_book_sources.py: the TAB and exercise-list checks, on small MyST files."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from check_book_sources import check_exercise_list, check_file, workbook_labels  # noqa: E402

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


WORKBOOK = """---
label: ex-ch05
---

:::{exercise} ★ derive + implement: the energy of a dense flow
:label: ex-ch05-split

Derive it.
:::

::::{exercise} ★★★ explore: shifting the energy
:label: ex-ch05-shift

Explore it.
::::
"""
GOOD_LIST = """## Exercises

The workbook for this chapter, [](#ex-ch05), has exercises with automatic checks:

- **Derive** (★) the energy and $\\log Z$ of a dense flow, and implement them:
  [](#ex-ch05-split).
- **Explore** (★★★) shifting the energy by $c(\\theta)$, which leaves the score alone:
  [](#ex-ch05-shift).

## References
"""


def _exercise_report(tmp_path: Path, section: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a chapter 05 ending with ``section``, next to WORKBOOK."""
    (tmp_path / "exercises").mkdir(exist_ok=True)
    (tmp_path / "exercises" / "ch05-exercises.md").write_text(WORKBOOK, encoding="utf-8")
    (tmp_path / "chapters").mkdir(exist_ok=True)
    path = tmp_path / "chapters" / "05-a-flow.md"
    path.write_text("## Summary\n\n- A bullet of another section.\n\n" + section,
                    encoding="utf-8")
    return check_exercise_list(path)


def test_an_exercise_list_in_the_style_format_passes(tmp_path) -> None:
    assert _exercise_report(tmp_path, GOOD_LIST) == ([], [])
    labels = workbook_labels(tmp_path / "exercises")
    assert labels["ex-ch05-split"].stars == "★"
    assert labels["ex-ch05-split"].kinds == ("derive", "implement")
    assert labels["ex-ch05-shift"].kinds == ("explore",)


def test_a_bullet_in_another_format_is_an_error_with_its_line(tmp_path) -> None:
    old = GOOD_LIST.replace("- **Derive** (★) the energy", "- ★ derive: the energy")
    (error,), _ = _exercise_report(tmp_path, old)
    assert "05-a-flow.md:9: exercise bullet '- ★ derive: the energy" in error
    assert "does not follow STYLE.md's format" in error
    no_link = GOOD_LIST.replace(":\n  [](#ex-ch05-shift).", ".")
    (error,), (warning,) = _exercise_report(tmp_path, no_link)
    assert "05-a-flow.md:11: exercise bullet" in error
    assert "does not list the workbook's ex-ch05-shift" in warning


def test_a_label_that_no_workbook_defines_is_an_error(tmp_path) -> None:
    unknown = GOOD_LIST.replace("(#ex-ch05-shift)", "(#ex-ch05-shfit)")
    (error,), (warning,) = _exercise_report(tmp_path, unknown)
    assert "05-a-flow.md:11: links ex-ch05-shfit, a label that no workbook" in error
    assert "ex-ch05-shift" in warning
    other = GOOD_LIST.replace("(#ex-ch05-shift)", "(#ex-ch06-shift)")
    errors, _ = _exercise_report(tmp_path, other)
    assert any("another chapter's workbook" in error for error in errors)


def test_stars_kind_and_the_workbook_link_must_match_the_workbook(tmp_path) -> None:
    stars = GOOD_LIST.replace("**Derive** (★)", "**Derive** (★★)")
    (error,), _ = _exercise_report(tmp_path, stars)
    assert "ex-ch05-split has ★★ here but ★ in ch05-exercises.md" in error
    kind = GOOD_LIST.replace("**Explore** (★★★)", "**Implement** (★★★)")
    (error,), _ = _exercise_report(tmp_path, kind)
    assert "the title of ex-ch05-shift in ch05-exercises.md says 'explore', not **Implement**" \
        in error
    verb = GOOD_LIST.replace("**Derive** (★)", "**Prove** (★)")
    errors, _ = _exercise_report(tmp_path, verb)
    assert any("starts with **Prove**" in error for error in errors)
    unlinked = GOOD_LIST.replace("[](#ex-ch05)", "the workbook")
    (error,), _ = _exercise_report(tmp_path, unlinked)
    assert "no sentence linking the workbook [](#ex-ch05)" in error


def test_the_book_chapters_follow_the_exercise_list_format() -> None:
    chapters = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
    assert len(chapters) >= 11
    assert [error for path in chapters for error in check_exercise_list(path)[0]] == []
