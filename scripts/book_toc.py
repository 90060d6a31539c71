"""Read the book's table of contents from myst.yml (shared by the build checks and tests)."""

from __future__ import annotations

from pathlib import Path

import yaml


def load_config(config_path: str | Path = "myst.yml") -> dict:
    """The parsed myst.yml."""
    return yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))


def toc_files(entries: list[dict]) -> list[str]:
    """Files of a mystmd toc, depth first, in reading order."""
    files: list[str] = []
    for entry in entries:
        if "file" in entry:
            files.append(entry["file"])
        files.extend(toc_files(entry.get("children", [])))
    return files
