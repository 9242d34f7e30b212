"""The worker's Chromium: finding it, the flags it runs with, and the loopback
site its pages load from.

Callers: the capability probe (:mod:`testfleet.worker.browser_probe`) and the
browser benchmark backend (``worker/benchmarking/backends/browser.py``), both
in child processes. Both drive the system's Chromium through Playwright with
``executable_path``; Playwright's own browsers are never downloaded
(``playwright install`` is not part of this project).

Decisions:

* The browser is the one given with ``testfleet worker --browser PATH``
  (which sets :data:`BROWSER_ENV` for the worker's children) or the first of
  :data:`CHROMIUM_NAMES` on PATH.
* Pages are served by :class:`LoopbackSite` on 127.0.0.1 at a random port
  under a random path, so nothing is fetched from outside and another run's
  page cannot be mistaken for this one's. The site sends COOP/COEP headers,
  which make the page cross-origin isolated: WebAssembly threads need
  SharedArrayBuffer, which needs that. Loopback is a secure context, which
  ``navigator.gpu`` needs.
* :func:`guard_page` aborts every request for another origin and records
  it, so a page that asks for the network fails loudly instead of quietly
  using something this machine did not serve.
* WebGPU: headless Chromium offers no adapter by default; with
  ``--enable-unsafe-webgpu`` it offers its software adapter (SwiftShader)
  on a machine without a GPU (measured here: Chromium 156 headless on
  Debian 12). The flag is always passed, so the probe and a run see the same
  browser.
"""

from __future__ import annotations

import http.server
import os
import secrets
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Set by ``testfleet worker --browser``: the Chromium its children use.
BROWSER_ENV = "TESTFLEET_BROWSER"

#: Names a Chromium goes by on PATH, in the order they are tried.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: V8 compiles a WebAssembly function with its optimising compiler (TurboFan)
#: *synchronously*, on the calling thread, the moment dynamic tiering finds it
#: hot, instead of on a background thread whose result arrives some passes
#: later. So the hot functions are optimised during the warm-up passes, and
#: the timed passes run that code from the first one.
#:
#: Measured 2026-12-07 (2-layer BERT, batch 1, Chromium 156.0.8078.129 pinned
#: to one core; p50 of blocks of 20 passes after 5 warm-ups):
#:
#: * V8's default: 88, 46, 44, 48 ms (optimised code arriving in the
#:   background, so the warm-up's length decided which code was timed);
#: * ``--no-wasm-dynamic-tiering`` (every function, in the background): 374,
#:   387, 414, 243 ms: one core compiling the whole module while the page
#:   runs unoptimised code; this flag was used for a day and measured that;
#: * ``--no-liftoff`` (TurboFan from the first call, the flag before): this
#:   Chromium never finished instantiating onnxruntime-web's module with it;
#: * this flag: 41, 40, 52, 41 ms.
#:
#: The steady state is what a user's browser reaches too, only later.
WASM_TIERING_FLAG = "--js-flags=--wasm-sync-tier-up"

#: Flags for every launch (Playwright adds --headless and a fresh
#: --user-data-dir, a temporary profile it removes on close). No
#: --disable-gpu: it turns WebGPU off.
CHROMIUM_ARGS = (
    "--no-sandbox",  # containers and CI run as root, where the sandbox cannot start
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--enable-unsafe-webgpu",
    WASM_TIERING_FLAG,
)


class BrowserNotFoundError(RuntimeError):
    """``--browser`` (or $TESTFLEET_BROWSER) names no executable file."""


def find_chromium(explicit: str | None = None) -> Path | None:
    """The Chromium to use: ``explicit`` (else $TESTFLEET_BROWSER) when given,
    else the first of :data:`CHROMIUM_NAMES` on PATH; None when there is none.

    A browser that was named but is not there is an error (the operator asked
    for it), while a machine with no Chromium at all simply has none.
    """
    named = explicit or os.environ.get(BROWSER_ENV) or None
    if named is not None:
        path = Path(named).expanduser()
        resolved = shutil.which(str(path)) if not path.is_file() else str(path)
        if resolved is None or not os.access(resolved, os.X_OK):
            raise BrowserNotFoundError(
                f"--browser {named}: no executable there; give the path of a Chromium "
                "(e.g. /usr/bin/chromium) or leave --browser out to look on PATH"
            )
        return Path(resolved)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return None


@dataclass
class LoopbackSite:
    """A throw-away web site on 127.0.0.1: a random port and a random path.

    ``files`` maps a name under the site's path to a file on disk, ``pages``
    a name to bytes served as they are (an HTML page, say). Anything else is
    404. Start with :meth:`start` (or ``with``), stop with :meth:`close`.
    """

    files: Mapping[str, Path] = field(default_factory=dict)
    pages: Mapping[str, bytes] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: "/" + secrets.token_urlsafe(12) + "/")
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        assert self._server is not None, "start() the site first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, name: str) -> str:
        return self.origin + self.prefix + name

    def start(self) -> LoopbackSite:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib names it so
                body, kind = site._lookup(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                # Cross-origin isolation: SharedArrayBuffer, so wasm threads.
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the benchmark's stderr is its log; requests are noise there

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _lookup(self, path: str) -> tuple[bytes | None, str]:
        if not path.startswith(self.prefix):
            return None, ""
        name = path[len(self.prefix) :]
        if name in self.pages:
            return self.pages[name], _content_type(name)
        file = self.files.get(name)
        if file is None or not file.is_file():
            return None, ""
        return file.read_bytes(), _content_type(name)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackSite:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _content_type(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower()
    return {
        "html": "text/html; charset=utf-8",
        "js": "text/javascript",
        "mjs": "text/javascript",
        "wasm": "application/wasm",
        "json": "application/json",
    }.get(suffix, "application/octet-stream")


def guard_page(context: Any, origin: str, refused: list[str]) -> None:
    """Abort every request of a Playwright browser ``context`` that is not for
    ``origin``, appending its URL to ``refused`` (the caller fails the run on
    any), so a page cannot reach outside this machine's loopback site."""

    def route(route: Any) -> None:
        url = str(route.request.url)
        if url == origin or url.startswith(origin + "/"):
            route.continue_()
        else:
            refused.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", route)
