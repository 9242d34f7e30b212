"""The record's caps tie the session child to the record model: one definition
(``domain/pytest_limits.py``), checked end to end.

A real session child (loading the limits by path, as under any interpreter)
reduces reports at exactly each cap and one past it; every record must come
through the pipe and validate as a ``TestRecord`` with the values whole at the
cap and cut to the cap past it, never replaced by the "could not read" record
that a drift between the two sides would produce (and whose node id could no
longer match the chunk's, dropping the test as a stray).
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from testfleet.domain import pytest_limits as limits
from testfleet.domain.pytest_tasks import TestPhase, TestRecord
from testfleet.worker.pytest_sessions.sessions import Activation, SessionKey, SessionPool

LONGREPR = limits.MAX_LONGREPR_CHARS
SECTION = limits.MAX_SECTION_CHARS
WARNING_CATEGORY = limits.MAX_WARNING_CATEGORY_CHARS
SKIPPED = "Skipped: "

PROJECT = f"""
import warnings

import pytest


def make_category(size):
    return type("W" * size, (UserWarning,), {{}})


@pytest.mark.parametrize("extra", [0, 1], ids=["at_cap", "past_cap"])
def test_sized(extra, record_property):
    record_property("p", "y" * ({SECTION} + extra))
    warnings.warn("w" * ({LONGREPR} + extra), make_category({WARNING_CATEGORY} + extra))
    pytest.fail("x" * ({LONGREPR} + extra), pytrace=False)


@pytest.mark.parametrize("extra", [0, 1], ids=["at_cap", "past_cap"])
def test_skipped(extra):
    # pytest's reason is "Skipped: " and the message.
    pytest.skip("r" * ({LONGREPR - len(SKIPPED)} + extra))
"""


@pytest.fixture
async def pool() -> AsyncIterator[SessionPool]:
    pool = SessionPool(kill_grace_seconds=0.5, keep_zygotes=False)
    yield pool
    await pool.close()


async def test_records_at_and_past_each_cap_come_through_the_pipe(
    pool: SessionPool, tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_sizes.py").write_text(textwrap.dedent(PROJECT))
    key = SessionKey(
        run_id="run-limits",
        project=str(project),
        python=sys.executable,
        args=(),
        env=(),
        full_collection=True,
    )
    activation = Activation(env=dict(os.environ), work_dir=tmp_path / "work", worker_id="w")
    session, _ = await pool.acquire(key, activation)
    node_ids = [
        f"test_sizes.py::{name}[{size}]"
        for name in ("test_sized", "test_skipped")
        for size in ("at_cap", "past_cap")
    ]
    batches: list[list[TestRecord]] = []
    end = await session.run_chunk(node_ids, {}, batches.append)
    assert end.finished, end
    records = {record.nodeid: record for batch in batches for record in batch}
    assert sorted(records) == sorted(node_ids)  # none dropped, none renamed

    def fits(text: str, limit: int, whole: str | None) -> bool:
        """At the cap the text is whole; past it, cut to within the cap (the cut's
        marker leaves room for the largest count, so it may be a few short)."""
        if whole is not None:
            return text == whole
        return len(text) <= limit and "characters cut by testfleet" in text

    for size, at_cap in (("at_cap", True), ("past_cap", False)):
        sized = records[f"test_sizes.py::test_sized[{size}]"]
        call = next(p for p in sized.phases if p.when is TestPhase.CALL)
        assert "could not read" not in call.longrepr
        assert fits(call.longrepr, LONGREPR, "x" * LONGREPR if at_cap else None)
        ((_, value),) = call.user_properties
        assert fits(value, SECTION, "y" * SECTION if at_cap else None)
        (warning,) = sized.warnings
        assert fits(warning.message, LONGREPR, "w" * LONGREPR if at_cap else None)
        # A class name is cut, not marked (it stays a name).
        assert warning.category == "W" * WARNING_CATEGORY

        skipped = records[f"test_sizes.py::test_skipped[{size}]"]
        skip = next(p for p in skipped.phases if p.skip is not None).skip
        assert skip is not None
        whole_reason = SKIPPED + "r" * (LONGREPR - len(SKIPPED))
        assert fits(skip.reason, LONGREPR, whole_reason if at_cap else None)
    pool.release(session)
