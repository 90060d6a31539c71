"""Checks of the book's PDF (``exports/ebflow-book.pdf``, made by ``make book``).

Read with poppler (``pdftotext``, ``pdfimages``, ``pdftoppm``; ``make browser-test`` installs
``poppler-utils`` when missing) and pypdf (the outline):

* the PDF has an outline (bookmarks) with one top-level entry per article of the PDF export
  in ``myst.yml``, in that order, each on its own, later page (every chapter starts a page),
  and that page starts with the chapter's title;
* every chapter has at least as many embedded images as its HTML page has figures;
* no raw ``$``-math, TeX command or MyST directive/role text leaks into the text (lines of
  the book's code cells, which may hold ``"$x_1$"`` labels, are allowed);
* the first page of each chapter is rendered to ``_build/pdf-pages/<NN>-<name>.png`` for a
  look (a CI artefact), and is not blank.

Marked ``browser`` (the checks of the built book): ``make browser-test`` runs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from book_toc import load_config  # noqa: E402

HTML_DIR = ROOT / "_build" / "html"
PAGES_DIR = ROOT / "_build" / "pdf-pages"
POPPLER = ("pdftotext", "pdfimages", "pdftoppm")

# Markup that must never reach the PDF's text.
LEAKS = {
    "dollar math": re.compile(r"\$\$|\$(?=\S)[^$\n]{1,160}?(?<=\S)\$"),
    "TeX command": re.compile(r"\\(?:frac|mathbb|mathcal|mathrm|operatorname|begin|end|left|"
                              r"right|sum|int|nabla|partial|log|exp|det|theta|sigma|cdot|"
                              r"quad|text|hat|tilde|top)\b"),
    "TeX delimiter": re.compile(r"\\[()\[\]]"),
    "code fence": re.compile(r"```|~~~"),
    "directive fence": re.compile(r"^\s*:{3,}"),
    "directive or role": re.compile(r"\{(?:code-cell|figure|math|eq|ref|numref|cite(?::[pt])?|"
                                    r"doc|term|note|tip|hint|warning|important|caution|"
                                    r"attention|danger|error|seealso|admonition|dropdown|"
                                    r"exercise|solution|prf:[a-z]+|margin|aside|glue(?::\w+)?|"
                                    r"table|list-table|csv-table|image|include|embed|"
                                    r"tab-set|tab-item|card|grid|div|raw)\}"),
    "directive option": re.compile(r"^\s*:(?:label|caption|class|name|tags|enumerated|"
                                   r"open|width|align|alt|nonumber|numbered|header-rows):\s"),
    "target": re.compile(r"^\s*\([\w:.-]+\)=\s*$"),
    "comment": re.compile(r"^\s*%\s"),
}


def front_matter(path: Path) -> dict:
    import yaml

    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    return yaml.safe_load(match.group(1)) if match else {}


def normalized(text: str) -> str:
    """Whitespace collapsed, case folded, words hyphenated at a line end joined again, and
    typographic quotes as straight ones (typst prints ' as a curly apostrophe)."""
    text = re.sub(r"\u00ad\s*", "", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split()).casefold()


def run_poppler(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def pdf() -> Path:
    config = load_config(ROOT / "myst.yml")
    exports = [e for e in config["project"].get("exports", []) if e.get("id") == "book-pdf"]
    assert exports, "myst.yml has no export with id book-pdf"
    path = ROOT / exports[0]["output"]
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist: run `make book` first")
    missing = [tool for tool in POPPLER if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"poppler tools missing: {missing}; `make browser-test` installs "
                    "poppler-utils (apt-get install poppler-utils)")
    return path


@pytest.fixture(scope="module")
def articles() -> list[dict]:
    """The PDF export's articles: file, title, and the HTML page built from it."""
    config = load_config(ROOT / "myst.yml")
    export = next(e for e in config["project"]["exports"] if e.get("id") == "book-pdf")
    result = []
    for file in export["articles"]:
        meta = front_matter(ROOT / file)
        result.append({"file": file, "title": meta.get("title") or Path(file).stem})
    return result


@pytest.fixture(scope="module")
def chapter_pages(pdf, articles) -> list[dict]:
    """Each article with the first and last PDF page (1-based) of its part of the book."""
    from pypdf import PdfReader

    reader = PdfReader(str(pdf))
    top = [(item.title, reader.get_destination_page_number(item) + 1)
           for item in reader.outline if not isinstance(item, list)]
    assert top, "the PDF has no outline (bookmarks)"
    by_title: dict[str, int] = {}
    for title, page in top:
        by_title.setdefault(normalized(title), page)
    missing = [a["title"] for a in articles if normalized(a["title"]) not in by_title]
    assert not missing, (f"no top-level bookmark for {missing}; the outline has "
                         f"{[title for title, _ in top]}")
    starts = sorted(set(page for _, page in top)) + [len(reader.pages) + 1]
    result = []
    for article in articles:
        first = by_title[normalized(article["title"])]
        following = [page for page in starts if page > first]
        result.append({**article, "first": first, "last": following[0] - 1,
                       "pages": len(reader.pages)})
    return result


def page_text(pdf: Path, first: int, last: int | None = None) -> str:
    return run_poppler("pdftotext", "-q", "-f", str(first), "-l", str(last or first),
                       "-layout", str(pdf), "-")


def test_every_chapter_starts_a_page_with_its_title(pdf, chapter_pages):
    firsts = [chapter["first"] for chapter in chapter_pages]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts), (
        "chapters do not start on distinct pages in reading order: "
        f"{[(c['title'], c['first']) for c in chapter_pages]}")
    for chapter in chapter_pages:
        lines = [line for line in page_text(pdf, chapter["first"]).splitlines() if line.strip()]
        head = normalized(" ".join(lines[:4]))
        assert normalized(chapter["title"]) in head, (
            f"page {chapter['first']} (bookmark of {chapter['file']}) does not start with "
            f"its title {chapter['title']!r}: {lines[:4]}")


def test_chapters_have_their_figures(pdf, chapter_pages):
    listing = run_poppler("pdfimages", "-list", str(pdf)).splitlines()[2:]
    image_pages = [int(row.split()[0]) for row in listing if row.split()[2:3] == ["image"]]
    assert image_pages, "the PDF has no images at all"
    if not (HTML_DIR / "index.html").is_file():
        pytest.skip("no HTML build to count each chapter's figures in")
    short = []
    for chapter in chapter_pages:
        html = HTML_DIR / f"{html_slug(chapter['file'])}.html"
        assert html.is_file(), f"no HTML page {html.name} for {chapter['file']}"
        main = html.read_text(encoding="utf-8").split('<main id="main"', 1)[-1]
        expected = main.count("<img ")
        found = sum(chapter["first"] <= page <= chapter["last"] for page in image_pages)
        if found < expected:
            short.append(f"{chapter['file']}: {found} images on pages {chapter['first']}-"
                         f"{chapter['last']}, its HTML page shows {expected}")
    assert not short, "figures missing from the PDF:\n" + "\n".join(short)


def html_slug(file: str) -> str:
    """mystmd's page slug of a source file (its name without a leading number)."""
    stem = Path(file).stem
    if file == "index.md":
        return "index"
    return re.sub(r"^\d+[-_.]", "", stem)


def code_text(articles: list[dict]) -> str:
    """Every line of the articles' fenced code (code cells and code blocks), normalised."""
    lines = []
    for article in articles:
        fence = None
        for line in (ROOT / article["file"]).read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if fence is None:
                match = re.match(r"^(`{3,}|~{3,})", stripped)
                if match:
                    fence = match.group(1)
                continue
            if stripped.startswith(fence) and not stripped[len(fence):].strip():
                fence = None
                continue
            lines.append(" ".join(stripped.split()))
    return "\n".join(lines)


def test_no_raw_math_or_myst_markup_in_the_text(pdf, articles):
    text = run_poppler("pdftotext", "-q", str(pdf), "-")
    code = code_text(articles)
    leaks = []
    for number, line in enumerate(text.splitlines(), start=1):
        for name, pattern in LEAKS.items():
            match = pattern.search(line)
            if not match:
                continue
            fragment = " ".join(line.split())
            if fragment and fragment in code:  # a line of a code cell, printed as code
                continue
            leaks.append(f"line {number}: {name}: {line.strip()[:120]!r}")
    assert not leaks, (f"{len(leaks)} lines of the PDF text hold raw markup:\n" +
                       "\n".join(leaks[:40]))


def test_leak_patterns_catch_raw_markup():
    """The patterns above find what a broken export leaves behind, and pass plain prose."""
    raw = ["the energy $E(x)$ of the flow", "$$", r"where \frac{a}{b} is", r"\(x\)",
           ":::{note}", "```{code-cell} ipython3", "see {eq}`eq-split`", ":label: fig-split",
           "(sec-intro)=", "{prf:theorem}", "% a comment", r"\begin{aligned}"]
    prose = ["the energy E(x) of the flow", "Figure 5.1: a flow", "costs 5 dollars",
             "ratio: 3:2", "log Z = -sum of log|det W|", "see Equation (5.2)"]
    for line in raw:
        assert any(p.search(line) for p in LEAKS.values()), f"not caught: {line!r}"
    for line in prose:
        assert not any(p.search(line) for p in LEAKS.values()), f"flagged: {line!r}"


def test_first_page_of_each_chapter_rendered(pdf, chapter_pages):
    from PIL import Image

    PAGES_DIR.mkdir(parents=True, exist_ok=True)
    for old in PAGES_DIR.glob("*.png"):
        old.unlink()
    for number, chapter in enumerate(chapter_pages, start=1):
        stem = PAGES_DIR / f"{number:02d}-{Path(chapter['file']).stem}"
        run_poppler("pdftoppm", "-q", "-f", str(chapter["first"]), "-l", str(chapter["first"]),
                    "-r", "60", "-png", "-singlefile", str(pdf), str(stem))
        png = stem.with_suffix(".png")
        assert png.is_file(), f"pdftoppm wrote no {png}"
        with Image.open(png) as image:
            gray = image.convert("L")
            dark = sum(gray.histogram()[:200])
            share = dark / (gray.width * gray.height)
        assert share > 0.002, f"page {chapter['first']} ({chapter['file']}) renders blank"
    assert len(list(PAGES_DIR.glob("*.png"))) == len(chapter_pages)
