"""testfleet's own credential variables, and an environment without them.

A task runs code that someone else submitted, so it must never inherit what
authenticates the worker (or, where a coordinator and its workers share one
environment, as in ``testfleet demo``, the coordinator) to anyone. Callers:
every place the worker starts a child on a task's behalf builds that child's
environment with :func:`without_credentials`: ``attempt_environment`` (command
and benchmark children, pytest sessions' activation), the pytest session pool
(a session child's start-up environment) and the repository cache (git, run for
a test task's repository). The task's own ``config.env`` goes on top afterwards:
a task may set any name for itself, it just never receives the worker's.

Its own module, importing nothing, so the worker's children and the CLI can
both read it cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The credential variables testfleet defines. Whoever adds a credential read
#: from the environment (the API token helpers, the TLS and database-key
#: options) adds its name here, so no task ever sees it.
CREDENTIAL_ENV_NAMES: frozenset[str] = frozenset(
    {
        "TESTFLEET_TOKEN",  # an API or worker bearer token (the CLI, `testfleet worker`)
        "TESTFLEET_TOKEN_FILE",  # where such a token is kept
        "TESTFLEET_ENROL_TOKEN",  # a one-time worker enrolment token
        "TESTFLEET_DB_KEY",  # the coordinator's database encryption key
        "TESTFLEET_DB_KEY_FILE",  # where that key is kept
        "TESTFLEET_TLS_KEY",  # a private key (or where it is kept) for TLS
        "TESTFLEET_TLS_KEY_PASSWORD",
    }
)

#: A safety net for names added without updating the list above: any
#: ``TESTFLEET_*`` variable ending in one of these is treated as a credential.
#: testfleet owns the ``TESTFLEET_`` prefix, so no user variable is caught.
CREDENTIAL_ENV_SUFFIXES: tuple[str, ...] = (
    "_TOKEN",
    "_TOKEN_FILE",
    "_KEY",
    "_KEY_FILE",
    "_SECRET",
    "_PASSWORD",
    "_PASSPHRASE",
)


def is_credential_name(name: str) -> bool:
    """Whether ``name`` is one of testfleet's credential variables (case as given:
    environment names are case-sensitive on the systems workers run on)."""
    if name in CREDENTIAL_ENV_NAMES:
        return True
    return name.startswith("TESTFLEET_") and name.endswith(CREDENTIAL_ENV_SUFFIXES)


def without_credentials(environment: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environment`` without testfleet's credential variables."""
    return {name: value for name, value in environment.items() if not is_credential_name(name)}
