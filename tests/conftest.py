"""The whole suite's one rule about skips: in CI, a test never skips for a missing tool.

Some tests need an optional tool: torch and transformers (the bench extra),
pytest-xdist, git, make. On a developer's machine without one they skip, and
their skip reason starts with ``needs`` (``pytest.importorskip``'s own
``could not import`` counts too). ``make test`` sets
``TESTFLEET_REQUIRE_TOOLS=1``, and there such a skip fails the run: CI installs
every tool, so a skip there means an install step went missing and the tests
that guard that area silently stopped running (issue 9).

Other skips (a test for macOS on Linux, a check that only means something
without an NVIDIA driver) do not match and stay skips.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    # Imported where used: this conftest is also copied alone into a scratch
    # suite (tests/unit/tooling/test_tooling_tool_skips.py), where tests/ is
    # not importable.
    from pg_cluster import PgCluster

#: Set by ``make test`` (and so by ``.ci/run``).
REQUIRE_TOOLS_ENV = "TESTFLEET_REQUIRE_TOOLS"
#: The skip reasons that mean "a tool is missing".
TOOL_SKIP_PREFIXES = ("needs ", "could not import ")

_tool_skips: list[str] = []

# `testfleet run` keeps each command's collected test list in the user's cache
# (fleetrun/prestart.py) to start its next run before collecting. The test
# processes and every fleet they start keep theirs in a directory of this
# session's own, so no test starts chunks from a list another test (or an
# earlier session) stored, and nothing is left in the home directory.
os.environ.setdefault("TESTFLEET_SUITE_CACHE", tempfile.mkdtemp(prefix="testfleet-suites-"))


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if reason.startswith(TOOL_SKIP_PREFIXES):
            _tool_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1" and _tool_skips and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get(REQUIRE_TOOLS_ENV) != "1" or not _tool_skips:
        return
    terminalreporter.write_sep("=", f"{len(_tool_skips)} test(s) skipped for a missing tool")
    terminalreporter.write_line(
        f"{REQUIRE_TOOLS_ENV}=1 (make test): every tool the tests use must be installed"
    )
    for line in _tool_skips:
        terminalreporter.write_line(f"  {line}")


# -- a private PostgreSQL for the store's tests (tests/pg_cluster.py) ----------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL server per test process, removed at the session's end.

    A template database holding the schema is made once, so each test's fresh
    database (``pg_dsn``) is a cheap copy of it.
    """
    from pg_cluster import PgCluster

    from testfleet.store.postgres import PostgresStore

    cluster = PgCluster()
    try:
        template = cluster.new_database(empty=True)
        PostgresStore(cluster.dsn(template)).close()
        cluster.set_template(template)
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A DSN of a fresh database (already holding the schema) for this test alone."""
    name = pg_cluster.new_database()
    yield pg_cluster.dsn(name)
    pg_cluster.drop_database(name)


@pytest.fixture(params=["duckdb", "postgres"])
def any_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The store under test on each database: a DuckDB ``:memory:`` one and a
    PostgreSQL one (the store suite runs on both; issue 13)."""
    from testfleet.store import Store
    from testfleet.store.postgres import PostgresStore

    opened: Any
    if request.param == "duckdb":
        opened = Store(":memory:")
    else:
        opened = PostgresStore(request.getfixturevalue("pg_dsn"))
    with opened:
        yield opened


@pytest.fixture(params=["duckdb", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives, for tests that open it more than once (reopening is
    recovery): a DuckDB file, or a fresh PostgreSQL database's DSN. Open it with
    ``testfleet.store.open_store``."""
    if request.param == "duckdb":
        return str(tmp_path / "fleet.duckdb")
    return str(request.getfixturevalue("pg_dsn"))
