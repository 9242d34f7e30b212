"""The one exception the store raises, and the translation of DuckDB's errors into it.

Callers: every public method of :class:`testfleet.store.Store` raises only
:class:`StoreError` for storage failures, so the coordinator and the CLI catch
one type and show its message to a person. The message says what the store was
doing and, where DuckDB's own wording is obscure (a file locked by another
process), what that probably means and what to do about it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import duckdb


class StoreError(Exception):
    """A storage operation failed; the message says which one and why."""


def describe_open_error(path: str | Path, error: duckdb.Error) -> StoreError:
    """Explain why DuckDB could not open ``path`` (called by ``Store.__init__``).

    DuckDB lets one process at a time open a file for writing; a second one gets
    an ``IOException`` that mentions the lock. In testfleet that other process
    is almost always a running coordinator, so the message says so and points
    at the coordinator's API instead of the file.
    """
    message = str(error)
    if isinstance(error, duckdb.IOException) and "lock" in message.lower():
        return StoreError(
            f"cannot open the database file {str(path)!r}: another process holds its lock "
            "(DuckDB allows one process to open a file for writing). A testfleet "
            "coordinator probably has it open; stop it, or query it through its API "
            f"instead of the file. DuckDB said: {message}"
        )
    return StoreError(f"cannot open the database file {str(path)!r}: {message}")


def wrap_error(operation: str, error: Exception) -> StoreError:
    """Wrap ``error`` raised while doing ``operation`` (e.g. ``"list tasks"``)."""
    return StoreError(f"could not {operation}: {type(error).__name__}: {error}")


def rollback_after_error(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back the transaction a failed statement left open (writer and migrations).

    A failed COMMIT has already ended the transaction, and then ROLLBACK fails
    too; the original error is the one worth reporting, so this one is dropped.
    """
    with contextlib.suppress(duckdb.Error):
        connection.execute("ROLLBACK")
