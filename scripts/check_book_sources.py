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
* warnings
  - ``{dropdown}`` directives and ``{admonition}`` without a kind are left out of the PDF
    (mystmd's typst export drops them); ``:::{note}``/``:::{tip}`` with ``:class: dropdown``
    is collapsed in HTML and printed in the PDF.

Usage: python scripts/check_book_sources.py [files...]   (default: the toc of myst.yml)
"""

from __future__ import annotations

import re
import sys
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
