"""Options of the process commands that are checked beyond their type, each
ending the command in one line that names the option and the fix.

Callers: ``testfleet coordinator`` (``--backup-every``/``--backup-dir``,
``--enrol-ca-dir``) and ``testfleet worker`` (``--max-task-memory``,
``--disk``, ``--browser``, ``--browser-assets``) in ``cli/processes.py``,
once at start. Each imports what it checks with inside the function, as
``cli/processes.py`` does, so the CLI's start-up stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from testfleet.cli.app import fail

if TYPE_CHECKING:
    from testfleet.security.pki import CertificateAuthority


def backup_schedule(every: str | None, directory: Path | None) -> float:
    """``--backup-every`` in seconds (0: none), its directory made; a bad pair ends
    the command in one line."""
    from testfleet.cli.backup import backup_interval

    seconds = backup_interval(every)
    if seconds and directory is None:
        fail("--backup-every needs --backup-dir: the directory the backups go into")
    if directory is not None:
        if directory.exists() and not directory.is_dir():
            fail(f"--backup-dir {directory}: it exists and is not a directory")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"--backup-dir {directory}: cannot create it ({exc.strerror})")
    return seconds


def enrolment_ca_option(
    directory: Path, tls_cert: Path | None, client_ca: Path | None
) -> tuple[CertificateAuthority, Path]:
    """``--enrol-ca-dir``'s CA and the client CA it implies; bad ones end the command
    in one line (see :func:`testfleet.security.pki.enrolment_ca`)."""
    from testfleet.security.pki import PkiError, enrolment_ca

    if tls_cert is None:
        fail(
            "--enrol-ca-dir needs TLS: pass --tls-cert and --tls-key too (an enrolled "
            "worker proves who it is with its certificate, over TLS)"
        )
    try:
        return enrolment_ca(directory, client_ca)
    except PkiError as exc:
        fail(f"--enrol-ca-dir: {exc}")


def size_option(name: str, value: str | None) -> int | None:
    """A worker size option (``--max-task-memory``, ``--disk``) in bytes, or exit naming it."""
    from testfleet.domain.resources import MAX_BYTES, SIZE_RULE, parse_size

    if value is None:
        return None
    try:
        size = parse_size(value.strip())
    except ValueError as exc:
        fail(f"{name} {value}: {exc}")
    if not isinstance(size, int) or not 0 < size <= MAX_BYTES:
        fail(f"{name} {value}: expected {SIZE_RULE}, more than 0 and at most 1 PiB")
    return size


#: ``testfleet worker``'s backend detection and browser options (issue 15).
ProbeBackendsOption = Annotated[
    bool,
    typer.Option(
        "--probe-backends/--no-probe-backends",
        help="Look for ONNX Runtime, OpenVINO and a Chromium (a few seconds at start).",
    ),
]
BrowserOption = Annotated[
    str | None,
    typer.Option(
        envvar="TESTFLEET_BROWSER",
        help="Chromium for browser benchmarks (default: chromium on PATH).",
        show_default=False,
    ),
]
BrowserAssetsOption = Annotated[
    Path | None,
    typer.Option(
        envvar="TESTFLEET_BROWSER_ASSETS",
        help="onnxruntime-web's dist directory (default: the checkout's browser/, made by "
        "`make browser-assets`).",
        show_default=False,
    ),
]


def browser_settings(browser: str | None, assets: Path | None) -> None:
    """``testfleet worker --browser``/``--browser-assets``: checked now, then
    put in this process's environment, which the benchmark children inherit
    (the browser backend reads them there)."""
    import os

    from testfleet.worker.browser_assets import ASSETS_ENV, BrowserAssetsError, check_assets_dir
    from testfleet.worker.chromium import BROWSER_ENV, BrowserNotFoundError, find_chromium

    if browser is not None:
        try:
            found = find_chromium(browser)
        except BrowserNotFoundError as exc:
            fail(str(exc))
        os.environ[BROWSER_ENV] = str(found)
    if assets is not None:
        try:
            check_assets_dir(assets)
        except BrowserAssetsError as exc:
            fail(str(exc))
        os.environ[ASSETS_ENV] = str(assets.resolve())
