"""The one exception the store raises, and the translation of DuckDB's errors into it.

Callers: every public method of :class:`testfleet.store.Store` raises only
:class:`StoreError` for storage failures, so the coordinator and the CLI catch
one type and show its message to a person. The message says what the store was
doing and, where DuckDB's own wording is obscure (a file locked by another
process), what that probably means and what to do about it.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import duckdb

#: What the operating system says when a write found no room (ENOSPC, EDQUOT)
#: or went past the process's file size limit (EFBIG, ``ulimit -f``). DuckDB
#: passes the OS's words on in its own message ("Could not write file ...: No
#: space left on device"); nothing else tells these failures apart.
_NO_ROOM = ("no space left on device", "disk quota exceeded", "file too large")


class StoreError(Exception):
    """A storage operation failed; the message says which one and why.

    ``retryable``: the same write may succeed later unchanged, because it failed
    for want of room on the disk, not because of what it wrote. The coordinator
    loop retries such a commit until it succeeds (``coordinator/loop.py``) instead
    of stopping.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def is_out_of_room(error: BaseException) -> bool:
    """Whether ``error`` (DuckDB's or the OS's) says the disk had no room for a write."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    message = str(error).lower()
    return any(words in message for words in _NO_ROOM)


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
    return StoreError(
        f"could not {operation}: {type(error).__name__}: {error}",
        retryable=is_out_of_room(error),
    )


def rollback_after_error(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back the transaction a failed statement left open (writer and migrations).

    A failed COMMIT has already ended the transaction, and then ROLLBACK fails
    too; the original error is the one worth reporting, so this one is dropped.
    """
    with contextlib.suppress(duckdb.Error):
        connection.execute("ROLLBACK")


class StoreFenced(StoreError):
    """A write refused because this coordinator is no longer the leader.

    Raised by :class:`~testfleet.store.postgres.PostgresStore` when the lease
    epoch in the database is not the one the store was opened with: another
    coordinator took over (issue 13's failover). Nothing of the write was
    stored; the coordinator must stop serving, not retry.
    """

    def __init__(self, mine: int, current: int) -> None:
        super().__init__(
            f"this coordinator's leadership (epoch {mine}) has ended; epoch {current} leads now"
        )
        self.mine = mine
        self.current = current
