"""History for the coordinator's speed books: recent finished work, oldest first.

Callers: :meth:`~testfleet.store.read_methods.StoreReads.speed_samples` (both
stores run this same DuckDB SQL), which the app calls once at start-up to seed
:class:`~testfleet.coordinator.worker_speed.WorkerSpeeds` before the loop
starts, so a restarted coordinator (or a new leader) knows its workers'
speeds at once instead of learning them again.

What counts, as it does live (``coordinator/task_lifecycle.py``):

* a task's outcome result that completed, by its work key (type and config,
  :func:`~testfleet.domain.work_keys.work_key`), pytest chunks excepted;
* each passed, not crashed test of a chunk, by its node's work key.

The worker's hardware class comes from its stored capabilities. Each kind is
bounded to its ``limit`` newest rows (the books keep short windows anyway),
so the read stays small however long the history is.
"""

from __future__ import annotations

import json

import duckdb

from testfleet.domain.enums import (
    HardwareKind,
    ResultDisposition,
    ResultStatus,
    TaskType,
)
from testfleet.domain.pytest_tasks import TestOutcome
from testfleet.domain.work_keys import SpeedSample, hardware_class, node_work_key, work_key
from testfleet.store.rows import from_micros

#: Newest rows of each kind read at start-up.
DEFAULT_LIMIT = 50_000


def speed_samples(
    cursor: duckdb.DuckDBPyConnection, limit: int = DEFAULT_LIMIT
) -> list[SpeedSample]:
    """Recent finished work of both kinds (module docstring), oldest first."""
    classes = _worker_classes(cursor)
    timed: list[tuple[float, SpeedSample]] = []
    cursor.execute(
        "SELECT epoch_us(r.received_time), r.worker_id, t.type, CAST(t.config AS VARCHAR), "
        "  r.execution_time_seconds "
        "FROM task_results AS r JOIN distributed_tasks AS t ON t.task_id = r.task_id "
        "WHERE r.disposition = ? AND r.status = ? AND t.type <> ? "
        "ORDER BY r.received_time DESC LIMIT ?",
        [ResultDisposition.OUTCOME.value, ResultStatus.COMPLETED.value, TaskType.TEST.value, limit],
    )
    # Read newest first (to keep the newest), filed oldest first.
    for micros, worker_id, task_type, config, seconds in reversed(cursor.fetchall()):
        hardware = classes.get(str(worker_id))
        kind = _task_type(str(task_type))
        parsed = _json_object(config)
        if hardware is None or kind is None or parsed is None or seconds is None:
            continue  # a row this build cannot read says nothing about speed
        key = work_key(kind, parsed)
        timed.append(
            (from_micros(micros) or 0.0, SpeedSample(str(worker_id), hardware, key, float(seconds)))
        )
    cursor.execute(
        "SELECT epoch_us(recorded_time), worker_id, project, nodeid, duration_seconds "
        "FROM test_results WHERE outcome = ? AND NOT crashed "
        "ORDER BY seq DESC LIMIT ?",
        [TestOutcome.PASSED.value, limit],
    )
    for micros, worker_id, project, nodeid, seconds in reversed(cursor.fetchall()):
        hardware = classes.get(str(worker_id))
        if hardware is None:
            continue
        key = node_work_key(str(project), str(nodeid))
        timed.append(
            (from_micros(micros) or 0.0, SpeedSample(str(worker_id), hardware, key, float(seconds)))
        )
    # Stable: rows of one time keep the order they were read in, so the replay
    # order is the same on both stores.
    timed.sort(key=lambda item: item[0])
    return [sample for _, sample in timed]


def _worker_classes(cursor: duckdb.DuckDBPyConnection) -> dict[str, HardwareKind]:
    """Each known worker's hardware class, from its stored capabilities."""
    cursor.execute("SELECT worker_id, CAST(capabilities AS VARCHAR) FROM worker_nodes")
    classes: dict[str, HardwareKind] = {}
    for worker_id, capabilities in cursor.fetchall():
        parsed = _json_object(capabilities)
        listed = parsed.get("hardware") if parsed is not None else None
        if not isinstance(listed, list):
            continue
        kinds = [HardwareKind(k) for k in listed if k in HardwareKind._value2member_map_]
        classes[str(worker_id)] = hardware_class(kinds)
    return classes


def _task_type(value: str) -> TaskType | None:
    try:
        return TaskType(value)
    except ValueError:
        return None


def _json_object(text: object) -> dict[str, object] | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
