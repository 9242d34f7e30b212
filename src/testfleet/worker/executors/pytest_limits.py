"""Holding a chunk of tests to its declared resources, and judging what the limits did.

Callers: :class:`~testfleet.worker.executors.pytest_run.PytestExecutor`, for a
``test`` task whose ``requirements.resources`` declare memory, cores or disk.
It begins the attempt's limits with
:func:`~testfleet.worker.executors.resource_limits.begin_limits` (as the
command executor does), runs the chunk in a session of its own started with
``AttemptLimits.preexec`` (see ``SessionKey.limited_attempt``), and asks this
module what each ending means.

Decisions:

* A limit is the test's fault, never the worker's: a session killed by the
  attempt's memory cgroup, or a test whose allocation failed at the rlimit
  (it fails with ``MemoryError`` and its session lives on), makes the chunk
  end ``out_of_memory`` (a file past the disk limit: ``resource_limit``),
  naming the tests, after every other test of the chunk has run and been
  reported as usual. Never ``worker_lost`` or ``infrastructure``: the worker
  is fine, and retrying elsewhere would fail the same way.
* A session the limits killed gives the test it was running a crash record
  that says so (the limit, and what enforced it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testfleet.domain.enums import ErrorClass
from testfleet.domain.pytest_tasks import TestOutcome, TestRecord
from testfleet.worker.executors.base import Failure
from testfleet.worker.executors.resource_limits import AttemptLimits

#: At most this many tests are named in the chunk's error message.
NAMED_TESTS = 5


@dataclass
class LimitFailures:
    """The tests of one attempt that ran into its limits, in the order seen."""

    limits: AttemptLimits
    found: dict[str, Failure] = field(default_factory=dict)

    def session_died(self, returncode: int | None, output: str) -> Failure | None:
        """Why a session that died mid-chunk died, if its limits did it (the caller
        adds this to the crash record of the test it was running)."""
        return self.limits.verdict(returncode if returncode is not None else -9, output.encode())

    def note(self, nodeid: str, failure: Failure) -> None:
        self.found.setdefault(nodeid, failure)

    def judge(self, records: list[TestRecord]) -> None:
        """Note each failed test whose report shows an allocation or write that
        failed at the limits."""
        for record in records:
            if record.outcome not in (TestOutcome.FAILED, TestOutcome.ERROR):
                continue
            verdict = self.limits.output_verdict(record.failure_text.encode(errors="replace"))
            if verdict is not None:
                self.note(record.nodeid, verdict)

    def error(self, worker_id: str) -> Failure | None:
        """The attempt's error when tests ran into its limits (None: none did)."""
        if not self.found:
            return None
        classes = {error_class for error_class, _ in self.found.values()}
        error_class = (
            ErrorClass.OUT_OF_MEMORY
            if ErrorClass.OUT_OF_MEMORY in classes
            else ErrorClass.RESOURCE_LIMIT
        )
        named = [f"{nodeid}: {message}" for nodeid, (_, message) in self.found.items()]
        more = len(named) - NAMED_TESTS
        text = "; ".join(named[:NAMED_TESTS]) + (f"; and {more} more" if more > 0 else "")
        return (
            error_class,
            f"{len(self.found)} test(s) ran past the chunk's declared resources on worker "
            f"{worker_id} (the other tests ran and were reported): {text}",
        )
