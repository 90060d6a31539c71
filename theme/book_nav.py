"""The book's navigation: pages in reading order, parts, chapter numbers, prev/next.

Chapter numbers are assigned here, from the toc in ``myst.yml`` (as mystmd reports it in
``config.json``): pages inside a numbered part get 1, 2, 3, ... across the whole book,
pages inside an appendix part get A, B, ..., and pages in an unnumbered part (the exercise
workbook) or outside any part get no number. Figures, equations, tables, proofs and
exercises are then shown as "<chapter>.<n>" on numbered pages (mystmd numbers them per page).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

UNNUMBERED_PARTS = ("workbook", "exercises")
APPENDIX_PARTS = ("appendix", "appendices")


@dataclass
class NavEntry:
    """One page of the book."""

    slug: str
    title: str
    short_title: str
    part: str | None
    number: str | None = None  # "3" or "A" or None
    generated: bool = False    # a page the theme makes (API reference, search), not in myst.yml

    @property
    def html_name(self) -> str:
        return f"{self.slug}.html"

    @property
    def label(self) -> str | None:
        """"Chapter 3" / "Appendix A" / None."""
        if self.number is None:
            return None
        return f"Appendix {self.number}" if self.number.isalpha() else f"Chapter {self.number}"

    @property
    def nav_title(self) -> str:
        return f"{self.number}. {self.short_title}" if self.number else self.short_title


@dataclass
class NavPart:
    """A titled group of pages in the sidebar (title None: top-level pages)."""

    title: str | None
    entries: list[NavEntry] = field(default_factory=list)


@dataclass
class Navigation:
    parts: list[NavPart]
    pages: list[NavEntry]

    def by_slug(self, slug: str) -> NavEntry | None:
        return next((entry for entry in self.pages if entry.slug == slug), None)

    def previous(self, entry: NavEntry) -> NavEntry | None:
        index = self.pages.index(entry)
        return self.pages[index - 1] if index > 0 else None

    def next(self, entry: NavEntry) -> NavEntry | None:
        index = self.pages.index(entry)
        return self.pages[index + 1] if index + 1 < len(self.pages) else None


def build_navigation(project: dict) -> Navigation:
    """Navigation from a project of mystmd's ``config.json``."""
    index_slug = project.get("index", "index")
    root_part = NavPart(title=None)
    parts = [root_part]
    index_entry = NavEntry(slug=index_slug, title=project.get("title", "Home"),
                           short_title="Welcome", part=None)
    root_part.entries.append(index_entry)
    pages = [index_entry]
    current = root_part
    chapter_count = 0
    appendix_count = 0
    for item in project.get("pages", []):
        if "slug" not in item:  # a part heading
            current = NavPart(title=item.get("title", ""))
            parts.append(current)
            continue
        entry = NavEntry(slug=item["slug"], title=item.get("title", item["slug"]),
                         short_title=item.get("short_title") or item.get("title", item["slug"]),
                         part=current.title)
        part_name = (current.title or "").strip().lower()
        if current.title is None or any(word in part_name for word in UNNUMBERED_PARTS):
            entry.number = None
        elif any(word in part_name for word in APPENDIX_PARTS):
            entry.number = string.ascii_uppercase[appendix_count]
            appendix_count += 1
        else:
            chapter_count += 1
            entry.number = str(chapter_count)
        current.entries.append(entry)
        pages.append(entry)
    return Navigation(parts=[part for part in parts if part.entries], pages=pages)
