"""Check that myst.yml's table of contents and its PDF article list agree.

A chapter must be listed twice in myst.yml: under ``project.toc`` (HTML site) and under the
``book-pdf`` export's ``articles`` (PDF). This script fails, naming the problem, when a listed
file does not exist or when the two lists differ (files or order). It also warns about
notebooks in chapters/ and exercises/ that the toc leaves out.

Usage: python scripts/check_toc.py [path/to/myst.yml]
"""

from __future__ import annotations

import sys
from pathlib import Path

from book_toc import load_config, toc_files


def main(config_path: str = "myst.yml") -> int:
    config_file = Path(config_path)
    root = config_file.parent
    config = load_config(config_file)
    project = config["project"]
    toc = toc_files(project["toc"])
    problems = [f"listed in the toc but missing: {name}" for name in toc
                if not (root / name).is_file()]
    exports = {export.get("id"): export for export in project.get("exports", [])}
    pdf = exports.get("book-pdf")
    if pdf is None:
        problems.append("no export with id 'book-pdf' in myst.yml")
    elif pdf.get("articles", []) != toc:
        only_toc = [name for name in toc if name not in pdf.get("articles", [])]
        only_pdf = [name for name in pdf.get("articles", []) if name not in toc]
        problems.append(
            "the book-pdf export's `articles` must list the toc files in the same order"
            f" (only in toc: {only_toc}; only in articles: {only_pdf})")
    for folder in ("chapters", "exercises"):
        for path in sorted((root / folder).glob("*.md")):
            name = path.relative_to(root).as_posix()
            if name not in toc:
                print(f"check_toc: warning: {name} is not in the toc of {config_file}",
                      file=sys.stderr)
    for problem in problems:
        print(f"check_toc: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_toc: {len(toc)} toc files, all present, PDF article list matches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
