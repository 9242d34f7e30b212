"""The coordinator's HTML pages (``/docs``) work on a fleet with no internet.

Every page the app serves as HTML is fetched from a real coordinator app
in-process; everything it references (``src``, ``href``, ``url(...)`` in the
page and in the stylesheets it links, and the OpenAPI document Swagger UI
loads) must be on the coordinator itself and answer 200. A browser is not
started: the page's references are what a browser would fetch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from testfleet.coordinator.app import create_app
from testfleet.security.tokens import Role
from testfleet.testing.tokens import bearer

BASE = "http://testserver"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "docs.duckdb"
    headers = bearer(path, Role.VIEWER)  # written before the app opens the file
    with TestClient(create_app(path), base_url=BASE, headers=headers) as client:
        yield client


class _References(HTMLParser):
    """Every ``src`` and ``href`` of a page, and the text of its inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.inline: list[str] = []
        self._in_code = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.references += [v for k, v in attrs if k in ("src", "href") and v is not None]
        self.inline += [v for k, v in attrs if k == "style" and v is not None]
        self._in_code = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_code = False

    def handle_data(self, data: str) -> None:
        if self._in_code:
            self.inline.append(data)


def css_urls(text: str) -> list[str]:
    return [u.strip("'\" ") for u in re.findall(r"url\(([^)]*)\)", text)]


def html_pages(client: TestClient) -> dict[str, str]:
    """Every page the app answers with HTML at a path without parameters."""
    pages = {}
    for route in client.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute | Route) or "{" in route.path:
            continue
        if "GET" not in (route.methods or set()):
            continue
        response = client.get(route.path)
        if response.headers.get("content-type", "").startswith("text/html"):
            assert response.status_code == 200, (route.path, response.status_code)
            pages[route.path] = response.text
    return pages


def assert_same_origin_and_served(client: TestClient, page_url: str, reference: str) -> str:
    parts = urlsplit(reference)
    if parts.scheme == "data":
        return ""
    assert not parts.scheme, f"{page_url} references another host: {reference}"
    assert not parts.netloc, f"{page_url} references another host: {reference}"
    url = urljoin(page_url, reference)
    response = client.get(url)
    assert response.status_code == 200, f"{page_url} references {reference}: {response.status_code}"
    return response.text if "css" in response.headers.get("content-type", "") else ""


def test_every_html_page_references_only_the_coordinator_and_all_of_it_answers(client):
    pages = html_pages(client)
    # Not vacuous: the documentation page is one of them.
    assert "/docs" in pages, sorted(pages)
    for path, html in pages.items():
        page_url = BASE + path
        assert not re.search(r"https?://", html), f"{path} names another host: {html}"
        parser = _References()
        parser.feed(html)
        references = parser.references + [u for text in parser.inline for u in css_urls(text)]
        assert references, f"{path} loads nothing: {html}"
        for reference in references:
            stylesheet = assert_same_origin_and_served(client, page_url, reference)
            for inner in css_urls(stylesheet):
                assert_same_origin_and_served(client, urljoin(page_url, reference), inner)


def test_swagger_ui_loads_the_openapi_document_by_a_relative_url_and_no_validator(client):
    html = client.get("/docs").text
    loaded = re.findall(r"\burl: *'([^']*)'", html)
    assert len(loaded) == 1, html
    assert not urlsplit(loaded[0]).scheme
    assert not urlsplit(loaded[0]).netloc
    assert client.get(urljoin(BASE + "/docs", loaded[0])).json()["openapi"].startswith("3.")
    # Swagger UI sends the document to validator.swagger.io unless told not to.
    assert '"validatorUrl": null' in html


def test_the_assets_are_served_with_their_content_types(client):
    html = client.get("/docs").text
    parser = _References()
    parser.feed(html)
    types = {
        urlsplit(ref).path.rsplit(".", 1)[-1]: client.get(urljoin(BASE + "/docs", ref)).headers[
            "content-type"
        ]
        for ref in parser.references
    }
    assert types["js"].startswith(("text/javascript", "application/javascript")), types
    assert types["css"].startswith("text/css"), types
    assert types["png"] == "image/png", types


def test_redoc_is_not_served_half_working(client):
    # ReDoc would load its script from a CDN: the coordinator does not offer it.
    assert client.get("/redoc").status_code == 404
