"""A chunk's task document carries its estimate as ``expected_seconds`` (the
coordinator's straggler check reads it) only when the split had durations."""

from __future__ import annotations

from testfleet.domain.pytest_tasks import ProjectSource
from testfleet.domain.task import MAX_TIMEOUT_SECONDS, TaskSpec
from testfleet.fleetrun.chunk_tasks import chunk_document
from testfleet.fleetrun.run_types import RunSettings
from testfleet.fleetrun.split import Chunk


def _settings() -> RunSettings:
    return RunSettings(run_id="run1", project=ProjectSource(path="/srv/project"), args=["t"])


def test_a_chunk_with_durations_carries_its_estimate() -> None:
    chunk = Chunk(node_ids=["t/a.py::x", "t/a.py::y"], estimated_seconds=12.5, hardware=())
    document = chunk_document("run1.p00001", chunk, _settings(), exclude=(), rerun=0)
    assert document["expected_seconds"] == 12.5
    assert TaskSpec.model_validate(document).expected_seconds == 12.5


def test_a_chunk_without_history_gives_no_estimate() -> None:
    chunk = Chunk(node_ids=["t/a.py::x"], estimated_seconds=0.0, hardware=())
    document = chunk_document("run1.p00002", chunk, _settings(), exclude=(), rerun=0)
    assert "expected_seconds" not in document
    assert TaskSpec.model_validate(document).expected_seconds is None


def test_an_estimate_past_the_longest_timeout_is_capped_so_the_document_stays_valid() -> None:
    chunk = Chunk(node_ids=["t/a.py::x"], estimated_seconds=1e12, hardware=())
    document = chunk_document("run1.p00003", chunk, _settings(), exclude=(), rerun=0)
    assert TaskSpec.model_validate(document).expected_seconds == MAX_TIMEOUT_SECONDS
