"""MyST AST (mdast, as mystmd 1.11 writes it to ``content/<slug>.json``) to HTML.

``PageRenderer.render`` dispatches on the node type to a ``node_<type>`` method. Inline
nodes return a small escaped element; structured blocks (figures, admonitions, proofs,
exercises, notebook cells and outputs, ...) are jinja2 macros in
``templates/components.html.j2``. All text is escaped with markupsafe; only HTML that mystmd
produced (KaTeX math, formatted citations) or that a notebook cell displayed as ``text/html``
is inserted as is.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path, PurePosixPath

from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Cross-reference kinds whose numbers are per page and get the chapter number in front.
CHAPTER_SCOPED_KINDS = ("equation", "subequation", "figure", "subfigure", "table", "code",
                        "exercise", "solution", "proof")
# Output MIME types in order of preference.
MIME_ORDER = ("image/svg+xml", "image/png", "image/jpeg", "image/gif", "text/html",
              "text/markdown", "text/latex", "text/plain")
LANG_ALIASES = {"ipython3": "python", "ipython": "python", "python3": "python", "": "text"}
PROOF_TITLES = {"proof": "Proof", "axiom": "Axiom", "theorem": "Theorem", "lemma": "Lemma",
                "algorithm": "Algorithm", "definition": "Definition", "remark": "Remark",
                "conjecture": "Conjecture", "corollary": "Corollary",
                "criterion": "Criterion", "example": "Example", "property": "Property",
                "observation": "Observation", "proposition": "Proposition",
                "assumption": "Assumption", "notation": "Notation"}
# Nodes whose html_id names *another* node (a target elsewhere): never an anchor here.
REFERENCE_TYPES = {"crossReference", "captionNumber", "link", "cite", "footnoteReference"}
SILENT_TYPES = {"comment", "mystComment"}
# Nodes after which the search text gets a space (words of two blocks must not run together).
BLOCK_TYPES = {"paragraph", "heading", "listItem", "tableCell", "definitionTerm",
               "definitionDescription", "caption", "admonitionTitle", "blockquote", "math",
               "code", "container", "block"}
# A text/plain fallback that only names the object (matplotlib's "<Figure size 900x600 with
# 6 Axes>", "<matplotlib...>"): never an image's alt text.
OBJECT_REPR = re.compile(r"^\s*<.*>\s*$", flags=re.S)
_CODE_FORMATTER = HtmlFormatter(cssclass="highlight", wrapcode=True)


def warn(message: str) -> None:
    print(f"render_site: warning: {message}", file=sys.stderr)


def plain_text(node: dict) -> str:
    """The text content of a node and its descendants."""
    if "value" in node and node.get("type") in ("text", "inlineCode"):
        return node["value"]
    return "".join(plain_text(child) for child in node.get("children", []))


TEX_STYLE_COMMANDS = re.compile(r"\\(?:operatorname|mathrm|mathbf|mathit|mathsf|mathcal|"
                                r"mathbb|boldsymbol|bm|text|textrm|textbf|textit)\s*\{([^{}]*)\}")
TEX_SIZING = re.compile(r"\\(?:left|right|[bB]ig{1,2}[lr]?)\b|\\[,;:! ]|\\q?quad\b")


def tex_words(tex: str) -> str:
    """TeX as plain words: ``\\exp(-E(x))/Z`` becomes ``exp(-E(x))/Z``,
    ``\\operatorname{tr} \\Sigma`` becomes ``tr Sigma``."""
    text = TEX_STYLE_COMMANDS.sub(r"\1", tex)
    text = TEX_SIZING.sub(" ", text)
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text).replace("{", "").replace("}", "")
    return " ".join(text.split())


def text_content(node: dict) -> str:
    """Readable text of a node: its text, code and math (TeX with the backslashes dropped),
    without caption numbers, footnote marks and comments; whitespace collapsed."""
    parts: list[str] = []

    def visit(item: dict) -> None:
        kind = item.get("type")
        if kind in ("captionNumber", "footnoteReference", "comment", "mystComment"):
            return
        if kind in ("text", "inlineCode"):
            parts.append(item.get("value", ""))
        elif kind in ("inlineMath", "math"):
            parts.append(tex_words(item.get("value", "")))
        for child in item.get("children", []):
            visit(child)
        if kind in BLOCK_TYPES:
            parts.append(" ")

    visit(node)
    return " ".join("".join(parts).split())


def tag(name: str, body: str | Markup = "", **attrs: object) -> Markup:
    """``<name attrs>body</name>`` with escaped attributes; ``class_`` means ``class``."""
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{escape(value)}"')
    return Markup(f"<{' '.join(parts)}>{escape(body)}</{name}>")


class PageRenderer:
    """Renders one page's AST; collects its footnotes and the assets it uses."""

    unknown_types: set[str] = set()
    _asset_cache: dict[str, str] = {}

    def __init__(self, page: dict, entry, nav, source, out_dir: Path, components) -> None:
        self.page = page
        self.entry = entry
        self.nav = nav
        self.source = source
        self.out_dir = out_dir
        self.c = components
        self.used_ids: set[str] = set()
        self.footnotes: list[tuple[str, str, Markup]] = []
        # (depth, id, rendered title, plain title) of the page's headings ("on this page")
        self.headings: list[tuple[int, str, Markup, str]] = []
        self._heading_ids: dict[int, str] = {}   # id(heading node) -> its HTML id
        self._figure_alts: list[str] = []        # captions of the figures being rendered
        self.images_without_caption = 0

    # -- plumbing -------------------------------------------------------------------------
    def render_page(self) -> Markup:
        return self.render(self.page["mdast"])

    def render(self, node: dict) -> Markup:
        if node.get("visibility") == "remove":
            return Markup("")
        kind = node.get("type", "")
        if kind in SILENT_TYPES:
            return Markup("")
        method = getattr(self, f"node_{kind}", None)
        if method is None:
            if kind not in PageRenderer.unknown_types:
                warn(f"unknown node type '{kind}' on page '{self.entry.slug}': "
                     "rendering its content")
            PageRenderer.unknown_types.add(kind)
            html = self.node_span(node) if "children" in node else escape(node.get("value", ""))
        else:
            html = method(node)
        if node.get("visibility") == "hide":
            label = {"code": "Show code", "outputs": "Show output"}.get(kind, "Show")
            html = self.c.hidden(label=label, body=html)
        if kind not in REFERENCE_TYPES:
            anchor = self.claim_id(node)
            if anchor:
                html = tag("span", "", id=anchor, class_="anchor") + html
        return Markup(html)

    def children(self, node: dict) -> Markup:
        return Markup("").join(self.render(child) for child in node.get("children", []))

    def claim_id(self, node: dict) -> str | None:
        """The node's HTML id the first time it is asked for, None afterwards."""
        html_id = node.get("html_id") or (node.get("identifier") if node.get("label") else None)
        if not html_id or html_id in self.used_ids:
            return None
        self.used_ids.add(html_id)
        return html_id

    def chapter_of(self, slug: str | None):
        if slug is None:
            return self.entry
        return self.nav.by_slug(slug)

    def qualified(self, enumerator: str | None, slug: str | None = None) -> str | None:
        """"3.2" for number 2 on chapter 3's page; the enumerator itself elsewhere."""
        if enumerator is None:
            return None
        entry = self.chapter_of(slug)
        if entry is not None and entry.number:
            return f"{entry.number}.{enumerator}"
        return str(enumerator)

    def page_href(self, url: str) -> str:
        """A site URL (``/slug``, ``/slug#id``, ``/``) as a relative link to the HTML file."""
        path, _, fragment = url.partition("#")
        slug = path.strip("/") or self.nav.pages[0].slug
        if slug == self.entry.slug and fragment:
            return f"#{fragment}"
        target = self.nav.by_slug(slug)
        if target is None:
            return self.asset(url)
        return target.html_name + (f"#{fragment}" if fragment else "")

    def asset(self, path: str) -> str:
        """Copy a public asset of the content server into ``_assets/``; its relative URL."""
        if path in PageRenderer._asset_cache:
            return PageRenderer._asset_cache[path]
        name = PurePosixPath(path.split("?")[0]).name or hashlib.sha1(path.encode()).hexdigest()
        target = self.out_dir / "_assets" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.source.bytes(path))
        PageRenderer._asset_cache[path] = f"_assets/{name}"
        return PageRenderer._asset_cache[path]

    def code_html(self, code: str, lang: str | None) -> Markup:
        name = LANG_ALIASES.get((lang or "").lower(), (lang or "text").lower())
        try:
            lexer = get_lexer_by_name(name)
        except ClassNotFound:
            lexer = get_lexer_by_name("text")
        return Markup(highlight(code, lexer, _CODE_FORMATTER))

    # -- page-level pieces ----------------------------------------------------------------
    def render_footnotes(self) -> Markup:
        return self.c.footnotes(items=self.footnotes) if self.footnotes else Markup("")

    def render_bibliography(self) -> Markup:
        cite = self.page.get("references", {}).get("cite", {})
        items = [(label, Markup(cite["data"][label].get("html", escape(label))))
                 for label in cite.get("order", []) if label in cite.get("data", {})]
        if not items:
            return Markup("")
        return self.c.bibliography(items=items, heading=not self._ends_with_references_heading())

    def _ends_with_references_heading(self) -> bool:
        """True when the page's last section is an empty "References" heading."""
        blocks = [child for block in self.page["mdast"].get("children", [])
                  for child in (block.get("children", []) if block.get("type") == "block"
                                else [block])]
        blocks = [b for b in blocks if b.get("type") not in ("footnoteDefinition", "comment",
                                                             "mystComment")]
        return bool(blocks) and blocks[-1].get("type") == "heading" and \
            plain_text(blocks[-1]).strip().lower() in ("references", "bibliography")

    def page_toc(self, max_depth: int = 3) -> list[tuple[int, str, Markup]]:
        """(depth, id, title) of the headings for the page's "on this page" contents."""
        # the title once more, without ids (they are the heading's) and links (no nesting)
        return [(depth, html_id,
                 Markup(re.sub(r"</?a\b[^>]*>", "", re.sub(r'\sid="[^"]*"', "", str(body)))))
                for depth, html_id, body, _ in self.headings if depth <= max_depth]

    # -- structure ------------------------------------------------------------------------
    def node_root(self, node: dict) -> Markup:
        return self.children(node)

    def node_block(self, node: dict) -> Markup:
        if node.get("kind") == "notebook-code":
            return self.c.cell(id=self.claim_id(node), body=self.children(node))
        return self.children(node)

    def node_paragraph(self, node: dict) -> Markup:
        return tag("p", self.children(node))

    def node_heading(self, node: dict) -> Markup:
        depth = min(max(int(node.get("depth", 2)), 2), 6)
        html_id = self.claim_id(node)
        body = self.children(node)
        if html_id:
            self.headings.append((depth, html_id, body, text_content(node)))
            self._heading_ids[id(node)] = html_id
        return self.c.heading(level=depth, id=html_id, body=body)

    def node_text(self, node: dict) -> Markup:
        return escape(node.get("value", ""))

    def node_emphasis(self, node: dict) -> Markup:
        return tag("em", self.children(node))

    def node_strong(self, node: dict) -> Markup:
        return tag("strong", self.children(node))

    def node_underline(self, node: dict) -> Markup:
        return tag("u", self.children(node))

    def node_delete(self, node: dict) -> Markup:
        return tag("del", self.children(node))

    def node_subscript(self, node: dict) -> Markup:
        return tag("sub", self.children(node))

    def node_superscript(self, node: dict) -> Markup:
        return tag("sup", self.children(node))

    def node_smallcaps(self, node: dict) -> Markup:
        return tag("span", self.children(node), class_="smallcaps")

    def node_keyboard(self, node: dict) -> Markup:
        return tag("kbd", self.children(node) or node.get("value", ""))

    def node_abbreviation(self, node: dict) -> Markup:
        return tag("abbr", self.children(node), title=node.get("title"))

    def node_inlineCode(self, node: dict) -> Markup:
        return tag("code", node.get("value", ""), class_="literal")

    def node_break(self, node: dict) -> Markup:
        return Markup("<br>")

    def node_thematicBreak(self, node: dict) -> Markup:
        return Markup("<hr>")

    def node_blockquote(self, node: dict) -> Markup:
        return tag("blockquote", self.children(node))

    def node_list(self, node: dict) -> Markup:
        if node.get("ordered"):
            start = node.get("start")
            return tag("ol", self.children(node), start=start if start not in (None, 1) else None)
        return tag("ul", self.children(node))

    def node_listItem(self, node: dict) -> Markup:
        return tag("li", self.children(node))

    def node_definitionList(self, node: dict) -> Markup:
        return tag("dl", self.children(node))

    def node_definitionTerm(self, node: dict) -> Markup:
        return tag("dt", self.children(node))

    def node_definitionDescription(self, node: dict) -> Markup:
        return tag("dd", self.children(node))

    def node_span(self, node: dict) -> Markup:
        return tag("span", self.children(node), class_=node.get("class"))

    def node_div(self, node: dict) -> Markup:
        return tag("div", self.children(node), class_=node.get("class"))

    def node_html(self, node: dict) -> Markup:
        return Markup(node.get("value", ""))

    def node_target(self, node: dict) -> Markup:
        return Markup("")  # the dispatcher adds the anchor

    node_mystTarget = node_target

    def node_aside(self, node: dict) -> Markup:
        return tag("aside", self.children(node), class_="aside")

    def node_include(self, node: dict) -> Markup:
        return self.children(node)

    node_embed = node_include
    node_glossary = node_include
    node_tabSet = node_include
    node_grid = node_include

    def node_tabItem(self, node: dict) -> Markup:
        return self.c.panel(title=node.get("title", ""), body=self.children(node))

    def node_card(self, node: dict) -> Markup:
        return self.c.panel(title="", body=self.children(node))

    def node_cardTitle(self, node: dict) -> Markup:
        return tag("p", self.children(node), class_="card-title")

    def node_header(self, node: dict) -> Markup:
        return self.children(node)

    node_footer = node_header

    # -- links and references -------------------------------------------------------------
    def node_link(self, node: dict) -> Markup:
        url = node.get("url", "")
        if node.get("internal") or (url.startswith("/") and not url.startswith("//")):
            href = self.page_href(url)
            external = False
        else:
            href, external = url, True
        body = self.children(node) or escape(url)
        return tag("a", body, href=href, class_="external" if external else "internal")

    node_linkBlock = node_link

    def node_crossReference(self, node: dict) -> Markup:
        slug = None
        if node.get("remote") and node.get("url"):
            slug = node["url"].partition("#")[0].strip("/") or self.nav.pages[0].slug
        html_id = node.get("html_id") or node.get("identifier", "")
        if slug and slug != self.entry.slug:
            target = self.nav.by_slug(slug)
            href = (target.html_name if target else self.page_href(node["url"])) + f"#{html_id}"
        else:
            href = f"#{html_id}"
        body = self.children(node)
        kind = (node.get("kind") or "").split(":")[0]
        template, enumerator = node.get("template"), node.get("enumerator")
        if template and enumerator and kind in CHAPTER_SCOPED_KINDS:
            default_text = template.replace("%s", str(enumerator))
            if plain_text(node) == default_text:  # no custom text: show "Figure 3.1"
                body = escape(template.replace("%s", self.qualified(enumerator, slug)))
        if not node.get("resolved", True) and not body:
            warn(f"unresolved cross-reference '{node.get('identifier')}' on {self.entry.slug}")
            body = escape(node.get("identifier", "?"))
        return tag("a", body, href=href, class_=f"xref xref-{kind or 'target'}")

    def node_cite(self, node: dict) -> Markup:
        label = node.get("label") or node.get("identifier", "")
        if node.get("error"):
            warn(f"unknown citation '{label}' on {self.entry.slug}")
            return tag("span", label, class_="cite error")
        return tag("a", self.children(node) or label, href=f"#cite-{label}", class_="cite")

    def node_citeGroup(self, node: dict) -> Markup:
        cites = [self.render(child) for child in node.get("children", [])]
        if node.get("kind") == "parenthetical":
            return Markup("(") + Markup("; ").join(cites) + Markup(")")
        return Markup(", ").join(cites)

    def node_footnoteReference(self, node: dict) -> Markup:
        identifier = node.get("identifier", "")
        number = node.get("enumerator", identifier)
        return self.c.footnote_ref(id=identifier, number=number)

    def node_footnoteDefinition(self, node: dict) -> Markup:
        self.footnotes.append((node.get("identifier", ""), node.get("enumerator", ""),
                               self.children(node)))
        self.used_ids.add(node.get("html_id") or node.get("identifier", ""))
        return Markup("")

    # -- math -----------------------------------------------------------------------------
    def node_inlineMath(self, node: dict) -> Markup:
        if node.get("html"):
            return Markup(node["html"])
        warn(f"inline math without KaTeX HTML on {self.entry.slug}: {node.get('value')!r}")
        return tag("code", node.get("value", ""), class_="math-error")

    def node_math(self, node: dict) -> Markup:
        html = Markup(node["html"]) if node.get("html") else None
        if html is None:
            warn(f"display math without KaTeX HTML on {self.entry.slug}: {node.get('value')!r}")
        number = self.qualified(node.get("enumerator")) if node.get("enumerator") else None
        return self.c.equation(id=self.claim_id(node), html=html, latex=node.get("value", ""),
                               number=number)

    # -- code, notebook cells and their outputs ---------------------------------------------
    def node_code(self, node: dict) -> Markup:
        return self.c.code_block(id=self.claim_id(node),
                                 html=self.code_html(node.get("value", ""), node.get("lang")),
                                 executable=bool(node.get("executable")),
                                 filename=node.get("filename"))

    def node_outputs(self, node: dict) -> Markup:
        body = self.children(node)
        return self.c.outputs(id=self.claim_id(node), body=body) if body else Markup("")

    def node_output(self, node: dict) -> Markup:
        if node.get("children"):
            return self.children(node)
        data = node.get("jupyter_data") or {}
        output_type = data.get("output_type")
        if output_type == "stream":
            return self.c.stream(name=data.get("name", "stdout"),
                                 text=ANSI_ESCAPE.sub("", "".join(data.get("text", ""))))
        if output_type == "error":
            traceback = data.get("traceback", "")
            text = "\n".join(traceback) if isinstance(traceback, list) else str(traceback)
            text = ANSI_ESCAPE.sub("", text) or f"{data.get('ename')}: {data.get('evalue')}"
            return self.c.error(text=text, ename=data.get("ename", "Error"))
        if output_type in ("display_data", "execute_result"):
            return self.mime_bundle(data.get("data") or {})
        if data:
            warn(f"unknown output type {output_type!r} on {self.entry.slug}")
        return Markup("")

    def mime_value(self, entry: dict, binary: bool = False):
        if "content" in entry:
            return entry["content"]
        if "path" in entry:
            return entry["path"] if binary else self.source.bytes(entry["path"]).decode("utf-8")
        return ""

    def mime_bundle(self, bundle: dict) -> Markup:
        for mime in MIME_ORDER:
            if mime not in bundle:
                continue
            entry = bundle[mime]
            if mime.startswith("image/"):
                if "path" in entry:
                    src = self.asset(entry["path"])
                else:  # small images may come inline
                    content = entry.get("content", "")
                    src = (f"data:{mime};base64,{content}" if mime != "image/svg+xml" else
                           "data:image/svg+xml;charset=utf-8," + content.replace("#", "%23"))
                return self.c.output_image(src=src, alt=self.image_alt(bundle))
            if mime == "text/html":
                return self.c.output_html(html=Markup(self.mime_value(entry)))
            if mime == "text/markdown":
                return self.c.output_html(html=Markup(markdown_to_html(self.mime_value(entry))))
            if mime == "text/latex":
                return self.c.stream(name="latex", text=self.mime_value(entry))
            return self.c.stream(name="result",
                                 text=ANSI_ESCAPE.sub("", str(self.mime_value(entry))))
        if bundle:
            warn(f"no renderable MIME type among {sorted(bundle)} on {self.entry.slug}")
        return Markup("")

    def node_inlineExpression(self, node: dict) -> Markup:
        result = node.get("result") or {}
        if node.get("children"):
            return self.children(node)
        data = result.get("data") or {}
        text = data.get("text/plain", {})
        value = text.get("content", "") if isinstance(text, dict) else str(text)
        return tag("span", value, class_="inline-expression")

    # -- figures, images and tables -------------------------------------------------------
    def node_container(self, node: dict) -> Markup:
        kind = node.get("kind", "figure")
        parts = []
        caption = Markup("")
        captions = [child for child in node.get("children", []) if child.get("type") == "caption"]
        alt = " ".join(text_content(child) for child in captions).strip()
        self._figure_alts.append(alt or self._label_alt(node))
        try:
            for child in node.get("children", []):
                if child.get("type") == "caption":
                    caption += self.render(child)
                else:
                    parts.append(self.render(child))
        finally:
            self._figure_alts.pop()
        caption_first = kind == "table"
        return self.c.figure(id=self.claim_id(node), kind=kind, body=Markup("").join(parts),
                             caption=caption, caption_first=caption_first,
                             cls=node.get("class") or "")

    def node_caption(self, node: dict) -> Markup:
        return self.children(node)

    def node_legend(self, node: dict) -> Markup:
        return tag("div", self.children(node), class_="legend")

    def node_captionNumber(self, node: dict) -> Markup:
        template, enumerator = node.get("template"), node.get("enumerator")
        if template and enumerator:
            text = template.replace("%s", self.qualified(enumerator))
        else:
            text = plain_text(node)
        return tag("span", text, class_="caption-number") + Markup(" ")

    def node_image(self, node: dict) -> Markup:
        url = node.get("url", "")
        if url.startswith(("http://", "https://", "//")):
            warn(f"remote image {url} on {self.entry.slug} will not load offline")
            src = url
        elif url.startswith("data:"):
            src = url
        else:
            src = self.asset(url)
        alt = node.get("alt") or node.get("title") or self.image_alt({})
        return self.c.image(src=src, alt=alt,
                            width=node.get("width"), align=node.get("align"),
                            title=node.get("title"))

    def image_alt(self, bundle: dict) -> str:
        """Alt text of an image: the caption of the figure it is in, else a text/plain
        description that is not an object repr, else a description by position."""
        for alt in reversed(self._figure_alts):
            if alt:
                return alt
        plain = bundle.get("text/plain", {})
        text = plain.get("content", "") if isinstance(plain, dict) else str(plain)
        if text.strip() and not OBJECT_REPR.match(text):
            return " ".join(text.split())[:300]
        self.images_without_caption += 1
        section = self.headings[-1][3] if self.headings else None
        where = f"section \u201c{section}\u201d of " if section else ""
        return f"Figure produced by the code above ({where}{self.entry.title})"

    @staticmethod
    def _label_alt(node: dict) -> str:
        label = node.get("label") or node.get("identifier") or ""
        return re.sub(r"^(fig|figure|tbl|table)[-_:]", "", label).replace("-", " ").strip()

    def node_iframe(self, node: dict) -> Markup:
        return tag("a", node.get("src", ""), href=node.get("src", ""), class_="external")

    def node_table(self, node: dict) -> Markup:
        return self.c.table(body=self.children(node), cls=node.get("class") or "")

    def node_tableRow(self, node: dict) -> Markup:
        return tag("tr", self.children(node))

    def node_tableCell(self, node: dict) -> Markup:
        name = "th" if node.get("header") else "td"
        style = f"text-align: {node['align']}" if node.get("align") else None
        return tag(name, self.children(node), style=style, colspan=node.get("colspan"),
                   rowspan=node.get("rowspan"))

    # -- admonitions, dropdowns, proofs, exercises ------------------------------------------
    def _title_and_body(self, node: dict) -> tuple[Markup, Markup]:
        title, body = Markup(""), Markup("")
        for child in node.get("children", []):
            if child.get("type") == "admonitionTitle":
                title += self.children(child)
            else:
                body += self.render(child)
        return title, body

    def node_admonition(self, node: dict) -> Markup:
        kind = node.get("kind") or "note"
        classes = node.get("class") or ""
        title, body = self._title_and_body(node)
        if not title:
            title = escape(kind.capitalize())
        return self.c.admonition(id=self.claim_id(node), kind=kind, title=title, body=body,
                                 dropdown="dropdown" in classes.split(), cls=classes)

    def node_admonitionTitle(self, node: dict) -> Markup:
        return tag("p", self.children(node), class_="admonition-title")

    def node_details(self, node: dict) -> Markup:
        summary, body = Markup(""), Markup("")
        for child in node.get("children", []):
            if child.get("type") == "summary":
                summary += self.children(child)
            else:
                body += self.render(child)
        return self.c.details(id=self.claim_id(node), summary=summary or "Details", body=body,
                              open=bool(node.get("open")))

    def node_summary(self, node: dict) -> Markup:
        return tag("p", self.children(node), class_="summary")

    def node_proof(self, node: dict) -> Markup:
        kind = node.get("kind") or "proof"
        title, body = self._title_and_body(node)
        number = None
        if kind != "proof" and node.get("enumerated", True) and node.get("enumerator"):
            number = self.qualified(node["enumerator"])
        return self.c.proof(id=self.claim_id(node), kind=kind,
                            name=PROOF_TITLES.get(kind, kind.capitalize()),
                            number=number, title=title, body=body)

    def node_exercise(self, node: dict) -> Markup:
        title, body = self._title_and_body(node)
        number = None
        if node.get("enumerated", True) and node.get("enumerator"):
            number = self.qualified(node["enumerator"])
        return self.c.exercise(id=self.claim_id(node), number=number, title=title, body=body)

    def node_solution(self, node: dict) -> Markup:
        title, body = self._title_and_body(node)
        return self.c.solution(id=self.claim_id(node), title=title or "Solution", body=body)

    # -- leftovers of unprocessed MyST syntax ------------------------------------------------
    def node_mystDirective(self, node: dict) -> Markup:
        warn(f"unprocessed directive '{node.get('name')}' on {self.entry.slug}")
        return self.children(node) or tag("pre", node.get("value", ""))

    def node_mystRole(self, node: dict) -> Markup:
        warn(f"unprocessed role '{node.get('name')}' on {self.entry.slug}")
        return self.children(node) or tag("code", node.get("value", ""))

    def node_si(self, node: dict) -> Markup:
        return escape(node.get("value") or plain_text(node))


def search_sections(renderer: PageRenderer, page_title: str) -> list[dict]:
    """The page's text, split at its headings: one search document per section.

    Each section has its heading's id (None before the first heading), its title, its prose
    (text and inline code of everything but cell outputs, which are logs, numbers and
    figures) and the source of its code cells. Removed content is left out."""
    sections = [{"id": None, "title": page_title, "text": [], "code": []}]

    def visit(node: dict) -> None:
        kind = node.get("type")
        if node.get("visibility") == "remove" or kind in SILENT_TYPES or kind == "outputs":
            return
        if kind == "heading":
            sections.append({"id": renderer._heading_ids.get(id(node)),
                             "title": text_content(node), "text": [], "code": []})
            return
        if kind == "code":
            sections[-1]["code"].append(node.get("value", ""))
            return
        if kind in ("text", "inlineCode"):
            sections[-1]["text"].append(node.get("value", ""))
        elif kind == "inlineMath":
            sections[-1]["text"].append(tex_words(node.get("value", "")))
        for child in node.get("children", []):
            visit(child)
        if kind in BLOCK_TYPES:
            sections[-1]["text"].append(" ")

    visit(renderer.page["mdast"])
    result = []
    for section in sections:
        text = " ".join("".join(section["text"]).split())
        code = "\n".join(section["code"])
        if section["id"] is None and not text and not code:
            continue
        result.append({"id": section["id"], "title": section["title"], "text": text,
                       "code": code})
    return result


def markdown_to_html(text: str) -> str:
    """Markdown (a ``text/markdown`` cell output) to HTML; math stays as marked-up TeX."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    parser = MarkdownIt("commonmark", {"html": True}).enable("table").use(dollarmath_plugin)
    return parser.render(text)
