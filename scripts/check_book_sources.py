"""Find MyST source patterns that break the book's rendering, with file and line.

mystmd 1.11 reports these late and without a location (or not at all), so the build
script runs this check first:

* errors
  - ``\\big\\lVert`` (any ``\\big``/``\\Big``/``\\bigg``... size command before ``\\lVert``,
    ``\\rVert``, ``\\langle``, ...): mystmd's LaTeX-to-typst converter stops the whole PDF
    with "Undefined left bracket: lVert". Use ``\\lVert``, ``\\left\\lVert ... \\right\\rVert``
    or ``\\big\\|``.
  - inline math ``$...$`` whose continuation line starts with ``- ``, ``+ `` or ``* ``:
    Markdown reads that line as a list item, so the math is broken and shows as raw
    ``$...$`` text. Put the operator at the end of the previous line.
  - a TAB character in a Markdown line outside code cells (math blocks included; MyST
    ``%`` comments, such as frozen cell outputs, are exempt): a script that wrote
    ``"$784\\times 784$"`` without a raw string once turned the ``\\t`` of ``\\times`` into a
    TAB, which breaks the math and shows nothing in the source at a glance.
  - STYLE.md's skeleton, in numbered chapters (``chapters/NN-*.md``): a figure cell (a code
    cell labelled ``fig-...``) without a caption, a figure cell followed directly by another
    cell or a heading (no prose telling the reader what to see), and a ``## Prerequisites``
    section without the notation link ``[](#app-notation)``.
  - STYLE.md's exercise list, in every numbered chapter: the ``## Exercises`` section has a
    sentence linking the workbook ``[](#ex-chNN)`` and one bullet per exercise,
    ``- **Derive** (★) what to do: [](#ex-chNN-short-name).``, whose label is an exercise
    ``:label:`` of ``exercises/chNN-exercises.md`` and whose stars and kind (derive,
    implement, explore) are those of that exercise's title.
* warnings
  - ``{dropdown}`` directives and ``{admonition}`` without a kind are left out of the PDF
    (mystmd's typst export drops them); ``:::{note}``/``:::{tip}`` with ``:class: dropdown``
    is collapsed in HTML and printed in the PDF.

Usage: python scripts/check_book_sources.py [files...]   (default: the toc of myst.yml)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from book_toc import load_config, toc_files

SIZED_DELIMITER = re.compile(
    r"\\(?:big|Big|bigg|Bigg)[lrm]?\s*\\(?!lfloor|rfloor|lceil|rceil)([a-zA-Z]+)")
LIST_MARKER = re.compile(r"^[-+*] ")
OPENING_FENCE = re.compile(r"^(`{3,}|~{3,})")
CLOSING_FENCE = re.compile(r"^(`{3,}|~{3,})\s*$")
DOLLAR = re.compile(r"(?<!\\)\$")
DROPDOWN = re.compile(r"^:{3,}\s*\{(dropdown|admonition)\}")



def check_file(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one MyST file."""
    errors: list[str] = []
    warnings: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    fence: str | None = None  # "code" or "math" inside a ``` block
    in_dollar_math = False
    open_inline = False
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        stripped = line.strip()
        if fence is not None and CLOSING_FENCE.match(stripped):
            fence = None
            open_inline = False
            continue
        if fence is None and OPENING_FENCE.match(stripped):
            fence = "math" if "{math}" in stripped else "code"
            open_inline = False
            continue
        in_code = fence == "code"
        in_display_math = fence == "math" or in_dollar_math
        if match := SIZED_DELIMITER.search(line):
            if not in_code or in_display_math:
                errors.append(f"{where}: '{match.group(0)}' stops mystmd's PDF export "
                              "(Undefined left bracket); drop the size command or use "
                              "\\left...\\right")
        if in_code and not in_display_math:
            continue
        if "\t" in line and not stripped.startswith("%"):
            column = line.index("\t") + 1
            errors.append(f"{where}: a TAB character at column {column}; if a "
                          "script wrote this line, it may have read a backslash-t (as in "
                          "\\times or \\text) as a TAB: restore the backslash sequence, or "
                          "use spaces")
        if DROPDOWN.match(stripped):
            warnings.append(f"{where}: {{{DROPDOWN.match(stripped).group(1)}}} is left out "
                            "of the PDF; use :::{note} Title with :class: dropdown")
        if stripped.startswith("$$"):
            if stripped.count("$$") == 1:
                in_dollar_math = not in_dollar_math
            open_inline = False
            continue
        if in_display_math:
            continue
        if open_inline and LIST_MARKER.match(line):
            errors.append(f"{where}: this line continues inline math from line {number - 1} "
                          "but starts with a list marker, which breaks the math; move the "
                          f"'{line[0]}' to the end of the previous line")
        if not stripped:
            open_inline = False
            continue
        text = re.sub(r"`[^`]*`", "", line)  # inline code may hold dollars
        if len(DOLLAR.findall(text.replace("$$", ""))) % 2 == 1:
            open_inline = not open_inline
    return errors, warnings


CHAPTER = re.compile(r"^\d\d(-\d+)?-.+\.md$")
#: Chapters whose skeleton problems are errors; the others get warnings until they comply.
SKELETON_ENFORCED = ("01-", "02-", "03-", "04-")
CODE_CELL = re.compile(r"^```\{code-cell\}")


def check_skeleton(path: Path) -> list[str]:
    """STYLE.md's figure and prerequisite rules for one numbered chapter."""
    if not CHAPTER.match(path.name):
        return []
    errors: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        if not CODE_CELL.match(lines[number].strip()):
            number += 1
            continue
        start = number
        end = start + 1
        while end < len(lines) and not CLOSING_FENCE.match(lines[end].strip()):
            end += 1
        options: list[str] = []
        body = lines[start + 1:end]
        if body and body[0].strip() == "---":
            closing = next((i for i in range(1, len(body)) if body[i].strip() == "---"), 0)
            options = body[1:closing]
        else:
            options = [line for line in body if line.startswith(":")]
        label = next((line for line in options if re.search(r"label:\s*fig-", line)), None)
        if label is not None:
            where = f"{path}:{start + 1}"
            if not any(re.search(r"caption:", line) for line in options):
                errors.append(f"{where}: figure cell ({label.split(':', 2)[-1].strip()}) "
                              "has no caption")
            following = next((line.strip() for line in lines[end + 1:] if line.strip()), "")
            if following.startswith(("```", "#", ":::{exercise}")) or not following:
                errors.append(f"{where}: figure cell is followed by "
                              f"'{following[:30]}' instead of prose about the figure")
        number = end + 1
    text = "\n".join(lines)
    prerequisites = re.search(r"^## Prerequisites\n(.*?)(?=^## |^```)", text, re.M | re.S)
    if prerequisites and "[](#app-notation)" not in prerequisites.group(1):
        errors.append(f"{path}: the Prerequisites section does not link [](#app-notation)")
    return errors


EXERCISE_TITLE = re.compile(r"^:{3,}\s*\{exercise\}\s*(★+)\s+([a-z]+(?:\s*\+\s*[a-z]+)*)\s*:")
LABEL_OPTION = re.compile(r"^:label:\s*(\S+)")
KINDS = ("Derive", "Implement", "Explore")
EXERCISE_BULLET = re.compile(
    r"^- \*\*(?P<kind>[A-Za-z]+)\*\* \((?P<stars>★{1,3})\) \S.*: "
    r"\[\]\(#(?P<label>ex-ch(?P<chapter>\d\d)-[a-z0-9-]+)\)\.$")
BULLET_START = re.compile(r"^(?:[-+*]|\d+[.)])\s")
BULLET_FORMAT = "- **Derive** (★) what to do: [](#ex-chNN-short-name)."


@dataclass(frozen=True)
class WorkbookExercise:
    """An exercise of a workbook: its stars and kinds, as its ``{exercise}`` title gives them."""

    path: str
    stars: str
    kinds: tuple[str, ...]


def workbook_labels(folder: Path) -> dict[str, WorkbookExercise | None]:
    """Every ``:label:`` of the workbooks ``folder/*.md``: an exercise, or None for a label
    that does not follow an ``{exercise}`` title (an equation, a figure)."""
    labels: dict[str, WorkbookExercise | None] = {}
    for path in sorted(folder.glob("*.md")):
        title: re.Match[str] | None = None
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if label := LABEL_OPTION.match(stripped):
                labels[label.group(1)] = None if title is None else WorkbookExercise(
                    path.name, title.group(1),
                    tuple(kind.strip() for kind in title.group(2).split("+")))
            if not stripped.startswith(":"):
                title = None  # the options block of a directive has ended
            elif (match := EXERCISE_TITLE.match(stripped)) is not None:
                title = match
    return labels


def _section_bullets(lines: list[str], start: int) -> tuple[list[str], list[tuple[int, str]]]:
    """(prose lines, [(line number, joined bullet text)]) of the section after ``start``."""
    prose: list[str] = []
    bullets: list[tuple[int, str]] = []
    for number in range(start + 1, len(lines)):
        line = lines[number]
        if line.startswith("#") or line.lstrip().startswith(("```", "~~~")):
            break
        if BULLET_START.match(line):
            bullets.append((number + 1, line.strip()))
        elif line.strip() and line.startswith((" ", "\t")) and bullets:
            bullets[-1] = (bullets[-1][0], f"{bullets[-1][1]} {line.strip()}")
        elif line.strip():
            prose.append(line)
    return prose, bullets


def check_exercise_list(path: Path,
                        labels: dict[str, WorkbookExercise | None] | None = None,
                        ) -> tuple[list[str], list[str]]:
    """(errors, warnings) of STYLE.md's exercise list for one numbered chapter.

    Args:
        path: The chapter, ``chapters/NN-name.md``.
        labels: The workbooks' labels (:func:`workbook_labels`); by default those of the
            ``exercises`` folder next to the chapter's folder.
    """
    if not CHAPTER.match(path.name):
        return [], []
    if labels is None:
        labels = workbook_labels(path.resolve().parent.parent / "exercises")
    chapter = path.name[:2]
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Exercises"), None)
    if start is None:
        return [f"{path}: no '## Exercises' section (STYLE.md's chapter skeleton)"], []
    errors: list[str] = []
    prose, bullets = _section_bullets(lines, start)
    if not any(f"[](#ex-ch{chapter})" in line for line in prose):
        errors.append(f"{path}:{start + 1}: the Exercises section has no sentence linking "
                      f"the workbook [](#ex-ch{chapter})")
    if not bullets:
        errors.append(f"{path}:{start + 1}: the Exercises section lists no exercise")
    listed: set[str] = set()
    for number, text in bullets:
        where = f"{path}:{number}"
        match = EXERCISE_BULLET.match(text)
        if match is None:
            errors.append(f"{where}: exercise bullet '{text[:50]}' does not follow STYLE.md's "
                          f"format '{BULLET_FORMAT}'")
            continue
        kind, stars, label = match.group("kind", "stars", "label")
        if kind not in KINDS:
            errors.append(f"{where}: exercise bullet starts with **{kind}**, not one of "
                          + ", ".join(f"**{known}**" for known in KINDS))
        if match.group("chapter") != chapter:
            errors.append(f"{where}: links {label}, an exercise of another chapter's workbook")
        if label in listed:
            errors.append(f"{where}: links {label} twice")
        listed.add(label)
        if label not in labels:
            errors.append(f"{where}: links {label}, a label that no workbook "
                          "(exercises/*.md) defines")
            continue
        exercise = labels[label]
        if exercise is None:
            errors.append(f"{where}: links {label}, a workbook label that is not an exercise")
            continue
        if stars != exercise.stars:
            errors.append(f"{where}: {label} has {stars} here but {exercise.stars} in "
                          f"{exercise.path}")
        if kind.lower() not in exercise.kinds:
            errors.append(f"{where}: the title of {label} in {exercise.path} says "
                          f"'{' + '.join(exercise.kinds)}', not **{kind}**")
    missing = sorted(label for label, exercise in labels.items() if exercise is not None
                     and label.startswith(f"ex-ch{chapter}-") and label not in listed)
    warnings = [f"{path}:{start + 1}: the Exercises section does not list the workbook's "
                f"{label}" for label in missing]
    return errors, warnings


def main(argv: list[str]) -> int:
    if argv:
        files = [Path(name) for name in argv]
    else:
        config = load_config("myst.yml")
        files = [Path(name) for name in toc_files(config["project"]["toc"])]
    all_errors: list[str] = []
    for path in files:
        if not path.is_file():
            continue  # check_toc.py reports missing files
        errors, warnings = check_file(path)
        skeleton = check_skeleton(path)
        if path.name.startswith(SKELETON_ENFORCED):
            errors += skeleton
        else:
            warnings += skeleton
        exercise_errors, exercise_warnings = check_exercise_list(path)
        errors += exercise_errors
        warnings += exercise_warnings
        all_errors += errors
        for warning in warnings:
            print(f"check_book_sources: warning: {warning}", file=sys.stderr)
    for error in all_errors:
        print(f"check_book_sources: error: {error}", file=sys.stderr)
    if not all_errors:
        print(f"check_book_sources: {len(files)} files, no blocking problems")
    return 1 if all_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
