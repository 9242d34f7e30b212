"""``/docs``: the API's documentation page, served whole by the coordinator.

Callers: :func:`testfleet.coordinator.app.create_app` adds it to every
coordinator. A fleet often has no internet access, and FastAPI's own page
loads Swagger UI from a CDN (blank without one) and sends the OpenAPI
document to validator.swagger.io. Here the page loads Swagger UI from files
shipped in this package (``swagger_ui/``, see its README for where they come
from) under ``/docs/assets/``, the OpenAPI document by a path on the same
host, and no validator. Nothing it needs is on another host.

ReDoc (FastAPI's ``/redoc``) is turned off rather than vendored: it would be a
second megabyte-sized bundle to keep current for a second view of the same
document, and Swagger UI also lets people try the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.params import Depends
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
#: Package data (pyproject.toml's package-data ships it in wheels and sdists).
ASSETS_DIR = Path(__file__).with_name("swagger_ui")


def add_docs_page(app: FastAPI, dependencies: Sequence[Depends] = ()) -> None:
    """Serve Swagger UI's files under :data:`ASSETS_PATH` and the page at :data:`DOCS_PATH`.

    The app must be built with ``docs_url=None`` and ``redoc_url=None`` so that
    FastAPI's CDN pages are not served beside this one. A missing asset folder
    (a broken install) fails here, at start-up, not in a user's browser.
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    # ``dependencies``: the app's token check (a viewer token); the assets stay public.
    @app.get(DOCS_PATH, include_in_schema=False, dependencies=list(dependencies))
    async def docs(request: Request) -> HTMLResponse:
        # Paths, never absolute URLs: behind a proxy that mounts the coordinator
        # under a prefix (ASGI root_path), the page still loads from where it is.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API documentation",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            # Swagger UI would otherwise send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
