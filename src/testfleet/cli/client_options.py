"""``--token`` and ``--token-file`` on every command that talks to a coordinator.

Callers: every client command is decorated with :func:`takes_credentials`
(``tasks``, ``submit``, ``results compare``, ``sql``, ``tokens list``, ...),
and :func:`testfleet.cli.app.client_for` reads what was given through
:func:`given_credentials`. The options are added here once rather than written
into each command's signature: the command's own function never sees them,
so none can forget to pass them on. ``$TESTFLEET_TOKEN`` and
``$TESTFLEET_TOKEN_FILE`` work without the options
(:mod:`testfleet.security.credentials`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from testfleet.security.credentials import TOKEN_ENV, TOKEN_FILE_ENV

F = TypeVar("F", bound=Callable[..., Any])

#: (token, token file) given on the command line of the command now running.
_GIVEN: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "testfleet_credentials", default=(None, None)
)

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


def given_credentials() -> tuple[str | None, str | None]:
    """The ``--token`` and ``--token-file`` of the running command (None when not given)."""
    return _GIVEN.get()


def takes_credentials(command: F) -> F:
    """``command`` with ``--token`` and ``--token-file`` added to its options; they
    are held for :func:`given_credentials` while it runs."""
    signature = inspect.signature(command, eval_str=True)
    hints = get_type_hints(command, include_extras=True)

    @functools.wraps(command)
    def wrapper(
        *args: Any, token: str | None = None, token_file: Path | None = None, **kw: Any
    ) -> Any:
        reset = _GIVEN.set((token, None if token_file is None else str(token_file)))
        try:
            return command(*args, **kw)
        finally:
            _GIVEN.reset(reset)

    extra = [
        inspect.Parameter(
            "token", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=TokenOption
        ),
        inspect.Parameter(
            "token_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=TokenFileOption
        ),
    ]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra]
    )
    wrapper.__annotations__ = {**hints, "token": TokenOption, "token_file": TokenFileOption}
    return wrapper  # type: ignore[return-value]
