"""Fuzz the worker channel's edge, from the frame to the DuckDB file.

Valid frames of every kind a worker sends are mutated with what a hostile or
broken peer can put in JSON text or MessagePack (``inf``, ``nan``, integers
past 64 bits, numeric strings, bytes, non-string keys, NUL, lone surrogates,
huge strings, wrong shapes) and decoded. The property: decoding either
refuses the frame with a :class:`ProtocolError`, or the message it returns
can be applied by the coordinator's state, committed to a real DuckDB store,
read back in full by a restarting coordinator, and every frame the
coordinator would send in reply can be encoded. Nothing else may happen: an
exception anywhere past the decoder would stop a real coordinator, and a row
that does not read back would keep it from starting (issue 8's findings).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testfleet.coordinator.events import SubmitTasks, WorkerConnected, WorkerFrame
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.domain.task import TaskSpec
from testfleet.protocol.codec import ProtocolError, decode, encode
from testfleet.protocol.messages import PROTOCOL_VERSION, Error, Hello, Message
from testfleet.store import Store

NOW = 1_700_000_000.0
WORKER = "fuzz-worker"

CAPABILITIES: dict[str, Any] = {
    "hostname": "box",
    "os": "Linux",
    "python_version": "3.11",
    "cpu": {"model": "x", "architecture": "x86_64", "logical_cores": 4, "physical_cores": 2},
    "memory_gb": 16.0,
    "gpus": [{"index": 0, "vendor": "nvidia", "name": "H200", "memory_gb": 141.0}],
    "hardware": ["cpu", "cuda"],
    "task_types": ["command", "simulated", "benchmark", "test"],
    "tags": {"rack": "a"},
}


def hello(worker_id: str) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol_version": PROTOCOL_VERSION,
        "worker_id": worker_id,
        "session_key": "k" * 16,
        "capabilities": copy.deepcopy(CAPABILITIES),
        "slots": 3,
        "running_attempts": [1],
        "held_results": [],
        "codecs": ["json"],
    }


def record_of(nodeid: str) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "location": {"path": "t.py", "lineno": 3, "domain": nodeid},
        "keywords": ["t.py"],
        "phases": [
            {"when": "setup", "outcome": "passed", "duration": 0.1},
            {"when": "call", "outcome": "failed", "duration": 0.2, "longrepr": "E  boom"},
            {"when": "teardown", "outcome": "passed", "duration": 0.0},
        ],
    }


def result(attempt_id: int, task_id: str, results: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "result",
        "results": [
            {
                "attempt_id": attempt_id,
                "started_at": NOW,
                "finished_at": NOW + 1,
                "result": {
                    "task_id": task_id,
                    "worker_id": WORKER,
                    "status": "completed",
                    "execution_time_seconds": 1.5,
                    "hardware_metrics": {"cpu_percent": 50.0},
                    "results": results,
                    "simulation_status": {"is_simulated": False},
                    "logs": "aGk=",
                },
            }
        ],
    }


BENCHMARK_OUTCOME: dict[str, Any] = {
    "kind": "model_benchmark",
    "model": "bert-base-uncased",
    "model_source": "config",
    "hardware": "cpu",
    "device": "cpu",
    "device_name": "cpu",
    "precision": "fp32",
    "auto_batch_size": False,
    "batch_sizes": {
        "1": {
            "latency_ms": 1.0,
            "latency_p50_ms": 1.0,
            "latency_p90_ms": 1.1,
            "latency_p99_ms": 1.2,
            "throughput_items_per_second": 900.0,
            "memory_mb": 100.0,
            "iterations": 10,
        }
    },
    "errors": {"2": {"error_class": "out_of_memory", "message": "oom"}},
    "optimal_batch_size": 1,
    "conditions": {"torch_version": "2.13.0", "config_overrides": {"num_hidden_layers": 2}},
}

#: Attempts 1, 2 and 3 are open on WORKER once the world is built (see below).
TEMPLATES: list[dict[str, Any]] = [
    hello("fuzz-other"),
    hello(WORKER),
    {
        "type": "heartbeat",
        "load": {"cpu_percent": 10.0, "memory_percent": 20.0, "load_average_1m": 0.5},
        "running_attempts": [1, 2],
    },
    {"type": "accept", "attempt_ids": [1, 2, 3]},
    {"type": "reject", "attempt_id": 2, "reason": "busy"},
    {"type": "log", "attempt_id": 1, "stream": "stdout", "data": "line"},
    {"type": "tests", "attempt_id": 3, "records": [record_of("t.py::a")]},
    result(1, "fuzz-simulated", {"slept_seconds": 0.5}),
    result(2, "fuzz-benchmark", BENCHMARK_OUTCOME),
    result(
        3,
        "fuzz-test",
        {"run_id": "run-1", "tests": [record_of("t.py::a"), record_of("t.py::b")]},
    ),
    {"type": "bye", "reason": "stopping"},
]

#: What a broken or hostile peer can put where a value belongs.
HOSTILE: list[Any] = [
    float("inf"),
    float("-inf"),
    float("nan"),
    2**64,
    2**63,
    -(2**63) - 1,
    1e30,
    -1,
    0,
    "99999999999999999999999",
    "inf",
    "NaN",
    "",
    "x" * 20_000,
    "\x00",
    "a\ud800",
    b"\xff\xfe",
    [],
    [[[]]],
    {},
    {"1": 2},
    None,
    True,
    "../..",
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a document, containers included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    document = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        positions = list(paths(document))[1:]
        if not positions:
            break  # everything was deleted
        path = draw(st.sampled_from(positions))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add_key"]))
        # A copy: later mutations may reach into it, and HOSTILE is shared.
        value = copy.deepcopy(
            draw(
                st.one_of(
                    st.sampled_from(HOSTILE),
                    st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(),
                    st.text(max_size=12),
                )
            )
        )
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add_key" and isinstance(parent, dict):
            key = draw(st.sampled_from(["extra", 1, "\x00", "a\ud800"]))
            parent[key] = value
        else:
            parent[path[-1]] = value
    return document


def encoded(document: dict[str, Any], as_msgpack: bool) -> str | bytes | None:
    """The frame as a peer would send it, or None if that codec cannot carry it."""
    try:
        if as_msgpack:
            packed: bytes = msgpack.packb(document, use_bin_type=True)
            return packed
        # Python's json writes NaN and Infinity, which JSON does not allow.
        return json.dumps(document, allow_nan=True)
    except (TypeError, ValueError, OverflowError):
        return None


def world() -> tuple[CoordinatorState, Store]:
    """A coordinator state and a real store with WORKER running attempts 1-3."""
    state = CoordinatorState(CoordinatorSettings(), NOW)
    store = Store(":memory:")
    specs = [
        TaskSpec.model_validate({"task_id": "fuzz-simulated", "type": "simulated"}),
        TaskSpec.model_validate(
            {"task_id": "fuzz-benchmark", "type": "benchmark", "config": {"model": "gpt2"}}
        ),
        TaskSpec.model_validate(
            {
                "task_id": "fuzz-test",
                "type": "test",
                "config": {
                    "run_id": "run-1",
                    "project": {"path": "/srv/project"},
                    "node_ids": ["t.py::a", "t.py::b"],
                },
            }
        ),
    ]

    class Ignore:
        def resolve(self, value: object) -> None:
            pass

    state.handle(SubmitTasks(specs, Ignore()), NOW)
    first = Hello.model_validate({**hello(WORKER), "running_attempts": []})
    state.handle(WorkerConnected(1, first), NOW)
    state.schedule(NOW)
    store.write(state.take_effects().batch)
    assert sorted(state.open_attempts) == [1, 2, 3]
    return state, store


def apply_and_store(message: Message, state: CoordinatorState, store: Store) -> None:
    """What the coordinator does with a decoded frame; nothing here may raise."""
    now = NOW + 1
    if isinstance(message, Hello):
        state.handle(WorkerConnected(2, message), now)
    else:
        state.handle(WorkerFrame(1, message), now)
    state.schedule(now)
    effects = state.take_effects()
    store.write(effects.batch)
    for _, sent in effects.sends:
        encode(sent)
    for _, error in effects.closes:
        if error is not None:
            encode(error)
    recovered = store.load_state()
    assert recovered.unreadable_rows == []
    for task_id in ("fuzz-simulated", "fuzz-benchmark", "fuzz-test"):
        store.get_task(task_id)
        store.get_attempts(task_id)
        store.get_results(task_id)
        store.get_benchmark_rows(task_id)
    store.run_test_rows("run-1")


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated_frames(), st.booleans())
def test_a_mutated_frame_is_refused_or_stored_and_read_back(
    document: dict[str, Any], as_msgpack: bool
) -> None:
    frame = encoded(document, as_msgpack)
    if frame is None:
        return
    try:
        message = decode(frame)
    except ProtocolError as refusal:
        # The refusal itself must go out as an error frame.
        encode(Error(code=refusal.code, message=refusal.message))
        return
    state, store = world()
    try:
        apply_and_store(message, state, store)
    finally:
        store.close()


def test_every_template_is_valid_and_stored() -> None:
    # The fuzzer starts from valid frames: otherwise it would only test refusals.
    for document in TEMPLATES:
        for as_msgpack in (False, True):
            frame = encoded(document, as_msgpack)
            assert frame is not None
            message = decode(frame)
            state, store = world()
            try:
                apply_and_store(message, state, store)
            finally:
                store.close()
