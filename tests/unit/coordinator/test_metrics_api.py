"""``GET /metrics`` and ``GET /api/v1/regressions`` on a real app (in-process, fake clock)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from testfleet.coordinator.app import create_app
from testfleet.coordinator.regressions_api import GAUGE_REFRESH_SECONDS
from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.records import WriteBatch
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer

T0 = 1_800_000_000.0


def run(attempt_id: int, latency: float, batch_size: int = 8) -> BenchmarkRow:
    return BenchmarkRow(
        attempt_id=attempt_id,
        batch_size=batch_size,
        task_id=f"bench-{attempt_id}",
        worker_id="w1",
        recorded_time=T0 - 1000 + attempt_id,
        model="bert",
        variant="seq=128",
        hardware="cuda",
        device_name="NVIDIA H100",
        precision="fp16",
        is_simulated=False,
        latency_ms=latency,
        latency_p50_ms=latency,
        latency_p90_ms=latency,
        latency_p99_ms=latency,
        throughput_items_per_second=batch_size * 1000 / latency,
        memory_mb=100.0,
        error_class=None,
        error_message=None,
        torch_version="2.5",
        transformers_version="4.46",
        load_note=None,
    )


class App:
    def __init__(self, client: TestClient, clock: FakeClock, viewer: dict[str, str]) -> None:
        self.client, self.clock, self.viewer = client, clock, viewer
        self.store: Store = client.app.state.store  # type: ignore[attr-defined]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = self.client.get("/metrics", headers=self.viewer)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    path = tmp_path / "m.duckdb"
    with Store(path) as store:
        # Batch size 8: 10 steady runs, then two 20 % slower (a regression);
        # batch size 16: steady but for one spike (none).
        steady = [10.0, 10.1, 9.9, 10.0, 10.2, 9.8, 10.0, 10.1, 9.9, 10.0]
        store.write(
            WriteBatch(
                benchmark_rows=[run(i, v) for i, v in enumerate([*steady, 12.0, 12.1], 1)]
                + [run(i, v, 16) for i, v in enumerate([*steady, 20.0, 10.0], 1)]
            )
        )
    viewer = bearer(path, Role.VIEWER)
    clock = FakeClock(T0)
    with TestClient(create_app(path, clock=clock)) as client:
        yield App(client, clock, viewer)


def test_metrics_need_a_token(app: App) -> None:
    response = app.client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    bad = app.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_metrics_parse_and_name_their_families(app: App) -> None:
    samples = app.metrics()
    names = {name for name, _ in samples}
    for expected in (
        "testfleet_workers",
        "testfleet_queue_wait_seconds_bucket",
        "testfleet_attempt_duration_seconds_count",
        "testfleet_store_commit_seconds_bucket",
        "testfleet_coordinator_uptime_seconds",
        "testfleet_event_loop_lag_seconds",
        "testfleet_http_requests_in_flight",
        "testfleet_worker_channels",
        "testfleet_benchmark_rows_total",
        "testfleet_slots",
    ):
        assert expected in names, expected
    assert all(name.startswith("testfleet_") for name in names)
    # The scrape itself is a request in flight.
    assert samples[("testfleet_http_requests_in_flight", ())] == 1
    assert samples[("testfleet_workers", (("status", "connected"),))] == 0


def test_open_regressions_are_a_gauge_refreshed_at_most_once_a_minute(app: App) -> None:
    key = ("testfleet_regressions_open", (("figure", "latency_ms"), ("kind", "benchmark")))
    samples = app.metrics()
    assert samples[key] == 1
    throughput = ("testfleet_regressions_open", (("figure", "throughput_items_per_second"),
                                                 ("kind", "benchmark")))  # fmt: skip
    assert samples[throughput] == 1
    # Two normal runs resolve it; the gauge shows it after its refresh interval.
    app.store.write(WriteBatch(benchmark_rows=[run(13, 10.0), run(14, 10.1)]))
    assert app.metrics()[key] == 1
    app.clock.advance(GAUGE_REFRESH_SECONDS)
    assert (app.metrics().get(key) or 0) == 0


def test_regressions_route_lists_the_open_ones(app: App) -> None:
    assert app.client.get("/api/v1/regressions").status_code == 401
    response = app.client.get("/api/v1/regressions", headers=app.viewer)
    assert response.status_code == 200
    body = response.json()
    assert body["open"] == 2
    figures = {(r["figure"], r["labels"]["batch_size"]) for r in body["regressions"]}
    assert figures == {("latency_ms", "8"), ("throughput_items_per_second", "8")}
    latency = next(r for r in body["regressions"] if r["figure"] == "latency_ms")
    assert latency["status"] == "open"
    assert latency["name"] == "bert"
    assert latency["labels"]["device_name"] == "NVIDIA H100"
    assert latency["worse_runs"] == 2
    assert latency["change_percent"] == pytest.approx(21.0)
    assert latency["baseline"] == pytest.approx(10.0)


def test_regressions_filter_by_kind_and_refuse_a_bad_one(app: App) -> None:
    tests_only = app.client.get("/api/v1/regressions?kind=test", headers=app.viewer)
    assert tests_only.json() == {"regressions": [], "open": 0}
    bad = app.client.get("/api/v1/regressions?kind=model", headers=app.viewer)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "query.kind"
