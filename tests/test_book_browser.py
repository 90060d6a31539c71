"""End-to-end checks of the rendered HTML book in headless Chromium.

Serves ``_build/html`` (made by ``make book``) on 127.0.0.1, opens every page listed in the
sidebar in headless Chromium (driven over the Chrome DevTools protocol with
``websocket-client``) and checks that

* the page loads (HTTP 200) and the sidebar lists every file of the toc in ``myst.yml``;
* math is typeset by KaTeX (no raw ``$...$``, ``\\(`` or ``\\[`` left in the visible text, no
  KaTeX errors; chapters contain typeset math);
* every image loads (``naturalWidth > 0``) and is a valid PNG/JPEG/GIF/SVG file, and its alt
  text is a description (a figure's caption), never matplotlib's ``<Figure size ...>`` repr;
* every internal link resolves: the file exists and, for ``#id`` links, the id is in it;

and the reader's tools:

* search: typing a word that only chapter 5 uses into the search page finds chapter 5, and
  each result links to a section id that exists; ``search.html?q=...`` works too;
* every page's "on this page" contents link to its headings, and clicking each link scrolls
  its section to the top of the viewport;
* every code block has a copy button, and clicking one puts the code on the clipboard;
* every notebook page offers ``.ipynb`` and ``.md`` downloads: the ``.ipynb`` is a valid
  notebook (nbformat validates it) without outputs, the ``.md`` is the source file;
* the API reference page (linked from the sidebar) has an entry, with its signature and
  docstring, for every public name of ``ebflow_lite.__all__`` and of every subpackage;
* dark colours when the system prefers a dark scheme;
* a 390-px-wide (phone) viewport has no horizontal scroll on any page, and images keep their
  aspect ratio;
* no console errors, failed requests or uncaught exceptions on any page.

Screenshots go to ``_build/screenshots/`` (every page at 1280 px, ``mobile/`` at 390 px,
``dark/`` for a few pages); CI keeps them. Run with ``make browser-test`` (it installs
Chromium when missing) or ``pytest -m browser tests/test_book_browser.py``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from book_toc import load_config, toc_files  # noqa: E402

HTML_DIR = ROOT / "_build" / "html"
SCREENSHOT_DIR = ROOT / "_build" / "screenshots"
API_PAGE = "api-reference.html"
PHONE_WIDTH, PHONE_HEIGHT = 390, 844
DESKTOP_WIDTH, DESKTOP_HEIGHT = 1280, 900
# matplotlib's text/plain of a figure, and other object reprs: never an alt text
OBJECT_REPR = re.compile(r"^\s*<.*>\s*$|Figure size \d+x\d+|Axes>", flags=re.S)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF8": "gif"}
RAW_MATH = re.compile(r"\$\$|\$[^$\s][^$\n]*\$|\\\(|\\\)|\\\[|\\\]")

# Runs in the page: what the checks need, as one JSON-able object.
PAGE_PROBE_JS = r"""
(async () => {
  const images = [...document.images];
  await Promise.all(images.map(img => img.complete ? null :
      new Promise(done => { img.onload = img.onerror = done; })));
  const visible = document.querySelector("main").cloneNode(true);
  visible.querySelectorAll("pre, code, .highlight, .output, .katex, script, style")
         .forEach(node => node.remove());
  return {
    title: document.title,
    ids: [...document.querySelectorAll("[id]")].map(node => node.id),
    links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
    images: images.map(img => ({src: img.getAttribute("src"), width: img.naturalWidth,
        height: img.naturalHeight, alt: img.getAttribute("alt"),
        inFigure: !!img.closest("figure"),
        caption: ((img.closest("figure") || {querySelector: () => null})
                  .querySelector("figcaption") || {}).innerText || ""})),
    katex: document.querySelectorAll(".katex").length,
    katexErrors: document.querySelectorAll(".katex-error, .math-error").length,
    text: visible.innerText,
    sidebar: [...document.querySelectorAll("nav.sidebar ul.toc a")].map(a => ({
        href: a.getAttribute("href"), text: a.innerText.trim(),
        generated: a.closest("li").classList.contains("generated")})),
    chapterLabel: (document.querySelector(".chapter-label") || {}).innerText || "",
    pageToc: [...document.querySelectorAll(".page-toc a")].map(a => a.getAttribute("href")),
    headings: [...document.querySelectorAll("article h2[id], article h3[id]")].map(h => h.id),
    codeBlocks: document.querySelectorAll(".code-block").length,
    copyButtons: document.querySelectorAll(".code-block > .copy-button").length,
    downloads: [...document.querySelectorAll(".page-tools a[download]")].map(a => ({
        href: a.getAttribute("href"), name: a.getAttribute("download")})),
  };
})()
"""


# Clicks the page's contents link to each section in `ids`, from the top of the page; where
# the section is afterwards.
JUMP_JS = r"""
(async (ids) => {
  const links = [...document.querySelectorAll(".page-toc a")];
  const root = document.documentElement;
  const jumps = [];
  for (const id of ids) {
    window.scrollTo(0, 0);
    const link = links.find(a => a.getAttribute("href") === "#" + encodeURIComponent(id)
                                 || a.getAttribute("href") === "#" + id);
    link.click();
    await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
    jumps.push({id, hash: decodeURIComponent(location.hash.slice(1)),
                top: document.getElementById(id).getBoundingClientRect().top,
                atBottom: window.scrollY + window.innerHeight >= root.scrollHeight - 2});
  }
  return jumps;
})
"""

# The layout at a phone's width: overflow, and how images are sized.
NARROW_PROBE_JS = r"""
(async () => {
  const images = [...document.querySelectorAll("main img")];
  await Promise.all(images.map(img => img.complete ? null :
      new Promise(done => { img.onload = img.onerror = done; })));
  // the layout viewport: a phone zooms out (window.innerWidth grows) when a page overflows
  const root = document.documentElement, width = root.clientWidth;
  const wide = [];
  if (root.scrollWidth > width) {
    for (const node of document.querySelectorAll("body *")) {
      const box = node.getBoundingClientRect();
      if (box.width === 0 || box.right <= width + 1) { continue; }
      let parent = node.parentElement, clipped = false;
      while (parent && parent !== document.body) {
        if (getComputedStyle(parent).overflowX !== "visible") { clipped = true; break; }
        parent = parent.parentElement;
      }
      if (!clipped) {
        wide.push(`${node.tagName.toLowerCase()}.${String(node.className).trim()
                     .replace(/\s+/g, ".")} (right edge ${Math.round(box.right)} px)`);
      }
      if (wide.length >= 8) { break; }
    }
  }
  return {width, scrollWidth: root.scrollWidth, wide, zoom: window.visualViewport.scale,
          images: images.map(img => {
            const box = img.getBoundingClientRect();
            return {src: img.getAttribute("src"), width: box.width, height: box.height,
                    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                    right: box.right};
          })};
})()
"""


def front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    return yaml.safe_load(match.group(1)) if match else {}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="module")
def site_url():
    if not (HTML_DIR / "index.html").is_file():
        pytest.skip(f"{HTML_DIR.relative_to(ROOT)} does not exist: run `make book` first")
    handler = functools.partial(QuietHandler, directory=str(HTML_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class DevTools:
    """A minimal Chrome DevTools protocol client for one page target."""

    def __init__(self, websocket_url: str) -> None:
        import websocket  # websocket-client, installed with jupyter

        self.ws = websocket.create_connection(websocket_url, timeout=60,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        self.url = "about:blank"
        # (page, message) of every console error, uncaught exception and failed load
        self.errors: list[tuple[str, str]] = []

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append((self.url, f"uncaught exception: {text}"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(arg.get("value", arg.get("description", "")))
                            for arg in params.get("args", []))
            self.errors.append((self.url, f"console.{params['type']}: {text}"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append((self.url, f"{entry.get('source')}: {entry.get('text')} "
                                          f"{entry.get('url', '')}".strip()))
        return message

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.settimeout(60)
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(message.get("method") == event for message in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            self.events.append(self._receive())
        self.events.clear()

    def evaluate(self, expression: str, await_promise: bool = True):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression,
                           awaitPromise=await_promise, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]!r} failed on {self.url}: "
                               f"{result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 20):
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} not true within {timeout} s on {self.url}")
            time.sleep(0.1)

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def browser():
    executable = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    if executable is None:
        pytest.fail("Chromium is not installed: run `make browser-test`, which installs it "
                    "(apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="ebflow-chromium-")
    process = subprocess.Popen(
        [executable, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--hide-scrollbars", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{executable} did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank",
                                         method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            target = json.load(response)
        devtools = DevTools(target["webSocketDebuggerUrl"])
        devtools.call("Page.enable")
        devtools.call("Runtime.enable")
        devtools.call("Log.enable")
        desktop(devtools)
        yield devtools
        devtools.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


def desktop(devtools: DevTools) -> None:
    devtools.call("Emulation.setDeviceMetricsOverride", width=DESKTOP_WIDTH,
                  height=DESKTOP_HEIGHT, deviceScaleFactor=1, mobile=False)


def phone(devtools: DevTools) -> None:
    devtools.call("Emulation.setDeviceMetricsOverride", width=PHONE_WIDTH, height=PHONE_HEIGHT,
                  deviceScaleFactor=1, mobile=True)


def navigate(devtools: DevTools, url: str) -> None:
    devtools.events.clear()
    devtools.url = url
    devtools.call("Page.navigate", url=url)
    devtools.wait_for("Page.loadEventFired")


def screenshot(devtools: DevTools, path: Path, width: int, max_height: int = 6000) -> None:
    metrics = devtools.call("Page.getLayoutMetrics")
    height = min(int(metrics["cssContentSize"]["height"]), max_height)
    shot = devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def page_name(url: str) -> str:
    return Path(urllib.parse.urlparse(url).path).stem or "index"


def visit(devtools: DevTools, url: str) -> dict:
    """Load ``url`` once and probe it: at 1280 px (the page probe; a click on each of its
    contents links, in ``jumps``), then at 390 px (``narrow``); save both screenshots."""
    navigate(devtools, url)
    probe = devtools.evaluate(PAGE_PROBE_JS)
    screenshot(devtools, SCREENSHOT_DIR / f"{page_name(url)}.png", DESKTOP_WIDTH)
    targets = [urllib.parse.unquote(href[1:]) for href in probe["pageToc"]
               if href.startswith("#")]
    probe["jumps"] = devtools.evaluate(f"({JUMP_JS})({json.dumps(targets)})") if targets else []
    devtools.evaluate("window.scrollTo(0, 0)")
    phone(devtools)
    try:
        probe["narrow"] = devtools.evaluate(NARROW_PROBE_JS)
        screenshot(devtools, SCREENSHOT_DIR / "mobile" / f"{page_name(url)}.png", PHONE_WIDTH)
    finally:
        desktop(devtools)
    return probe


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.fixture(scope="module")
def pages(site_url, browser) -> dict[str, dict]:
    """Probe of every page in the sidebar of index.html, keyed by its file name."""
    status, _ = http_get(site_url + "index.html")
    assert status == 200, f"index.html: HTTP {status}"
    index = visit(browser, site_url + "index.html")
    probes = {"index.html": index}
    for link in index["sidebar"]:
        name = link["href"].split("#")[0]
        if name in probes:
            continue
        status, _ = http_get(site_url + name)
        assert status == 200, f"{name} (sidebar link '{link['text']}'): HTTP {status}"
        probes[name] = visit(browser, site_url + name)
    return probes


def toc_pages(pages) -> list[tuple[str, str]]:
    """(source file, HTML page) of every file of the toc, in order."""
    config = load_config(ROOT / "myst.yml")
    files = toc_files(config["project"]["toc"])
    sidebar = [entry for entry in pages["index.html"]["sidebar"] if not entry["generated"]]
    assert len(files) == len(sidebar), "the sidebar and the toc of myst.yml differ"
    return [(file, entry["href"].split("#")[0])
            for file, entry in zip(files, sidebar, strict=True)]


def test_sidebar_lists_every_toc_file(pages):
    config = load_config(ROOT / "myst.yml")
    files = toc_files(config["project"]["toc"])
    full_sidebar = pages["index.html"]["sidebar"]
    generated = [entry["href"] for entry in full_sidebar if entry["generated"]]
    assert generated == [API_PAGE], f"theme pages in the sidebar: {generated}"
    sidebar = [entry for entry in full_sidebar if not entry["generated"]]
    assert len(sidebar) == len(files), (
        f"the sidebar has {len(sidebar)} entries, the toc of myst.yml {len(files)} files")
    texts = [entry["text"] for entry in sidebar]
    for position, (file, entry) in enumerate(zip(files, sidebar, strict=True)):
        meta = front_matter(ROOT / file)
        titles = {meta.get("short_title"), meta.get("title")} - {None}
        if position == 0:  # the landing page is "Welcome"
            continue
        assert any(title in entry["text"] for title in titles), (
            f"sidebar entry {position} is {entry['text']!r}, expected {file} ({titles}); "
            f"sidebar: {texts}")
    for name, probe in pages.items():
        assert [entry["href"] for entry in probe["sidebar"]] == \
            [entry["href"] for entry in full_sidebar], f"{name} has a different sidebar"


def test_math_is_typeset(pages):
    for name, probe in pages.items():
        assert probe["katexErrors"] == 0, f"{name}: {probe['katexErrors']} math errors"
        raw = RAW_MATH.findall(probe["text"])
        assert not raw, f"{name}: untypeset math in the text: {raw[:5]}"
        if re.match(r"(Chapter|Appendix) ", probe["chapterLabel"]):
            assert probe["katex"] > 0, f"{name}: a chapter without typeset (KaTeX) math"
    assert sum(probe["katex"] for probe in pages.values()) > 0


def test_every_image_loads(pages, site_url):
    for name, probe in pages.items():
        for image in probe["images"]:
            assert image["width"] > 0, f"{name}: image {image['src']} did not load"
            url = urllib.parse.urljoin(site_url + name, image["src"])
            if url.startswith("data:"):
                continue
            status, body = http_get(url)
            assert status == 200, f"{name}: image {image['src']}: HTTP {status}"
            is_svg = body.lstrip()[:5] in (b"<svg ", b"<?xml")
            assert is_svg or any(body.startswith(magic) for magic in IMAGE_MAGIC), (
                f"{name}: {image['src']} is not a PNG/JPEG/GIF/SVG file")


def test_internal_links_resolve(pages, site_url):
    ids = {name: set(probe["ids"]) for name, probe in pages.items()}
    broken = []
    for name, probe in pages.items():
        for href in probe["links"]:
            parsed = urllib.parse.urlparse(href)
            if parsed.scheme or href.startswith("//") or href.startswith("mailto:"):
                continue  # external
            target = urllib.parse.unquote(parsed.path) or name
            if not (HTML_DIR / target).is_file():
                broken.append(f"{name}: {href} (no file {target})")
                continue
            if parsed.fragment and target.endswith(".html"):
                if target not in ids:
                    html = (HTML_DIR / target).read_text(encoding="utf-8")
                    ids[target] = set(re.findall(r'\bid="([^"]+)"', html))
                if parsed.fragment not in ids[target]:
                    broken.append(f"{name}: {href} (no id {parsed.fragment} in {target})")
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    assert os.listdir(SCREENSHOT_DIR), "no screenshots were written"


# ---- the reader's tools ----------------------------------------------------------------------
def chapter_page(pages, number: int) -> str:
    """The HTML page of chapter ``number`` (its source file starts with ``<NN>-``)."""
    prefix = f"{number:02d}-"
    found = [html for file, html in toc_pages(pages)
             if file.startswith("chapters/") and Path(file).name.startswith(prefix)]
    assert found, f"no chapter file chapters/{prefix}*.md in the toc"
    return found[0]


def distinctive_word(pages, page: str) -> str:
    """A word of ``page``'s visible text that as few other pages as possible use (the most
    frequent such word on ``page``), so that a search for it must find ``page``."""
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z]{7,}", text.lower())

    own = words(pages[page]["text"])
    others = [set(words(probe["text"])) for name, probe in pages.items() if name != page]
    counts = {word: own.count(word) for word in set(own)}
    return min(counts, key=lambda word: (sum(word in other for other in others),
                                         -counts[word], word))


SEARCH_RESULTS_JS = r"""
(() => {
  const links = [...document.querySelectorAll("#search-results a")];
  return links.length ? links.map(a => a.getAttribute("href")) : null;
})()
"""


def test_search_finds_chapter_5(pages, site_url, browser):
    chapter = chapter_page(pages, 5)
    word = distinctive_word(pages, chapter)
    navigate(browser, site_url + "search.html")
    browser.evaluate("document.getElementById('search-query').focus()")
    browser.call("Input.insertText", text=word)
    hrefs = browser.wait_until(SEARCH_RESULTS_JS)
    screenshot(browser, SCREENSHOT_DIR / "search.png", DESKTOP_WIDTH)
    found = [href.split("#")[0] for href in hrefs]
    assert chapter in found[:10], (
        f"searching {word!r} (a word of {chapter}) does not find {chapter} in the first "
        f"results: {hrefs[:10]}")
    for href in hrefs:  # every result links to a page, and to a section that exists there
        name, _, fragment = href.partition("#")
        assert name in pages, f"search result {href} is no page of the book"
        assert not fragment or fragment in pages[name]["ids"], (
            f"search result {href}: no id {fragment} in {name}")
    first = next(href for href in hrefs if href.split("#")[0] == chapter)
    assert "#" in first, f"the result on {chapter} links to the page, not to a section"

    # the sidebar's search box submits to search.html?q=...
    navigate(browser, site_url + "search.html?q=" + urllib.parse.quote(word))
    hrefs = browser.wait_until(SEARCH_RESULTS_JS)
    assert chapter in [href.split("#")[0] for href in hrefs][:10]


def test_page_contents_jump_to_their_sections(pages):
    for name, probe in pages.items():
        toc = probe["pageToc"]
        if re.match(r"(Chapter|Appendix) ", probe["chapterLabel"]) or name == API_PAGE:
            assert len(toc) >= 2, f"{name} has no 'on this page' contents"
        if not toc:
            continue
        targets = [urllib.parse.unquote(href[1:]) for href in toc]
        assert all(href.startswith("#") for href in toc), f"{name}: contents {toc}"
        missing = [target for target in targets if target not in probe["ids"]]
        assert not missing, f"{name}: contents link to missing ids {missing}"
        assert [jump["id"] for jump in probe["jumps"]] == targets
        for jump in probe["jumps"]:  # clicked in visit()
            target = jump["id"]
            assert jump["hash"] == target, f"{name}: the link to #{target} set #{jump['hash']}"
            assert jump["top"] >= -2 and (jump["top"] <= 60 or jump["atBottom"]), (
                f"{name}: after a click on its contents link, #{target} is at "
                f"{jump['top']:.0f} px from the top of the viewport")


def test_code_blocks_have_copy_buttons(pages, site_url, browser):
    for name, probe in pages.items():
        assert probe["copyButtons"] == probe["codeBlocks"], (
            f"{name}: {probe['codeBlocks']} code blocks, {probe['copyButtons']} copy buttons")
    assert sum(probe["codeBlocks"] for probe in pages.values()) > 0
    chapter = chapter_page(pages, 5)
    navigate(browser, site_url + chapter)
    browser.call("Browser.grantPermissions", origin=site_url.rstrip("/"),
                 permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
    browser.call("Emulation.setFocusEmulationEnabled", enabled=True)  # headless: no focus
    copied = browser.evaluate("""(async () => {
      const block = document.querySelector(".code-block");
      block.querySelector(".copy-button").click();
      await new Promise(done => setTimeout(done, 200));
      return {code: block.querySelector("pre").innerText.replace(/\\n$/, ""),
              clipboard: await navigator.clipboard.readText(),
              label: block.querySelector(".copy-button").textContent};
    })()""")
    assert copied["label"] == "Copied", f"the copy button says {copied['label']!r}"
    assert copied["clipboard"] == copied["code"], "the clipboard does not hold the code"


def test_notebook_downloads_are_valid(pages, site_url):
    import jupytext
    import nbformat

    notebooks = 0
    for file, html in toc_pages(pages):
        downloads = {item["name"]: item["href"] for item in pages[html]["downloads"]}
        if "kernelspec" not in front_matter(ROOT / file):
            assert not downloads, f"{html} ({file}, no notebook) offers {sorted(downloads)}"
            continue
        notebooks += 1
        stem = Path(file).stem
        assert set(downloads) == {f"{stem}.ipynb", f"{stem}.md"}, (
            f"{html}: downloads {sorted(downloads)}, expected {stem}.ipynb and {stem}.md")
        status, body = http_get(urllib.parse.urljoin(site_url + html, downloads[f"{stem}.ipynb"]))
        assert status == 200, f"{html}: {stem}.ipynb: HTTP {status}"
        notebook = nbformat.reads(body.decode("utf-8"), as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code, f"{stem}.ipynb has no code cells"
        assert all(not cell.outputs for cell in code), f"{stem}.ipynb has outputs"
        assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"
        source = [cell.source for cell in jupytext.read(ROOT / file).cells
                  if cell.cell_type == "code"]
        assert [cell.source for cell in code] == source, f"{stem}.ipynb differs from {file}"
        assert len(body) < 400_000, f"{stem}.ipynb is {len(body)} bytes"
        status, body = http_get(urllib.parse.urljoin(site_url + html, downloads[f"{stem}.md"]))
        assert status == 200 and body == (ROOT / file).read_bytes(), (
            f"{html}: {stem}.md is not {file}")
    assert notebooks > 0


def test_alt_texts_describe_the_figures(pages):
    count = 0
    for name, probe in pages.items():
        for image in probe["images"]:
            count += 1
            alt = (image["alt"] or "").strip()
            assert alt, f"{name}: image {image['src']} has no alt text"
            assert not OBJECT_REPR.search(alt), f"{name}: {image['src']} has alt {alt!r}"
            if image["caption"]:  # the alt text is the caption, its math as TeX words
                caption = image["caption"].lower()
                words = re.findall(r"[a-z]{4,}", alt.lower())
                shared = [word for word in words if word in caption]
                assert words and len(shared) >= 0.6 * len(words), (
                    f"{name}: alt {alt!r} of {image['src']} is not its caption {caption!r}")
    assert count > 0


def public_api() -> dict[str, object]:
    """Qualified name -> object of every name in ``ebflow_lite.__all__``, and in the
    ``__all__`` (else the public names) of each module it names and of every subpackage."""
    import ebflow_lite

    expected: dict[str, object] = {}
    modules = []
    for name in ebflow_lite.__all__:
        value = getattr(ebflow_lite, name)
        expected[f"ebflow_lite.{name}"] = value
        if inspect.ismodule(value):
            modules.append(value)
    for info in pkgutil.walk_packages(ebflow_lite.__path__, prefix="ebflow_lite."):
        if info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
            modules.append(importlib.import_module(info.name))
    for module in modules:
        names = getattr(module, "__all__", None)
        if names is None:
            names = [name for name, value in vars(module).items()
                     if not name.startswith("_") and not inspect.ismodule(value)
                     and getattr(value, "__module__", module.__name__) == module.__name__]
        for name in names:
            expected[f"{module.__name__}.{name}"] = getattr(module, name)
    return expected


API_PROBE_JS = r"""
((ids) => ids.map(id => {
  const entry = document.getElementById(id);
  if (!entry) { return {id, found: false}; }
  const head = entry.querySelector(":scope > .api-head");
  const signature = head && head.querySelector(".api-signature");
  const doc = entry.querySelector(":scope > .api-doc");
  return {id, found: true, signature: signature ? signature.innerText.trim() : "",
          doc: doc ? doc.innerText.trim() : ""};
}))
"""


def test_api_reference_lists_every_public_name(pages, site_url, browser):
    assert API_PAGE in pages, "the sidebar does not link the API reference"
    expected = public_api()
    assert len(expected) > 20
    navigate(browser, site_url + API_PAGE)
    probes = browser.evaluate(f"{API_PROBE_JS}({json.dumps(sorted(expected))})")
    problems = []
    for probe in probes:
        name, value = probe["id"], expected[probe["id"]]
        if not probe["found"]:
            problems.append(f"{name}: not on the page")
            continue
        if (inspect.isclass(value) or inspect.isfunction(value)) and \
                not probe["signature"].startswith("("):
            problems.append(f"{name}: no signature (got {probe['signature']!r})")
        own_doc = value.__doc__ if inspect.isclass(value) or inspect.isroutine(value) or \
            inspect.ismodule(value) else None
        if own_doc and own_doc.strip() and not probe["doc"]:
            problems.append(f"{name}: has a docstring, the page shows none")
    assert not problems, f"API reference ({API_PAGE}):\n" + "\n".join(problems)
    screenshot(browser, SCREENSHOT_DIR / "api-reference-top.png", DESKTOP_WIDTH, 2500)


def luminance(css_colour: str) -> float:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


COLOURS_JS = r"""
(() => ({background: getComputedStyle(document.body).backgroundColor,
         text: getComputedStyle(document.body).color,
         code: getComputedStyle(document.querySelector(".highlight") || document.body)
                   .backgroundColor}))()
"""


def test_colour_scheme_follows_the_system(pages, site_url, browser):
    chapter = chapter_page(pages, 5)
    navigate(browser, site_url + chapter)
    light = browser.evaluate(COLOURS_JS)
    assert luminance(light["background"]) > 0.9 and luminance(light["text"]) < 0.3, light
    browser.call("Emulation.setEmulatedMedia",
                 features=[{"name": "prefers-color-scheme", "value": "dark"}])
    try:
        for name in ("index.html", chapter, API_PAGE, "search.html"):
            navigate(browser, site_url + name)
            dark = browser.evaluate(COLOURS_JS)
            assert luminance(dark["background"]) < 0.2, f"{name} in dark mode: {dark}"
            assert luminance(dark["text"]) > 0.6, f"{name} in dark mode: {dark}"
            assert luminance(dark["code"]) < 0.2, f"{name}: light code blocks in dark mode"
            screenshot(browser, SCREENSHOT_DIR / "dark" / f"{page_name(name)}.png",
                       DESKTOP_WIDTH, 3000)
    finally:
        browser.call("Emulation.setEmulatedMedia", features=[])


def test_phone_width_has_no_horizontal_scroll(pages, site_url, browser):
    navigate(browser, site_url + "search.html")
    phone(browser)
    try:
        narrow = {name: probe["narrow"] for name, probe in pages.items()}
        narrow["search.html"] = browser.evaluate(NARROW_PROBE_JS)
        screenshot(browser, SCREENSHOT_DIR / "mobile" / "search.png", PHONE_WIDTH)
    finally:
        desktop(browser)
    problems = []
    for name, probe in narrow.items():
        assert probe["width"] == PHONE_WIDTH
        if probe["scrollWidth"] > probe["width"] or probe["zoom"] < 0.99:
            problems.append(f"{name}: {probe['scrollWidth']} px wide at {probe['width']} px "
                            f"(zoomed out to {probe['zoom']:.2f}): {probe['wide']}")
        for image in probe["images"]:
            if not image["width"] or not image["naturalHeight"]:
                continue
            shown = image["width"] / image["height"]
            natural = image["naturalWidth"] / image["naturalHeight"]
            if abs(shown - natural) > 0.02 * natural:
                problems.append(f"{name}: {image['src']} is distorted ({image['width']:.0f}"
                                f"x{image['height']:.0f} for {image['naturalWidth']}x"
                                f"{image['naturalHeight']})")
            if image["right"] > probe["width"] + 1:
                problems.append(f"{name}: {image['src']} overflows the viewport")
    assert not problems, f"at {PHONE_WIDTH} px:\n" + "\n".join(problems)


def test_no_console_errors(pages, browser):
    """Runs last: every page this module opened (the fixture's and the tests' visits)."""
    assert pages
    errors = [f"{page_name(url)}: {message}" for url, message in browser.errors]
    assert not errors, "console errors:\n" + "\n".join(errors[:30])
