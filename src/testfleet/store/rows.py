"""How each record maps onto the columns of its table, both ways.

Callers: ``writer.py`` turns records into Arrow tables with
:meth:`TableMapping.to_arrow` (bulk inserts select from them), and
``queries.py`` selects :meth:`TableMapping.select_list` and turns rows back
into records with :meth:`TableMapping.from_row`. Keeping both directions and
the column order in one place is what makes a record read back equal to what
was written.

Representation decisions:

* Times are float seconds since the epoch in the records and ``TIMESTAMP``
  (microsecond precision, UTC, no time zone) in the tables, as the design
  document has them. They cross the boundary as integer microseconds (Arrow
  ``timestamp[us]`` in, ``epoch_us(...)`` out), never as ``datetime`` objects,
  so no local time zone or float rounding of date parts can creep in: a time
  with microsecond resolution reads back exactly, a finer one is rounded to
  the nearest microsecond.
* JSON columns hold ``orjson``-serialized documents; pydantic models are dumped
  with ``mode="json"`` and re-validated on the way back (``model_validate``).
* Enums are stored as their values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
import pyarrow as pa

from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    ResultDisposition,
    TaskStatus,
    WorkerStatus,
)
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.pytest_tasks import TestOutcome, TestRecord, TestResultRow
from testfleet.domain.records import AttemptRecord, ResultRecord, TaskRecord, WorkerRecord
from testfleet.domain.result import TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.store.errors import StoreError

R = TypeVar("R")

_TIME = pa.timestamp("us")
_TEXT = pa.string()
_INT = pa.int32()
_BIGINT = pa.int64()
_DOUBLE = pa.float64()
_BOOL = pa.bool_()
_MICROS = 1_000_000


def to_micros(seconds: float | None) -> int | None:
    """Epoch seconds to integer epoch microseconds (``None`` stays ``None``)."""
    return None if seconds is None else round(seconds * _MICROS)


def from_micros(micros: int | None) -> float | None:
    """Epoch microseconds back to float seconds (int / int division is correctly rounded)."""
    return None if micros is None else micros / _MICROS


def _required_time(micros: int | None) -> float:
    seconds = from_micros(micros)
    if seconds is None:
        raise ValueError("a required time is NULL")
    return seconds


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str) -> Any:
    return orjson.loads(text)


def _enum_value(value: ErrorClass | None) -> str | None:
    return None if value is None else value.value


def _error_class(value: str | None) -> ErrorClass | None:
    return None if value is None else ErrorClass(value)


@dataclass(frozen=True, slots=True)
class Column:
    """One column a record maps to: its name and the Arrow type it is written as."""

    name: str
    arrow_type: Any
    #: False for what never changes after the row is inserted: updates skip it
    #: (DuckDB's updates are per column, so fewer columns is less work).
    mutable: bool = True

    @property
    def is_time(self) -> bool:
        return bool(pa.types.is_timestamp(self.arrow_type))

    def select_expr(self, alias: str) -> str:
        qualified = f"{alias}.{self.name}" if alias else self.name
        if self.is_time:
            return f"epoch_us({qualified}) AS {self.name}"
        return qualified


@dataclass(frozen=True, slots=True)
class TableMapping(Generic[R]):
    """A table, its primary key, and the record type stored in it."""

    table: str
    key: str
    columns: tuple[Column, ...]
    to_row: Callable[[R], tuple[Any, ...]]
    decode: Callable[[tuple[Any, ...]], R]
    #: Every column of the primary key when it has more than one; ``key`` is
    #: then its first column (the one error messages name).
    key_columns: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def key_names(self) -> tuple[str, ...]:
        """Every column of the primary key."""
        return self.key_columns or (self.key,)

    @property
    def conflict_target(self) -> str:
        """The primary key's columns, as an ``ON CONFLICT (...)`` target lists them."""
        return ", ".join(self.key_names)

    def select_list(self, alias: str = "") -> str:
        """The SELECT list that :meth:`from_row` reads (times as epoch microseconds)."""
        return ", ".join(c.select_expr(alias) for c in self.columns)

    @property
    def update_column_names(self) -> list[str]:
        """The columns an update writes: the key and the mutable ones."""
        return [c.name for c in self.columns if c.mutable or c.name in self.key_names]

    def to_arrow(self, records: Sequence[R], *, for_update: bool = False) -> Any:
        """Records as a ``pyarrow.Table`` with this table's column names and types
        (only the key and mutable columns when ``for_update``)."""
        rows = [self.to_row(r) for r in records]
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in self.columns]
        pairs = [
            (column, values)
            for column, values in zip(self.columns, columns, strict=True)
            if not for_update or column.mutable or column.name in self.key_names
        ]
        arrays = [pa.array(list(values), type=column.arrow_type) for column, values in pairs]
        return pa.Table.from_arrays(arrays, names=[column.name for column, _ in pairs])

    def from_row(self, row: tuple[Any, ...]) -> R:
        """A row selected with :meth:`select_list`, as a record.

        A row that does not make a valid record (edited by hand, or written by
        an incompatible build) raises :class:`StoreError` naming the row.
        """
        try:
            return self.decode(row)
        # ValueError covers pydantic's ValidationError, bad enum values and bad
        # JSON; TypeError a NULL where a document was expected.
        except (ValueError, TypeError) as error:
            raise StoreError(
                f"row {self.key}={row[0]!r} of {self.table} cannot be read: {error}"
            ) from error


def _spec_columns(task: TaskRecord) -> tuple[str, str, str]:
    """config, requirements and retry_policy as JSON, cached on the record."""
    if task.encoded_spec is None:
        spec = task.spec
        task.encoded_spec = (
            _dumps(spec.config),
            _dumps(spec.requirements.model_dump(mode="json")),
            _dumps(spec.retry_policy.model_dump(mode="json")),
        )
    return task.encoded_spec


def _task_row(task: TaskRecord) -> tuple[Any, ...]:
    spec = task.spec
    config, requirements, retry_policy = _spec_columns(task)
    return (
        spec.task_id,
        spec.type.value,
        spec.priority,
        task.status.value,
        to_micros(task.create_time),
        to_micros(task.start_time),
        to_micros(task.end_time),
        task.worker_id,
        task.attempts,
        config,
        requirements,
        spec.timeout_seconds,
        retry_policy,
        to_micros(task.queued_at),
        task.current_attempt_id,
        to_micros(task.not_before),
        task.lost_attempts,
        _enum_value(task.error_class),
        task.error_message,
        task.unschedulable_reason,
    )


def _task_from_row(row: tuple[Any, ...]) -> TaskRecord:
    (
        task_id,
        task_type,
        priority,
        status,
        create_time,
        start_time,
        end_time,
        worker_id,
        attempts,
        config,
        requirements,
        timeout_seconds,
        retry_policy,
        queued_at,
        current_attempt_id,
        not_before,
        lost_attempts,
        error_class,
        error_message,
        unschedulable_reason,
    ) = row
    spec = TaskSpec.model_validate(
        {
            "task_id": task_id,
            "type": task_type,
            "priority": priority,
            "requirements": _loads(requirements),
            "config": _loads(config),
            "timeout_seconds": timeout_seconds,
            "retry_policy": _loads(retry_policy),
        }
    )
    return TaskRecord(
        spec=spec,
        status=TaskStatus(status),
        create_time=_required_time(create_time),
        queued_at=_required_time(queued_at),
        start_time=from_micros(start_time),
        end_time=from_micros(end_time),
        worker_id=worker_id,
        attempts=attempts,
        current_attempt_id=current_attempt_id,
        not_before=from_micros(not_before),
        lost_attempts=lost_attempts,
        error_class=_error_class(error_class),
        error_message=error_message,
        unschedulable_reason=unschedulable_reason,
        stored=True,
    )


TASKS: TableMapping[TaskRecord] = TableMapping(
    table="distributed_tasks",
    key="task_id",
    columns=(
        Column("task_id", _TEXT),
        Column("type", _TEXT, mutable=False),
        Column("priority", _INT, mutable=False),
        Column("status", _TEXT),
        Column("create_time", _TIME, mutable=False),
        Column("start_time", _TIME),
        Column("end_time", _TIME),
        Column("worker_id", _TEXT),
        Column("attempts", _INT),
        Column("config", _TEXT, mutable=False),
        Column("requirements", _TEXT, mutable=False),
        Column("timeout_seconds", _DOUBLE, mutable=False),
        Column("retry_policy", _TEXT, mutable=False),
        Column("queued_at", _TIME),
        Column("current_attempt_id", _INT),
        Column("not_before", _TIME),
        Column("lost_attempts", _INT),
        Column("error_class", _TEXT),
        Column("error_message", _TEXT),
        Column("unschedulable_reason", _TEXT),
    ),
    to_row=_task_row,
    decode=_task_from_row,
)


def _attempt_row(attempt: AttemptRecord) -> tuple[Any, ...]:
    return (
        attempt.attempt_id,
        attempt.task_id,
        attempt.worker_id,
        attempt.attempt,
        attempt.status.value,
        to_micros(attempt.start_time),
        to_micros(attempt.accepted_time),
        to_micros(attempt.end_time),
        attempt.execution_time_seconds,
        _enum_value(attempt.error_class),
        attempt.error_message,
        _dumps(attempt.hardware_metrics),
    )


def _attempt_from_row(row: tuple[Any, ...]) -> AttemptRecord:
    (
        attempt_id,
        task_id,
        worker_id,
        attempt,
        status,
        start_time,
        accepted_time,
        end_time,
        execution_time_seconds,
        error_class,
        error_message,
        hardware_metrics,
    ) = row
    return AttemptRecord(
        attempt_id=attempt_id,
        task_id=task_id,
        worker_id=worker_id,
        attempt=attempt,
        status=AttemptStatus(status),
        start_time=_required_time(start_time),
        accepted_time=from_micros(accepted_time),
        end_time=from_micros(end_time),
        execution_time_seconds=execution_time_seconds,
        error_class=_error_class(error_class),
        error_message=error_message,
        hardware_metrics=_loads(hardware_metrics),
        stored=True,
    )


ATTEMPTS: TableMapping[AttemptRecord] = TableMapping(
    table="task_execution_history",
    key="id",
    columns=(
        Column("id", _INT),
        Column("task_id", _TEXT, mutable=False),
        Column("worker_id", _TEXT, mutable=False),
        Column("attempt", _INT, mutable=False),
        Column("status", _TEXT),
        Column("start_time", _TIME, mutable=False),
        Column("accepted_time", _TIME),
        Column("end_time", _TIME),
        Column("execution_time_seconds", _DOUBLE),
        Column("error_class", _TEXT),
        Column("error_message", _TEXT),
        Column("hardware_metrics", _TEXT),
    ),
    to_row=_attempt_row,
    decode=_attempt_from_row,
)


def _result_row(record: ResultRecord) -> tuple[Any, ...]:
    result = record.result
    return (
        record.attempt_id,
        record.task_id,
        record.worker_id,
        result.status.value,
        to_micros(record.received_time),
        record.counted,
        result.simulation_status.is_simulated,
        result.execution_time_seconds,
        _dumps(result.model_dump(mode="json")),
        record.disposition.value,
    )


def _result_from_row(row: tuple[Any, ...]) -> ResultRecord:
    # status, is_simulated and execution_time_seconds are copies of fields of
    # the document (for SQL analysis); the document itself is the truth.
    # counted is a copy of disposition = 'outcome'.
    attempt_id, task_id, worker_id, _status, received_time, _counted, _sim, _secs = row[:8]
    result, disposition = row[8:]
    return ResultRecord(
        attempt_id=attempt_id,
        task_id=task_id,
        worker_id=worker_id,
        received_time=_required_time(received_time),
        disposition=ResultDisposition(disposition),
        result=TaskResult.model_validate(_loads(result)),
    )


RESULTS: TableMapping[ResultRecord] = TableMapping(
    table="task_results",
    key="attempt_id",
    columns=(
        Column("attempt_id", _INT),
        Column("task_id", _TEXT),
        Column("worker_id", _TEXT),
        Column("status", _TEXT),
        Column("received_time", _TIME),
        Column("counted", _BOOL),
        Column("is_simulated", _BOOL),
        Column("execution_time_seconds", _DOUBLE),
        Column("result", _TEXT),
        Column("disposition", _TEXT),
    ),
    to_row=_result_row,
    decode=_result_from_row,
)


def _worker_row(worker: WorkerRecord) -> tuple[Any, ...]:
    return (
        worker.worker_id,
        worker.hostname,
        to_micros(worker.registration_time),
        to_micros(worker.last_heartbeat),
        worker.status.value,
        _dumps(worker.capabilities.model_dump(mode="json")),
        _dumps(worker.hardware_metrics),
        _dumps(worker.tags),
        worker.slots,
    )


def _worker_from_row(row: tuple[Any, ...]) -> WorkerRecord:
    # ``tags`` is a copy of capabilities.tags (a property of the record).
    worker_id, hostname, registered, heartbeat, status, capabilities, metrics, _tags, slots = row
    return WorkerRecord(
        worker_id=worker_id,
        hostname=hostname,
        registration_time=_required_time(registered),
        last_heartbeat=_required_time(heartbeat),
        status=WorkerStatus(status),
        capabilities=WorkerCapabilities.model_validate(_loads(capabilities)),
        slots=slots,
        hardware_metrics=_loads(metrics),
    )


WORKERS: TableMapping[WorkerRecord] = TableMapping(
    table="worker_nodes",
    key="worker_id",
    columns=(
        Column("worker_id", _TEXT),
        Column("hostname", _TEXT),
        Column("registration_time", _TIME),
        Column("last_heartbeat", _TIME),
        Column("status", _TEXT),
        Column("capabilities", _TEXT),
        Column("hardware_metrics", _TEXT),
        Column("tags", _TEXT),
        Column("slots", _INT),
    ),
    to_row=_worker_row,
    decode=_worker_from_row,
)


#: Named as ``BenchmarkRow``'s fields, in the table's column order.
_BENCHMARK_COLUMNS = (
    Column("attempt_id", _INT),
    Column("batch_size", _INT),
    Column("task_id", _TEXT),
    Column("worker_id", _TEXT),
    Column("recorded_time", _TIME),
    Column("model", _TEXT),
    Column("variant", _TEXT),
    Column("hardware", _TEXT),
    Column("device_name", _TEXT),
    Column("precision", _TEXT),
    Column("is_simulated", _BOOL),
    Column("latency_ms", _DOUBLE),
    Column("latency_p50_ms", _DOUBLE),
    Column("latency_p90_ms", _DOUBLE),
    Column("latency_p99_ms", _DOUBLE),
    Column("throughput_items_per_second", _DOUBLE),
    Column("memory_mb", _DOUBLE),
    Column("error_class", _TEXT),
    Column("error_message", _TEXT),
    Column("torch_version", _TEXT),
    Column("transformers_version", _TEXT),
    Column("load_note", _TEXT),
)


def _benchmark_row(row: BenchmarkRow) -> tuple[Any, ...]:
    values = ((column, getattr(row, column.name)) for column in _BENCHMARK_COLUMNS)
    return tuple(to_micros(value) if column.is_time else value for column, value in values)


def _benchmark_from_row(row: tuple[Any, ...]) -> BenchmarkRow:
    fields = dict(zip((c.name for c in _BENCHMARK_COLUMNS), row, strict=True))
    fields["recorded_time"] = _required_time(fields["recorded_time"])
    return BenchmarkRow(**fields)


BENCHMARKS: TableMapping[BenchmarkRow] = TableMapping(
    table="benchmark_results",
    key="attempt_id",
    key_columns=("attempt_id", "batch_size"),
    columns=_BENCHMARK_COLUMNS,
    to_row=_benchmark_row,
    decode=_benchmark_from_row,
)


#: Named as ``TestResultRow``'s fields, in the table's column order.
_TEST_COLUMNS = (
    Column("seq", _BIGINT),
    Column("task_id", _TEXT),
    Column("nodeid", _TEXT),
    Column("attempt_id", _BIGINT),
    Column("worker_id", _TEXT),
    Column("run_id", _TEXT),
    Column("project", _TEXT),
    Column("rerun", _INT),
    Column("outcome", _TEXT),
    Column("duration_seconds", _DOUBLE),
    Column("crashed", _BOOL),
    Column("recorded_time", _TIME),
    Column("record", _TEXT),
)


def _test_row(row: TestResultRow) -> tuple[Any, ...]:
    return (
        row.seq,
        row.task_id,
        row.nodeid,
        row.attempt_id,
        row.worker_id,
        row.run_id,
        row.project,
        row.rerun,
        row.outcome.value,
        row.duration_seconds,
        row.crashed,
        to_micros(row.recorded_time),
        row.record.model_dump_json(),
    )


def _test_from_row(row: tuple[Any, ...]) -> TestResultRow:
    fields = dict(zip((c.name for c in _TEST_COLUMNS), row, strict=True))
    fields["outcome"] = TestOutcome(fields["outcome"])
    fields["recorded_time"] = _required_time(fields["recorded_time"])
    fields["record"] = TestRecord.model_validate_json(fields["record"])
    return TestResultRow(**fields)


TESTS: TableMapping[TestResultRow] = TableMapping(
    table="test_results",
    key="task_id",
    key_columns=("task_id", "nodeid"),
    columns=_TEST_COLUMNS,
    to_row=_test_row,
    decode=_test_from_row,
)
