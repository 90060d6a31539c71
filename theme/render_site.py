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
fonts; ``EBFLOW_BOOK_PDF`` (a file name) adds a "PDF" link to the sidebar, the build script
copies the PDF there.

Every AST node type that mystmd 1.11 emits for this book has a rendering in ``ast_html.py``;
an unknown type renders its children and is reported on stderr, so no text is dropped
silently. The page layout and the larger components are jinja2 templates in ``templates/``;
code is highlighted with pygments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ast_html import PageRenderer, warn
from book_nav import build_navigation
from content_source import ContentSource
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pygments.formatters import HtmlFormatter

THEME_DIR = Path(__file__).resolve().parent
REPO_DIR = THEME_DIR.parent


def make_environment() -> Environment:
    """The jinja2 environment of the theme's templates (HTML autoescaping on)."""
    return Environment(
        loader=FileSystemLoader(THEME_DIR / "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def copy_static(out_dir: Path, katex_dist: Path) -> None:
    """Copy the theme's CSS, the pygments CSS and KaTeX's CSS and fonts into ``out_dir``."""
    static = out_dir / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copy2(THEME_DIR / "static" / "book.css", static / "book.css")
    pygments_css = HtmlFormatter(style="friendly").get_style_defs(".highlight")
    (static / "pygments.css").write_text(pygments_css, encoding="utf-8")
    katex_css = katex_dist / "katex.min.css"
    if not katex_css.is_file():
        raise SystemExit(
            f"render_site: KaTeX CSS not found at {katex_css}; run `npm install` in the "
            "repository root (package.json pins katex) or set KATEX_DIST")
    katex_out = static / "katex"
    katex_out.mkdir(exist_ok=True)
    shutil.copy2(katex_css, katex_out / "katex.min.css")
    shutil.copytree(katex_dist / "fonts", katex_out / "fonts", dirs_exist_ok=True)


def render_site(source: ContentSource, out_dir: Path, katex_dist: Path) -> list[Path]:
    """Write every page of the site into ``out_dir``; return the written HTML files."""
    config = source.json("/config.json")
    project = config["projects"][0]
    nav = build_navigation(project)
    env = make_environment()
    page_template = env.get_template("page.html.j2")
    components = env.get_template("components.html.j2").module
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_static(out_dir, katex_dist)
    pdf_name = os.environ.get("EBFLOW_BOOK_PDF") or None

    written = []
    for entry in nav.pages:
        page = source.json(f"/content/{entry.slug}.json")
        renderer = PageRenderer(page=page, entry=entry, nav=nav, source=source,
                                out_dir=out_dir, components=components)
        body = renderer.render_page()
        html = page_template.render(
            project=project,
            nav=nav,
            entry=entry,
            page=page,
            body=body,
            chapter_label=entry.label,
            title=page["frontmatter"].get("title") or entry.title,
            footnotes=renderer.render_footnotes(),
            bibliography=renderer.render_bibliography(),
            source_download=renderer.source_download(),
            prev_entry=nav.previous(entry),
            next_entry=nav.next(entry),
            pdf_name=pdf_name,
        )
        target = out_dir / entry.html_name
        target.write_text(html, encoding="utf-8")
        written.append(target)
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
    written = render_site(source, out.resolve(), katex_dist)
    print(f"render_site: wrote {len(written)} pages to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
