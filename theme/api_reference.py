"""The book's API reference page: ``ebflow_lite``'s public names, from their docstrings.

What is documented is read from the package at build time, never from a list kept here:

* ``ebflow_lite`` itself: every name in its ``__all__``;
* every module named in that ``__all__`` (``ebflow_lite.metrics``, ...), every subpackage
  (found with ``pkgutil.walk_packages``) and every top-level module that ``import
  ebflow_lite`` does not load (``plotting``, ``bench``, ... are imported on demand): the
  names in the module's ``__all__``, or, without one, the public names it defines.

pdoc extracts the objects (signatures with annotations, docstrings, class members) and
converts the docstrings (Google style with reST roles) to HTML; this module only arranges
them into sections and entries for ``templates/api.html.j2`` and the search index.
"""

from __future__ import annotations

import html
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass, field
from types import ModuleType

import pdoc.doc
import pdoc.docstrings
import pdoc.render_helpers
from markupsafe import Markup, escape

DOCFORMAT = "google"  # the library's docstrings: Google sections, reST roles and ``literals``
_CODE_IN_HTML = re.compile(r"<code>([A-Za-z_][\w.]*)(\(\))?</code>")
_HEADING_ID = re.compile(r'<(h[1-6]) id="[^"]*">')


@dataclass
class ApiEntry:
    """One documented name (or a member of a documented class)."""

    qualname: str          # "ebflow_lite.layers.Dense" or "ebflow_lite.EBFlow.energy": the HTML id
    name: str              # "Dense", "energy"
    kind: str              # class, function, method, classmethod, staticmethod, property,
    #                        variable, module
    signature: Markup      # highlighted, "" for modules
    doc_html: Markup
    summary: Markup        # the docstring's first paragraph, as HTML
    target: str | None = None  # a module entry: the id of that module's section
    members: list[ApiEntry] = field(default_factory=list)


@dataclass
class ApiSection:
    """One module's part of the page."""

    module: str
    anchor: str
    heading: str
    on_demand: bool
    doc_html: Markup
    summary: Markup
    entries: list[ApiEntry]


def section_anchor(module_name: str) -> str:
    return f"module-{module_name}"


def public_names(module: ModuleType) -> list[str]:
    """``module.__all__``, or the public names the module defines (in source order)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", module.__name__) == module.__name__:
            names.append(name)
    return names


def loaded_by_import(package: str) -> set[str]:
    """The ``package.*`` modules that a plain ``import package`` loads (fresh interpreter)."""
    code = (f"import json, sys, {package}; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith('{package}.'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def documented_modules(package: str = "ebflow_lite") -> list[tuple[ModuleType, bool]]:
    """(module, imported on demand) of every section, root first, in reading order."""
    root = importlib.import_module(package)
    ordered: dict[str, tuple[ModuleType, bool]] = {package: (root, False)}
    for name in public_names(root):
        value = getattr(root, name)
        if inspect.ismodule(value):
            ordered.setdefault(value.__name__, (value, False))
    # a subpackage that fails to import fails the build below (import_module), loudly
    infos = sorted(pkgutil.walk_packages(root.__path__, prefix=package + "."),
                   key=lambda info: info.name)
    for info in infos:
        if info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
            ordered.setdefault(info.name, (importlib.import_module(info.name), False))
    eager = loaded_by_import(package)
    for info in infos:
        parts = info.name.split(".")
        if info.ispkg or len(parts) != 2 or parts[1].startswith("_") or info.name in eager:
            continue
        ordered.setdefault(info.name, (importlib.import_module(info.name), True))
    return list(ordered.values())


class ApiReference:
    """Sections and entries of the API page, with docstrings converted to HTML."""

    def __init__(self, package: str = "ebflow_lite") -> None:
        self.package = package
        modules = documented_modules(package)
        self.section_names = {module.__name__ for module, _ in modules}
        self.sections: list[ApiSection] = []
        self.ids: set[str] = set()
        for module, on_demand in modules:
            self.sections.append(self._section(module, on_demand))
        for section in self.sections:  # link `names` in docstrings once every id is known
            section.doc_html = self._link_names(section.doc_html, section.module)
            section.summary = self._link_names(section.summary, section.module)
            for entry in section.entries:
                for item in [entry, *entry.members]:
                    item.doc_html = self._link_names(item.doc_html, section.module,
                                                     entry.qualname)

    # -- building ---------------------------------------------------------------------------
    def _section(self, module: ModuleType, on_demand: bool) -> ApiSection:
        module_doc = pdoc.doc.Module(module)
        entries = []
        for name in public_names(module):
            value = getattr(module, name, None)
            qualname = f"{module.__name__}.{name}"
            if inspect.ismodule(value):
                entries.append(self._module_entry(qualname, name, value))
                continue
            member = module_doc.members.get(name) or module_doc.get(name)
            if member is None:  # e.g. a re-exported constant pdoc does not list
                entries.append(self._plain_entry(qualname, name, value))
                continue
            entries.append(self._entry(member, qualname, module_doc))
        doc_html, summary = self._docstring(module_doc.docstring, module_doc)
        return ApiSection(module=module.__name__, anchor=section_anchor(module.__name__),
                          heading=module.__name__, on_demand=on_demand, doc_html=doc_html,
                          summary=summary, entries=entries)

    def _entry(self, doc: pdoc.doc.Doc, qualname: str, module_doc: pdoc.doc.Module,
               in_class: bool = False) -> ApiEntry:
        self.ids.add(qualname)
        doc_html, summary = self._docstring(doc.docstring, module_doc)
        if isinstance(doc, pdoc.doc.Class):
            init = doc.members.get("__init__")
            signature = Markup("")
            if isinstance(init, pdoc.doc.Function):
                signature = pdoc.render_helpers.format_signature(init.signature_without_self,
                                                                 colon=False)
            else:  # no __init__ pdoc knows of: the signature Python reports, if any
                try:
                    signature = pdoc.render_helpers.format_signature(
                        inspect.signature(doc.obj), colon=False)
                except (TypeError, ValueError):
                    pass
            entry = ApiEntry(qualname=qualname, name=doc.name, kind="class",
                             signature=signature, doc_html=doc_html, summary=summary)
            for member in doc.own_members:
                if member.name.startswith("_") or isinstance(member, pdoc.doc.Class):
                    continue
                entry.members.append(self._entry(member, f"{qualname}.{member.name}",
                                                 module_doc, in_class=True))
            return entry
        if isinstance(doc, pdoc.doc.Function):
            kind = "function"
            if in_class:
                kind = ("property" if "@property" in doc.decorators or
                        any(d.startswith("@cached_property") for d in doc.decorators)
                        else "classmethod" if doc.is_classmethod
                        else "staticmethod" if doc.is_staticmethod else "method")
            if kind == "property":
                annotation = doc.signature.return_annotation
                signature = Markup("") if annotation is inspect.Signature.empty else \
                    Markup(": ") + escape(inspect.formatannotation(annotation))
            else:
                sig = doc.signature_without_self if in_class else doc.signature
                signature = pdoc.render_helpers.format_signature(sig, colon=False)
            return ApiEntry(qualname=qualname, name=doc.name, kind=kind, signature=signature,
                            doc_html=doc_html, summary=summary)
        assert isinstance(doc, pdoc.doc.Variable), f"unexpected pdoc object {doc!r}"
        signature = escape(doc.annotation_str)
        if doc.default_value_str:
            signature += Markup(" = ") + escape(_shorten(doc.default_value_str))
        return ApiEntry(qualname=qualname, name=doc.name, kind="variable", signature=signature,
                        doc_html=doc_html, summary=summary)

    def _module_entry(self, qualname: str, name: str, module: ModuleType) -> ApiEntry:
        self.ids.add(qualname)
        doc_html, summary = self._docstring(inspect.getdoc(module) or "",
                                            pdoc.doc.Module(module))
        target = section_anchor(module.__name__) if module.__name__ in self.section_names \
            else None
        return ApiEntry(qualname=qualname, name=name, kind="module", signature=Markup(""),
                        doc_html=Markup(""), summary=summary, target=target)

    def _plain_entry(self, qualname: str, name: str, value: object) -> ApiEntry:
        self.ids.add(qualname)
        return ApiEntry(qualname=qualname, name=name, kind="variable",
                        signature=Markup(" = ") + escape(_shorten(repr(value))),
                        doc_html=Markup(""), summary=Markup(""))

    def _docstring(self, text: str, module_doc: pdoc.doc.Module) -> tuple[Markup, Markup]:
        """(docstring as HTML, its first paragraph as HTML)."""
        if not text:
            return Markup(""), Markup("")
        docformat = getattr(module_doc.obj, "__docformat__", DOCFORMAT) or DOCFORMAT
        markdown = pdoc.docstrings.convert(text, docformat, module_doc.source_file)
        rendered = str(pdoc.render_helpers.to_html(markdown))
        # markdown2 gives every docstring heading ("Arguments:") an id: they would repeat
        rendered = _HEADING_ID.sub(r"<\1>", rendered)
        return Markup(rendered), first_paragraph(rendered)

    # -- links ----------------------------------------------------------------------------
    def _resolve(self, name: str, module: str, context: str | None = None) -> str | None:
        """The id a name in a docstring refers to: tried as a member of the class being
        documented, as written, in the current module, then in the package."""
        candidates = [f"{context}.{name}"] if context else []
        for candidate in (*candidates, name, f"{module}.{name}", f"{self.package}.{name}"):
            if candidate in self.ids:
                return candidate
            if candidate in self.section_names:
                return section_anchor(candidate)
        return None

    def _link_names(self, html: Markup, module: str, context: str | None = None) -> Markup:
        """``<code>EBFlow</code>`` (a documented name) becomes a link to its entry."""
        def replace(match: re.Match) -> str:
            target = self._resolve(match.group(1), module, context)
            if target is None:
                return match.group(0)
            return f'<a class="api-link" href="#{escape(target)}">{match.group(0)}</a>'

        return Markup(_CODE_IN_HTML.sub(replace, str(html)))

    @staticmethod
    def _walk(entries: list[ApiEntry]):
        for entry in entries:
            yield entry
            yield from ApiReference._walk(entry.members)

    # -- views ----------------------------------------------------------------------------
    def headings(self) -> list[tuple[int, str, str]]:
        """(level, id, text) of the page's sections, for its "on this page" contents."""
        return [(2, section.anchor, section.heading) for section in self.sections]

    def search_documents(self, html_name: str, page_title: str) -> list[dict]:
        """One search document per documented name (its section is the entry)."""
        documents = []
        for section in self.sections:
            documents.append({"url": f"{html_name}#{section.anchor}", "page": page_title,
                              "section": section.module, "text": html_to_text(section.doc_html),
                              "code": ""})
            for entry in self._walk(section.entries):
                documents.append({"url": f"{html_name}#{entry.qualname}", "page": page_title,
                                  "section": entry.qualname,
                                  "text": html_to_text(entry.doc_html or entry.summary),
                                  "code": entry.name})
        return documents


def first_paragraph(rendered: str) -> Markup:
    """The content of the first ``<p>`` of rendered HTML."""
    match = re.search(r"<p>(.*?)</p>", rendered, flags=re.S)
    return Markup(" ".join(match.group(1).split())) if match else Markup("")


def html_to_text(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", str(markup))).split())


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
