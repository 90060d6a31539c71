"""Render the mystmd site content of the EBFlow book to static, offline HTML.

mystmd (PyPI ``mystmd`` 1.11) runs this script as the ``build.render`` command of the local
site template (``theme/template.yml``), with the working directory set to ``theme/`` and two
environment variables:

* ``CONTENT_CDN``: the URL of mystmd's content server, which serves ``/config.json``,
  ``/content/<slug>.json`` (each page's MyST AST, with KaTeX HTML already in the math nodes
  and executed notebook outputs) and the public assets (``/<hash>.png``, ...);
* ``BUILD_DIRECTORY``: where the HTML goes (``_build/html``).

For quick iterations it also runs on a finished ``myst build --site`` without a server:
``python theme/render_site.py --site-dir _build/site --out _build/html``.

Optional: ``KATEX_DIST`` (default ``<repo>/node_modules/katex/dist``) for the KaTeX CSS and
fonts, ``MINISEARCH_DIST`` (default ``<repo>/node_modules/minisearch/dist``) for the search
library; ``EBFLOW_BOOK_PDF`` (a file name) adds a "PDF" link to the sidebar, the build script
copies the PDF there.

Besides the book's pages it writes

* ``api-reference.html``, the reference of ``ebflow_lite`` (``api_reference.py``, with pdoc);
* ``search.html`` and ``_static/search-documents.js``: full-text search with minisearch (npm),
  one document per section of every page, searched in the browser (also from ``file://``);
* ``_downloads/<notebook>.ipynb`` (jupytext, no outputs) and ``.md`` for every notebook page.

Every AST node type that mystmd 1.11 emits for this book has a rendering in ``ast_html.py``;
an unknown type renders its children and is reported on stderr, so no text is dropped
silently. The page layout and the larger components are jinja2 templates in ``templates/``;
code is highlighted with pygments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from api_reference import ApiReference
from ast_html import PageRenderer, search_sections, warn
from book_nav import NavEntry, NavPart, build_navigation
from content_source import ContentSource
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from pygments.formatters import HtmlFormatter

THEME_DIR = Path(__file__).resolve().parent
REPO_DIR = THEME_DIR.parent
API_SLUG = "api-reference"
LIGHT_CODE_STYLE, DARK_CODE_STYLE = "friendly", "github-dark"
CODE_SELECTORS = [".highlight", ".codehilite", ".api-signature"]


def make_environment() -> Environment:
    """The jinja2 environment of the theme's templates (HTML autoescaping on)."""
    return Environment(
        loader=FileSystemLoader(THEME_DIR / "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def pygments_css() -> str:
    """Code colours: a light style, and a dark one when the reader's system prefers dark."""
    light = HtmlFormatter(style=LIGHT_CODE_STYLE).get_style_defs(CODE_SELECTORS)
    dark = HtmlFormatter(style=DARK_CODE_STYLE).get_style_defs(CODE_SELECTORS)
    return f"{light}\n@media (prefers-color-scheme: dark) {{\n{dark}\n}}\n"


def copy_static(out_dir: Path, katex_dist: Path, minisearch_dist: Path) -> None:
    """Copy the theme's CSS and scripts, the pygments CSS, KaTeX's CSS and fonts and the
    minisearch library into ``out_dir/_static``."""
    static = out_dir / "_static"
    static.mkdir(parents=True, exist_ok=True)
    for name in ("book.css", "book.js", "search.js"):
        shutil.copy2(THEME_DIR / "static" / name, static / name)
    (static / "pygments.css").write_text(pygments_css(), encoding="utf-8")
    minisearch_js = minisearch_dist / "umd" / "index.js"
    if not minisearch_js.is_file():
        raise SystemExit(
            f"render_site: minisearch not found at {minisearch_js}; run `npm install` in the "
            "repository root (package.json pins minisearch) or set MINISEARCH_DIST")
    minisearch_out = static / "minisearch"
    minisearch_out.mkdir(exist_ok=True)
    for name in ("index.js", "index.js.map"):  # the map: its sourceMappingURL resolves
        if (minisearch_js.parent / name).is_file():
            shutil.copy2(minisearch_js.parent / name, minisearch_out / name)
    license_file = minisearch_dist.parent / "LICENSE.txt"
    if license_file.is_file():
        shutil.copy2(license_file, minisearch_out / "LICENSE.txt")
    katex_css = katex_dist / "katex.min.css"
    if not katex_css.is_file():
        raise SystemExit(
            f"render_site: KaTeX CSS not found at {katex_css}; run `npm install` in the "
            "repository root (package.json pins katex) or set KATEX_DIST")
    katex_out = static / "katex"
    katex_out.mkdir(exist_ok=True)
    shutil.copy2(katex_css, katex_out / "katex.min.css")
    shutil.copytree(katex_dist / "fonts", katex_out / "fonts", dirs_exist_ok=True)


def notebook_downloads(page: dict, out_dir: Path) -> list[dict]:
    """The page's notebook as ``.ipynb`` (converted by jupytext, no outputs) and as its
    MyST-Markdown source, written to ``out_dir/_downloads``; [] for a page that is no
    notebook. Each item: ``href``, ``name``, ``label``."""
    location = page.get("location") or ""
    source = REPO_DIR / location.lstrip("/")
    if "kernelspec" not in page["frontmatter"] or source.suffix != ".md" or \
            not source.is_file():
        return []
    import jupytext
    import nbformat

    notebook = jupytext.read(source)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    title = page["frontmatter"].get("title")
    first = notebook.cells[0].source.lstrip() if notebook.cells else ""
    if title and not first.startswith("# "):  # the title lives in the front matter only
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}"))
    nbformat.validate(notebook)
    downloads = out_dir / "_downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    ipynb = downloads / f"{source.stem}.ipynb"
    nbformat.write(notebook, ipynb)
    shutil.copy2(source, downloads / source.name)
    return [{"href": f"_downloads/{ipynb.name}", "name": ipynb.name, "label": "Notebook (.ipynb)"},
            {"href": f"_downloads/{source.name}", "name": source.name,
             "label": "MyST Markdown (.md)"}]


def write_search_documents(documents: list[dict], out_dir: Path) -> Path:
    """``_static/search-documents.js``: the documents search.js indexes, as a script (a
    ``file://`` page cannot fetch JSON)."""
    for number, document in enumerate(documents):
        document["id"] = number
    target = out_dir / "_static" / "search-documents.js"
    payload = json.dumps(documents, ensure_ascii=False, separators=(",", ":"))
    target.write_text("window.EBFLOW_SEARCH_DOCUMENTS = " + payload.replace("</", "<\\/") +
                      ";\n", encoding="utf-8")
    return target


def render_site(source: ContentSource, out_dir: Path, katex_dist: Path,
                minisearch_dist: Path | None = None) -> list[Path]:
    """Write every page of the site into ``out_dir``; return the written HTML files."""
    config = source.json("/config.json")
    project = config["projects"][0]
    nav = build_navigation(project)
    api = ApiReference()
    api_entry = NavEntry(slug=API_SLUG, title="API reference: ebflow_lite",
                         short_title="API reference", part="Reference", generated=True)
    nav.parts.append(NavPart(title="Reference", entries=[api_entry]))
    nav.pages.append(api_entry)
    env = make_environment()
    page_template = env.get_template("page.html.j2")
    components = env.get_template("components.html.j2").module
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_static(out_dir, katex_dist,
                minisearch_dist or REPO_DIR / "node_modules" / "minisearch" / "dist")
    common = {"project": project, "nav": nav,
              "pdf_name": os.environ.get("EBFLOW_BOOK_PDF") or None}

    written = []
    documents: list[dict] = []
    for entry in nav.pages:
        if entry is api_entry:
            body = Markup(env.get_template("api.html.j2").render(api=api))
            html = page_template.render(
                **common, entry=entry, page={"frontmatter": {}}, body=body, chapter_label=None,
                title=entry.title, footnotes="", bibliography="", downloads=[],
                page_toc=api.headings(), scripts=[], prev_entry=nav.previous(entry),
                next_entry=None)
            documents.extend(api.search_documents(entry.html_name, entry.title))
        else:
            page = source.json(f"/content/{entry.slug}.json")
            renderer = PageRenderer(page=page, entry=entry, nav=nav, source=source,
                                    out_dir=out_dir, components=components)
            body = renderer.render_page()
            title = page["frontmatter"].get("title") or entry.title
            html = page_template.render(
                **common, entry=entry, page=page, body=body, chapter_label=entry.label,
                title=title, footnotes=renderer.render_footnotes(),
                bibliography=renderer.render_bibliography(),
                downloads=notebook_downloads(page, out_dir), page_toc=renderer.page_toc(),
                scripts=[], prev_entry=nav.previous(entry), next_entry=nav.next(entry))
            page_title = f"{entry.number}. {title}" if entry.number else title
            for section in search_sections(renderer, page_title):
                url = entry.html_name + (f"#{section['id']}" if section["id"] else "")
                documents.append({"url": url, "page": page_title, "section": section["title"],
                                  "text": section["text"], "code": section["code"]})
            if renderer.images_without_caption:
                warn(f"{renderer.images_without_caption} figure(s) on {entry.slug} have no "
                     "caption: their alt text names the section")
        target = out_dir / entry.html_name
        target.write_text(html, encoding="utf-8")
        written.append(target)

    write_search_documents(documents, out_dir)
    search_entry = NavEntry(slug="search", title="Search", short_title="Search", part=None,
                            generated=True)
    html = page_template.render(
        **common, entry=search_entry, page={"frontmatter": {}},
        body=Markup(env.get_template("search.html.j2").render()), chapter_label=None,
        title="Search",
        footnotes="", bibliography="", downloads=[], page_toc=[],
        scripts=["_static/minisearch/index.js", "_static/search-documents.js",
                 "_static/search.js"], prev_entry=None, next_entry=None)
    (out_dir / search_entry.html_name).write_text(html, encoding="utf-8")
    written.append(out_dir / search_entry.html_name)
    if renderer_warnings := PageRenderer.unknown_types:
        warn(f"node types rendered generically: {sorted(renderer_warnings)}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-dir", type=Path,
                        help="render from a `myst build --site` folder instead of CONTENT_CDN")
    parser.add_argument("--out", type=Path, help="output folder (default: BUILD_DIRECTORY)")
    args = parser.parse_args(argv)

    if args.site_dir is not None:
        source = ContentSource.from_directory(args.site_dir)
    elif os.environ.get("CONTENT_CDN"):
        source = ContentSource.from_url(os.environ["CONTENT_CDN"])
    else:
        parser.error("set CONTENT_CDN (mystmd does) or pass --site-dir")
    out = args.out or (Path(os.environ["BUILD_DIRECTORY"]) if "BUILD_DIRECTORY" in os.environ
                       else None)
    if out is None:
        parser.error("set BUILD_DIRECTORY (mystmd does) or pass --out")
    katex_dist = Path(os.environ.get("KATEX_DIST", REPO_DIR / "node_modules" / "katex" / "dist"))
    minisearch_dist = Path(os.environ.get("MINISEARCH_DIST",
                                          REPO_DIR / "node_modules" / "minisearch" / "dist"))
    written = render_site(source, out.resolve(), katex_dist, minisearch_dist)
    print(f"render_site: wrote {len(written)} pages to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
