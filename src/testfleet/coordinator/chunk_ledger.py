"""Each test of a pytest chunk (a ``test`` task) recorded once, as it arrives.

Callers: :class:`~testfleet.coordinator.task_lifecycle.TaskLifecycle` owns one
:class:`ChunkLedger` and hands it the records of a task's *current* attempt
(it checks that first): from the worker's ``tests`` messages while the chunk
runs, and from the attempt's result, which lists every record again. The
recorder turns each record not yet recorded for its task into a
``test_results`` row, numbered in the order recorded (so a client can poll a
run's new rows by ``seq``). No I/O and no clock: rows go to the turn's output.

Rules kept here (ARCHITECTURE.md):

* A test is recorded once per task, whichever of the stream and the result
  brings it first, and whichever attempt ran it: a retried attempt is told
  which tests are recorded (``TaskRecord.reported_tests``) and skips them.
* A worker may report only the node ids its chunk asked for; anything else is
  counted as stray and dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from testfleet.coordinator.turn_output import TurnOutput
from testfleet.domain.pytest_tasks import TestConfig, TestRecord, TestResultRow
from testfleet.domain.records import TaskRecord


class ChunkLedger:
    """Turns a test task's records into ``test_results`` rows, each test once."""

    def __init__(self, out: TurnOutput, next_seq: int = 1) -> None:
        self._out = out
        #: The next ``test_results.seq``.
        self.next_seq = next_seq
        #: Each open test task's node ids (a worker may report only those).
        self._chunk_node_ids: dict[str, frozenset[str]] = {}
        #: Test reports dropped: their attempt was not current, the node id was
        #: not in the chunk, or a record in a result did not validate.
        self.stray_reports = 0
        #: Told of each test row as it is recorded (the coordinator's speed
        #: books measure workers by their tests' durations).
        self.on_test: Callable[[TestResultRow], None] | None = None

    def streamed(
        self,
        task: TaskRecord,
        attempt_id: int,
        worker_id: str,
        records: list[TestRecord],
        now: float,
    ) -> None:
        """Tests the task's current attempt finished: recorded now, so they survive
        its worker."""
        self._add(task, attempt_id, worker_id, records, now)

    def from_result(
        self,
        task: TaskRecord,
        attempt_id: int,
        worker_id: str,
        results: dict[str, object],
        now: float,
    ) -> None:
        """The tests listed in the current attempt's result that were not streamed.

        Most were streamed already: only the records of tests not yet recorded
        are validated (a chunk's result repeats every record it ran).
        """
        listed = results.get("tests")
        if not isinstance(listed, list):
            return  # stored as sent; the client reports the chunk's tests as not run
        reported = task.reported_tests or set()
        records: list[TestRecord] = []
        for raw in listed:
            # A node id that is not a string (a hostile or broken worker's) is
            # unhashable or never reported: it goes on to validation, which refuses it.
            nodeid = raw.get("nodeid") if isinstance(raw, dict) else None
            if isinstance(nodeid, str) and nodeid in reported:
                continue
            try:
                records.append(TestRecord.model_validate(raw))
            except ValidationError:
                self.stray_reports += 1  # kept in the stored result as sent
        self._add(task, attempt_id, worker_id, records, now)

    def stray(self, count: int) -> None:
        """``count`` reports came for an attempt that is not its task's current one."""
        self.stray_reports += count

    def forget(self, task_id: str) -> None:
        """The task finished: no more records are taken for it."""
        self._chunk_node_ids.pop(task_id, None)

    def _add(
        self,
        task: TaskRecord,
        attempt_id: int,
        worker_id: str,
        records: list[TestRecord],
        now: float,
    ) -> None:
        config = _test_config(task)
        if config is None:
            return
        chunk = self._chunk_node_ids.get(task.task_id)
        if chunk is None:
            chunk = self._chunk_node_ids[task.task_id] = frozenset(config.node_ids)
        if task.reported_tests is None:
            task.reported_tests = set()
        reported = task.reported_tests
        for record in records:
            if record.nodeid not in chunk:
                self.stray_reports += 1  # never asked of this chunk
                continue
            if record.nodeid in reported:
                continue  # the result repeating the stream, or a retried attempt
            reported.add(record.nodeid)
            self._out.test_row(
                row := TestResultRow(
                    seq=self.next_seq,
                    task_id=task.task_id,
                    nodeid=record.nodeid,
                    attempt_id=attempt_id,
                    worker_id=worker_id,
                    run_id=config.run_id,
                    project=config.project.key(),
                    rerun=config.rerun,
                    outcome=record.outcome,
                    duration_seconds=record.duration_seconds,
                    crashed=record.crashed,
                    recorded_time=now,
                    record=record,
                )
            )
            if self.on_test is not None:
                self.on_test(row)
            self.next_seq += 1


def _test_config(task: TaskRecord) -> TestConfig | None:
    if task.test_config is None:
        try:
            task.test_config = TestConfig.model_validate(task.spec.config)
        except ValidationError:
            return None  # validated at submission; only a hand-edited file gets here
    return task.test_config
