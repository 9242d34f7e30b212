"""Nothing the dashboard serves names another host: every template and static
file is read for ``http://`` and ``https://`` (licences aside, and the one
banner comment of a vendored file, which the browser never fetches)."""

from __future__ import annotations

import re
from pathlib import Path

from testfleet.coordinator.dashboard import STATIC_DIR
from testfleet.coordinator.dashboard.templates import TEMPLATES_DIR

URL = re.compile(r"https?://[^\s\"'<>)]*", re.IGNORECASE)
#: URLs in comments of vendored files, by file: none is loaded, each is checked.
KNOWN_COMMENTS = {"uPlot.iife.min.js": {"https://github.com/leeoniya/uPlot"}}
#: The vendored files the pages load (templates/base.html); all must be present.
VENDORED = {"htmx.min.js", "htmx-ext-sse.min.js", "uPlot.iife.min.js", "uPlot.min.css"}


def served_files() -> list[Path]:
    files = sorted(TEMPLATES_DIR.iterdir()) + sorted(STATIC_DIR.iterdir())
    return [f for f in files if f.is_file() and not f.name.endswith(".LICENSE")]


def test_no_template_or_static_file_references_another_host() -> None:
    found = {}
    for path in served_files():
        urls = set(URL.findall(path.read_text(encoding="utf-8")))
        unexpected = urls - KNOWN_COMMENTS.get(path.name, set())
        if unexpected:
            found[path.name] = sorted(unexpected)
    assert found == {}


def test_the_known_comment_urls_are_only_in_comments() -> None:
    text = (STATIC_DIR / "uPlot.iife.min.js").read_text(encoding="utf-8")
    for url in KNOWN_COMMENTS["uPlot.iife.min.js"]:
        start = text.index(url)
        assert text.rfind("/*", 0, start) > text.rfind("*/", 0, start)


def test_the_scanner_would_see_a_url() -> None:
    assert URL.findall('<script src="https://cdn.example/htmx.js">') == [
        "https://cdn.example/htmx.js"
    ]


def test_every_vendored_file_has_its_licence_beside_it() -> None:
    names = {f.name for f in STATIC_DIR.iterdir()}
    assert names >= VENDORED
    assert {"htmx.LICENSE", "htmx-ext-sse.LICENSE", "uPlot.LICENSE"} <= names


def test_pages_load_scripts_only_by_path() -> None:
    base = (TEMPLATES_DIR / "base.html").read_text(encoding="utf-8")
    for source in re.findall(r'(?:src|href)="([^"]*)"', base):
        assert source.startswith(("{{ base }}/", "data:")), source
