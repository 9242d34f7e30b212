"""Which storage failures the loop may retry: those that say the disk had no room."""

from __future__ import annotations

import errno

import duckdb
import pytest

from testfleet.store.errors import is_out_of_room, wrap_error


@pytest.mark.parametrize(
    "error",
    [
        duckdb.TransactionException(
            'Failed to commit: Could not write file "x.db.wal": No space left on device'
        ),
        duckdb.IOException('Could not write file "x.db": File too large'),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
    ],
)
def test_a_full_disk_is_retryable(error: Exception) -> None:
    assert is_out_of_room(error)
    assert wrap_error("write a batch", error).retryable


@pytest.mark.parametrize(
    "error",
    [
        duckdb.ConstraintException("Violates foreign key constraint"),
        duckdb.IOException("Could not set lock on file"),
        OSError(errno.EACCES, "Permission denied"),
    ],
)
def test_other_failures_are_not(error: Exception) -> None:
    assert not is_out_of_room(error)
    assert not wrap_error("write a batch", error).retryable
