"""End-to-end checks of the rendered HTML book in headless Chromium.

Serves ``_build/html`` (made by ``make book``) on 127.0.0.1, opens every page listed in the
sidebar in headless Chromium (driven over the Chrome DevTools protocol with
``websocket-client``) and checks that

* the page loads (HTTP 200) and the sidebar lists every file of the toc in ``myst.yml``;
* math is typeset by KaTeX (no raw ``$...$``, ``\\(`` or ``\\[`` left in the visible text, no
  KaTeX errors; chapters contain typeset math);
* every image loads (``naturalWidth > 0``) and is a valid PNG/JPEG/GIF/SVG file;
* every internal link resolves: the file exists and, for ``#id`` links, the id is in it.

Screenshots of each page go to ``_build/screenshots/``. Run with ``make browser-test``
(it installs Chromium when missing) or ``pytest -m browser tests/test_book_browser.py``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
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
    images: images.map(img => ({src: img.getAttribute("src"), width: img.naturalWidth})),
    katex: document.querySelectorAll(".katex").length,
    katexErrors: document.querySelectorAll(".katex-error, .math-error").length,
    text: visible.innerText,
    sidebar: [...document.querySelectorAll("nav.sidebar ul.toc a")].map(a => ({
        href: a.getAttribute("href"), text: a.innerText.trim()})),
    chapterLabel: (document.querySelector(".chapter-label") || {}).innerText || "",
  };
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

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
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
            self.events.append(json.loads(self.ws.recv()))
        self.events.clear()

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
        devtools.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                      deviceScaleFactor=1, mobile=False)
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


def visit(devtools: DevTools, url: str) -> dict:
    """Load ``url``, return the page probe, save a screenshot."""
    devtools.events.clear()
    devtools.call("Page.navigate", url=url)
    devtools.wait_for("Page.loadEventFired")
    result = devtools.call("Runtime.evaluate", expression=PAGE_PROBE_JS, awaitPromise=True,
                           returnByValue=True)
    if "exceptionDetails" in result:
        raise RuntimeError(f"page probe failed on {url}: {result['exceptionDetails']}")
    probe = result["result"]["value"]
    metrics = devtools.call("Page.getLayoutMetrics")
    height = min(int(metrics["cssContentSize"]["height"]), 6000)
    shot = devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1})
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).stem or "index"
    (SCREENSHOT_DIR / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
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


def test_sidebar_lists_every_toc_file(pages):
    config = load_config(ROOT / "myst.yml")
    files = toc_files(config["project"]["toc"])
    sidebar = pages["index.html"]["sidebar"]
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
            [entry["href"] for entry in sidebar], f"{name} has a different sidebar"


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
