"""The chaos suite's invariants, read from the DuckDB file once the coordinator
has stopped, and the figures table a run prints.

Used by the harness (``chaos_fleet.py``) at the end of a run. Each check
returns problems in words (empty when it holds):

* every accepted task is in ``distributed_tasks``, finished, with exactly
  one result whose disposition is ``outcome`` (none lost, none twice);
* every test of each pytest run has exactly one row in ``test_results``;
* no attempt in ``task_execution_history`` is left open.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from testfleet.domain.enums import AttemptStatus, ResultDisposition, TaskStatus

#: How many ids a problem quotes (the rest are counted).
QUOTE = 5
OPEN_ATTEMPTS = (AttemptStatus.ASSIGNED.value, AttemptStatus.RUNNING.value)


@dataclass
class StoreFindings:
    """What the DuckDB file says about the run."""

    accepted: int = 0
    finished: int = 0
    lost: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    no_outcome: list[str] = field(default_factory=list)
    late_results: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    open_attempts: list[str] = field(default_factory=list)
    test_rows: int = 0
    tests_twice: list[str] = field(default_factory=list)
    test_outcomes: Counter[str] = field(default_factory=Counter)
    #: Rows in test_results per pytest run.
    test_runs: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = []
        for label, ids in (
            ("accepted but absent from distributed_tasks (lost)", self.lost),
            ("accepted but never finished (lost)", self.unfinished),
            ("finished with more than one counted outcome (twice)", self.duplicates),
            ("finished without a counted outcome", self.no_outcome),
            ("attempts left open in task_execution_history", self.open_attempts),
            ("tests of the pytest run reported more than once", self.tests_twice),
        ):
            if ids:
                more = f" and {len(ids) - QUOTE} more" if len(ids) > QUOTE else ""
                found.append(f"{len(ids)} {label}: {', '.join(ids[:QUOTE])}{more}")
        return found


def read_store(db: Path, accepted: Sequence[str]) -> StoreFindings:
    """Check the invariants on the stopped coordinator's file (read-only)."""
    findings = StoreFindings(accepted=len(accepted))
    with duckdb.connect(str(db), read_only=True) as con:
        status = dict(con.execute("SELECT task_id, status FROM distributed_tasks").fetchall())
        outcomes = {
            task_id: (outcome, late)
            for task_id, outcome, late in con.execute(
                "SELECT task_id, count(*) FILTER (WHERE disposition = ?), "
                "count(*) FILTER (WHERE disposition = ?) FROM task_results GROUP BY task_id",
                [ResultDisposition.OUTCOME.value, ResultDisposition.LATE.value],
            ).fetchall()
        }
        findings.open_attempts = [
            f"{task_id} attempt {attempt_id} ({state}, worker {worker})"
            for attempt_id, task_id, state, worker in con.execute(
                "SELECT id, task_id, status, worker_id FROM task_execution_history "
                "WHERE end_time IS NULL OR status IN (?, ?) ORDER BY id",
                list(OPEN_ATTEMPTS),
            ).fetchall()
        ]
        tests = con.execute(
            "SELECT run_id || ' ' || nodeid, count(*), min(outcome) FROM test_results "
            "GROUP BY run_id, nodeid"
        ).fetchall()
        findings.test_runs = dict(
            con.execute("SELECT run_id, count(*) FROM test_results GROUP BY run_id").fetchall()
        )
    terminal = {s.value for s in TaskStatus if s.is_terminal}
    for task_id in accepted:
        state = status.get(task_id)
        if state is None:
            findings.lost.append(task_id)
            continue
        findings.statuses[state] += 1
        if state not in terminal:
            findings.unfinished.append(f"{task_id} ({state})")
            continue
        findings.finished += 1
        counted, late = outcomes.get(task_id, (0, 0))
        findings.late_results += late
        if counted > 1:
            findings.duplicates.append(f"{task_id} ({counted} outcomes)")
        elif counted == 0 and state in (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value):
            findings.no_outcome.append(f"{task_id} ({state})")
    findings.test_rows = sum(count for _, count, _ in tests)
    findings.tests_twice = [f"{nodeid} ({count}x)" for nodeid, count, _ in tests if count > 1]
    findings.test_outcomes = Counter(outcome for _, count, outcome in tests if count == 1)
    return findings


def figures_table(rows: Sequence[tuple[str, object]]) -> str:
    """A two-column plain-text table (the README quotes it as is)."""
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
