"""How each record maps onto the columns of its table, both ways.

Callers: ``writer.py`` turns records into Arrow tables with
:meth:`TableMapping.to_arrow` (bulk inserts select from them), and
``queries.py`` selects :meth:`TableMapping.select_list` and turns rows back
into records with :meth:`TableMapping.from_row`. Each table is defined once,
as one tuple of :class:`Column`: its order is the order of the insert's column
list, of the Arrow table's columns and of the SELECT list, and each column
says how its value is read off a record. Rows come back as a dict by column
name, so no decoder depends on the order.

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
* Enums are stored as their values (they are ``StrEnum``\\ s, which Arrow takes
  as strings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
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


def _required_time(seconds: float | None) -> float:
    if seconds is None:
        raise ValueError("a required time is NULL")
    return seconds


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str) -> Any:
    return orjson.loads(text)


def _error_class(value: str | None) -> ErrorClass | None:
    return None if value is None else ErrorClass(value)


@dataclass(frozen=True, slots=True)
class Column(Generic[R]):
    """One column a record maps to: its name, its Arrow type, and its value for a record."""

    name: str
    arrow_type: Any
    #: The value written for a record (a time in epoch microseconds).
    value: Callable[[R], Any]
    #: False for what never changes after the row is inserted: updates skip it
    #: (DuckDB's updates are per column, so fewer columns is less work).
    mutable: bool
    #: A ``TIMESTAMP``: written as microseconds, selected as ``epoch_us``.
    is_time: bool

    def select_expr(self, alias: str) -> str:
        qualified = f"{alias}.{self.name}" if alias else self.name
        if self.is_time:
            return f"epoch_us({qualified}) AS {self.name}"
        return qualified


def column(
    name: str,
    arrow_type: Any,
    value: Callable[[Any], Any] | None = None,
    *,
    mutable: bool = True,
) -> Column[Any]:
    """A column whose value is ``value(record)``, or by default the record's attribute
    of the same name; a time column's value is converted to microseconds."""
    read = value or attrgetter(name)
    if not pa.types.is_timestamp(arrow_type):
        return Column(name, arrow_type, read, mutable, is_time=False)

    def micros(record: Any) -> int | None:
        return to_micros(read(record))

    return Column(name, arrow_type, micros, mutable, is_time=True)


@dataclass(frozen=True, slots=True)
class TableMapping(Generic[R]):
    """A table, its primary key, and the record type stored in it."""

    table: str
    #: Every column of the primary key; the first is the one error messages name.
    key_names: tuple[str, ...]
    columns: tuple[Column[R], ...]
    #: A record from a row's values by column name (times already in seconds).
    decode: Callable[[dict[str, Any]], R]

    @property
    def key(self) -> str:
        return self.key_names[0]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

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
        return [c.name for c in self._update_columns()]

    def _update_columns(self) -> list[Column[R]]:
        return [c for c in self.columns if c.mutable or c.name in self.key_names]

    def to_arrow(self, records: Sequence[R], *, for_update: bool = False) -> Any:
        """Records as a ``pyarrow.Table`` with this table's column names and types
        (only the key and mutable columns when ``for_update``: the others are not
        even computed, so a task's spec is encoded only when its row is inserted)."""
        columns = self._update_columns() if for_update else self.columns
        arrays = [
            pa.array([c.value(record) for record in records], type=c.arrow_type) for c in columns
        ]
        return pa.Table.from_arrays(arrays, names=[c.name for c in columns])

    def from_row(self, row: tuple[Any, ...]) -> R:
        """A row selected with :meth:`select_list`, as a record.

        A row that does not make a valid record (edited by hand, or written by
        an incompatible build) raises :class:`StoreError` naming the row.
        """
        try:
            fields = {
                c.name: from_micros(value) if c.is_time else value
                for c, value in zip(self.columns, row, strict=True)
            }
            return self.decode(fields)
        # ValueError covers pydantic's ValidationError, bad enum values and bad
        # JSON; TypeError a NULL where a document was expected.
        except (ValueError, TypeError) as error:
            key = row[self.column_names.index(self.key)]
            raise StoreError(
                f"row {self.key}={key!r} of {self.table} cannot be read: {error}"
            ) from error


# -- distributed_tasks ----------------------------------------------------------


def _task_from_fields(f: dict[str, Any]) -> TaskRecord:
    spec = TaskSpec.model_validate(
        {
            "task_id": f["task_id"],
            "type": f["type"],
            "priority": f["priority"],
            "requirements": _loads(f["requirements"]),
            "config": _loads(f["config"]),
            "timeout_seconds": f["timeout_seconds"],
            "retry_policy": _loads(f["retry_policy"]),
            **(_loads(f["spec_extras"]) if f.get("spec_extras") else {}),
        }
    )
    return TaskRecord(
        spec=spec,
        status=TaskStatus(f["status"]),
        create_time=_required_time(f["create_time"]),
        queued_at=_required_time(f["queued_at"]),
        start_time=f["start_time"],
        end_time=f["end_time"],
        worker_id=f["worker_id"],
        attempts=f["attempts"],
        current_attempt_id=f["current_attempt_id"],
        not_before=f["not_before"],
        lost_attempts=f["lost_attempts"],
        error_class=_error_class(f["error_class"]),
        error_message=f["error_message"],
        unschedulable_reason=f["unschedulable_reason"],
        submitted_by=f["submitted_by"],
        slice_index=f.get("slice_index") or 0,
    )


#: TaskSpec fields stored together in ``spec_extras`` (schema version 9) rather than
#: as columns of their own: issue 14's scheduling fields, left out while at their
#: defaults (then the column is NULL, as in rows written before version 9).
_SPEC_EXTRAS = {"fallbacks", "idempotent", "expected_seconds"}


def _spec_extras(task: TaskRecord) -> str | None:
    extras = task.spec.model_dump(mode="json", include=_SPEC_EXTRAS, exclude_defaults=True)
    return _dumps(extras) if extras else None


TASKS: TableMapping[TaskRecord] = TableMapping(
    table="distributed_tasks",
    key_names=("task_id",),
    columns=(
        column("task_id", _TEXT),
        column("type", _TEXT, lambda t: t.spec.type, mutable=False),
        column("priority", _INT, lambda t: t.spec.priority, mutable=False),
        column("status", _TEXT),
        column("create_time", _TIME, mutable=False),
        column("start_time", _TIME),
        column("end_time", _TIME),
        column("worker_id", _TEXT),
        column("attempts", _INT),
        column("config", _TEXT, lambda t: _dumps(t.spec.config), mutable=False),
        column(
            "requirements",
            _TEXT,
            lambda t: _dumps(t.spec.requirements.model_dump(mode="json")),
            mutable=False,
        ),
        column("timeout_seconds", _DOUBLE, lambda t: t.spec.timeout_seconds, mutable=False),
        column(
            "retry_policy",
            _TEXT,
            lambda t: _dumps(t.spec.retry_policy.model_dump(mode="json")),
            mutable=False,
        ),
        column("queued_at", _TIME),
        column("current_attempt_id", _INT),
        column("not_before", _TIME),
        column("lost_attempts", _INT),
        column("error_class", _TEXT),
        column("error_message", _TEXT),
        column("unschedulable_reason", _TEXT),
        column("submitted_by", _TEXT, mutable=False),
        column("spec_extras", _TEXT, _spec_extras, mutable=False),
        column("slice_index", _INT),
    ),
    decode=_task_from_fields,
)


# -- task_execution_history -----------------------------------------------------


def _attempt_from_fields(f: dict[str, Any]) -> AttemptRecord:
    # Columns are named as the record's fields, but for the key.
    f["attempt_id"] = f.pop("id")
    return AttemptRecord(
        **f
        | {
            "status": AttemptStatus(f["status"]),
            "start_time": _required_time(f["start_time"]),
            "error_class": _error_class(f["error_class"]),
            "hardware_metrics": _loads(f["hardware_metrics"]),
        }
    )


ATTEMPTS: TableMapping[AttemptRecord] = TableMapping(
    table="task_execution_history",
    key_names=("id",),
    columns=(
        column("id", _INT, attrgetter("attempt_id")),
        column("task_id", _TEXT, mutable=False),
        column("worker_id", _TEXT, mutable=False),
        column("attempt", _INT, mutable=False),
        column("status", _TEXT),
        column("start_time", _TIME, mutable=False),
        column("accepted_time", _TIME),
        column("end_time", _TIME),
        column("execution_time_seconds", _DOUBLE),
        column("error_class", _TEXT),
        column("error_message", _TEXT),
        column("hardware_metrics", _TEXT, lambda a: _dumps(a.hardware_metrics)),
        column("slice_index", _INT, mutable=False),
        column("speculative", _BOOL, mutable=False),
    ),
    decode=_attempt_from_fields,
)


# -- task_results ---------------------------------------------------------------


def _result_from_fields(f: dict[str, Any]) -> ResultRecord:
    # status, is_simulated and execution_time_seconds are copies of fields of
    # the document (for SQL analysis); the document itself is the truth.
    # counted is a copy of disposition = 'outcome'.
    return ResultRecord(
        attempt_id=f["attempt_id"],
        task_id=f["task_id"],
        worker_id=f["worker_id"],
        received_time=_required_time(f["received_time"]),
        disposition=ResultDisposition(f["disposition"]),
        result=TaskResult.model_validate(_loads(f["result"])),
    )


RESULTS: TableMapping[ResultRecord] = TableMapping(
    table="task_results",
    key_names=("attempt_id",),
    columns=(
        column("attempt_id", _INT),
        column("task_id", _TEXT),
        column("worker_id", _TEXT),
        column("status", _TEXT, lambda r: r.result.status),
        column("received_time", _TIME),
        column("counted", _BOOL),
        column("is_simulated", _BOOL, lambda r: r.result.simulation_status.is_simulated),
        column("execution_time_seconds", _DOUBLE, lambda r: r.result.execution_time_seconds),
        column("result", _TEXT, lambda r: _dumps(r.result.model_dump(mode="json"))),
        column("disposition", _TEXT),
    ),
    decode=_result_from_fields,
)


# -- worker_nodes ---------------------------------------------------------------


def _worker_from_fields(f: dict[str, Any]) -> WorkerRecord:
    # Columns are named as the record's fields; ``tags`` is a copy of
    # capabilities.tags (a property of the record).
    del f["tags"]
    return WorkerRecord(
        **f
        | {
            "registration_time": _required_time(f["registration_time"]),
            "last_heartbeat": _required_time(f["last_heartbeat"]),
            "status": WorkerStatus(f["status"]),
            "capabilities": WorkerCapabilities.model_validate(_loads(f["capabilities"])),
            "hardware_metrics": _loads(f["hardware_metrics"]),
        }
    )


WORKERS: TableMapping[WorkerRecord] = TableMapping(
    table="worker_nodes",
    key_names=("worker_id",),
    columns=(
        column("worker_id", _TEXT),
        column("hostname", _TEXT),
        column("registration_time", _TIME),
        column("last_heartbeat", _TIME),
        column("status", _TEXT),
        column("capabilities", _TEXT, lambda w: _dumps(w.capabilities.model_dump(mode="json"))),
        column("hardware_metrics", _TEXT, lambda w: _dumps(w.hardware_metrics)),
        column("tags", _TEXT, lambda w: _dumps(w.tags)),
        column("slots", _INT),
    ),
    decode=_worker_from_fields,
)


# -- benchmark_results: named as ``BenchmarkRow``'s fields ------------------------


def _benchmark_from_fields(f: dict[str, Any]) -> BenchmarkRow:
    return BenchmarkRow(**f | {"recorded_time": _required_time(f["recorded_time"])})


BENCHMARKS: TableMapping[BenchmarkRow] = TableMapping(
    table="benchmark_results",
    key_names=("attempt_id", "batch_size"),
    columns=tuple(
        column(name, arrow_type)
        for name, arrow_type in (
            ("attempt_id", _INT),
            ("batch_size", _INT),
            ("task_id", _TEXT),
            ("worker_id", _TEXT),
            ("recorded_time", _TIME),
            ("model", _TEXT),
            ("variant", _TEXT),
            ("hardware", _TEXT),
            ("device_name", _TEXT),
            ("precision", _TEXT),
            ("is_simulated", _BOOL),
            ("latency_ms", _DOUBLE),
            ("latency_p50_ms", _DOUBLE),
            ("latency_p90_ms", _DOUBLE),
            ("latency_p99_ms", _DOUBLE),
            ("throughput_items_per_second", _DOUBLE),
            ("memory_mb", _DOUBLE),
            ("error_class", _TEXT),
            ("error_message", _TEXT),
            ("torch_version", _TEXT),
            ("transformers_version", _TEXT),
            ("load_note", _TEXT),
            ("backend", _TEXT),
            ("output_check", _TEXT),
            ("output_max_abs_diff", _DOUBLE),
        )
    ),
    decode=_benchmark_from_fields,
)


# -- test_results: named as ``TestResultRow``'s fields ----------------------------


def _test_from_fields(f: dict[str, Any]) -> TestResultRow:
    return TestResultRow(
        **f
        | {
            "outcome": TestOutcome(f["outcome"]),
            "recorded_time": _required_time(f["recorded_time"]),
            "record": TestRecord.model_validate_json(f["record"]),
        }
    )


TESTS: TableMapping[TestResultRow] = TableMapping(
    table="test_results",
    key_names=("task_id", "nodeid"),
    columns=(
        column("seq", _BIGINT),
        column("task_id", _TEXT),
        column("nodeid", _TEXT),
        column("attempt_id", _BIGINT),
        column("worker_id", _TEXT),
        column("run_id", _TEXT),
        column("project", _TEXT),
        column("rerun", _INT),
        column("outcome", _TEXT),
        column("duration_seconds", _DOUBLE),
        column("crashed", _BOOL),
        column("recorded_time", _TIME),
        column("record", _TEXT, lambda r: r.record.model_dump_json()),
    ),
    decode=_test_from_fields,
)
