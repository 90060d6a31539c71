"""Where the renderer reads mystmd's site content from: its content server or a folder."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ContentSource:
    """Reads ``/config.json``, ``/content/<slug>.json`` and public assets.

    Either ``base_url`` (mystmd's content server, ``CONTENT_CDN``) or ``site_dir`` (the
    ``_build/site`` folder of ``myst build --site``) is set.
    """

    base_url: str | None = None
    site_dir: Path | None = None

    @classmethod
    def from_url(cls, url: str) -> ContentSource:
        return cls(base_url=url.rstrip("/"))

    @classmethod
    def from_directory(cls, site_dir: Path) -> ContentSource:
        if not (site_dir / "config.json").is_file():
            raise SystemExit(f"render_site: {site_dir} has no config.json (run myst build --site)")
        return cls(site_dir=site_dir)

    def bytes(self, path: str) -> bytes:
        """The bytes served at ``path`` (``/config.json``, ``/content/x.json``, ``/abc.png``)."""
        if not path.startswith("/"):
            path = "/" + path
        if self.base_url is not None:
            url = self.base_url + urllib.parse.quote(path)
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        assert self.site_dir is not None
        relative = path.lstrip("/")
        for candidate in (self.site_dir / relative, self.site_dir / "public" / relative):
            if candidate.is_file():
                return candidate.read_bytes()
        raise FileNotFoundError(f"{path} is neither in {self.site_dir} nor in its public/")

    def json(self, path: str):
        return json.loads(self.bytes(path).decode("utf-8"))
