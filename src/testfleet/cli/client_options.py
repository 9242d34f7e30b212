"""``--token``, ``--token-file`` and ``--ca`` on every command that talks to a coordinator.

Callers: every client command is decorated with :func:`takes_credentials`
(``tasks``, ``submit``, ``results compare``, ``sql``, ``tokens list``, ...),
and :func:`testfleet.cli.app.client_for` reads what was given through
:func:`given_credentials` and :func:`given_ca`. The options are added here once
rather than written into each command's signature: the command's own function
never sees them, so none can forget to pass them on. ``$TESTFLEET_TOKEN``,
``$TESTFLEET_TOKEN_FILE`` and ``$TESTFLEET_CA`` work without the options
(:mod:`testfleet.security.credentials`, :class:`testfleet.client.FleetClient`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from testfleet.client import CA_ENV
from testfleet.security.credentials import TOKEN_ENV, TOKEN_FILE_ENV

F = TypeVar("F", bound=Callable[..., Any])

#: (token, token file) given on the command line of the command now running.
_GIVEN: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "testfleet_credentials", default=(None, None)
)
#: The ``--ca`` of the command now running.
_GIVEN_CA: ContextVar[str | None] = ContextVar("testfleet_ca", default=None)

TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help=f"API token (tfk_...); default ${TOKEN_ENV}, then --token-file.",
        show_default=False,
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help=f"File holding the API token (mode 600); default ${TOKEN_FILE_ENV}.",
        show_default=False,
        dir_okay=False,
    ),
]
# Checked by FleetClient, not by typer: a file that is missing or holds no
# certificate is one line naming it (typer would draw a usage box).
CaOption = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        help="Verify an https:// coordinator's certificate with this CA (PEM); "
        f"default ${CA_ENV}, else the system's CAs.",
        show_default=False,
    ),
]


def given_credentials() -> tuple[str | None, str | None]:
    """The ``--token`` and ``--token-file`` of the running command (None when not given)."""
    return _GIVEN.get()


def given_ca() -> str | None:
    """The ``--ca`` of the running command (None when not given: ``$TESTFLEET_CA``
    or the system's CAs apply)."""
    return _GIVEN_CA.get()


def takes_credentials(command: F) -> F:
    """``command`` with ``--token``, ``--token-file`` and ``--ca`` added to its
    options; they are held for :func:`given_credentials` and :func:`given_ca`
    while it runs."""
    signature = inspect.signature(command, eval_str=True)
    hints = get_type_hints(command, include_extras=True)

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        token: str | None = None,
        token_file: Path | None = None,
        ca: Path | None = None,
        **kw: Any,
    ) -> Any:
        reset = _GIVEN.set((token, None if token_file is None else str(token_file)))
        reset_ca = _GIVEN_CA.set(None if ca is None else str(ca))
        try:
            return command(*args, **kw)
        finally:
            _GIVEN_CA.reset(reset_ca)
            _GIVEN.reset(reset)

    options = {"token": TokenOption, "token_file": TokenFileOption, "ca": CaOption}
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
        for name, option in options.items()
    ]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra]
    )
    wrapper.__annotations__ = {**hints, **options}
    return wrapper  # type: ignore[return-value]
