"""The benchmarks page's batch-size curves, optimal batch size and series
history: pure on fixed rows, then rendered and served by a real app over the
seeded store (batch size 1 measured twice, batch size 64 out of memory on
its latest run)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_seed import MODEL, seed_store
from fastapi.testclient import TestClient

from testfleet.analysis.regressions import Figure, Sample, SeriesKey, SeriesKind
from testfleet.coordinator.app import create_app
from testfleet.coordinator.dashboard.benchmarks import (
    BadSelection,
    CurvePoint,
    SeriesSelection,
    batch_curves,
    history_points,
    optimal_batch,
    selection_from,
    series_rows,
)
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0
HTML = {"Accept": "text/html,application/xhtml+xml"}


def point(batch: int, throughput: float | None, error: str | None = None) -> CurvePoint:
    return CurvePoint(batch, throughput, None if throughput is None else 5.0, error, T0)


def row(batch: int, throughput: float | None, **changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "model": "bert",
        "variant": "seq=128",
        "hardware": "cuda",
        "device_name": "H100",
        "precision": "fp16",
        "is_simulated": False,
        "batch_size": batch,
        "throughput_items_per_second": throughput,
        "latency_ms": None if throughput is None else batch * 2.0,
        "error_class": None if throughput is not None else "out_of_memory",
        "recorded_time": T0,
    }
    found.update(changes)
    return found


# ---------------------------------------------------------------- pure


def test_the_optimum_is_the_highest_throughput() -> None:
    points = [point(1, 100.0), point(8, 700.0), point(32, 650.0)]
    assert optimal_batch(points) == points[1]


def test_a_tie_goes_to_the_smaller_batch() -> None:
    points = [point(16, 900.0), point(8, 900.0), point(32, 900.0)]
    chosen = optimal_batch(points)
    assert chosen is not None
    assert chosen.batch_size == 8


def test_a_failed_batch_size_is_never_chosen_even_with_a_figure() -> None:
    # An out_of_memory run with a stale throughput still counts as failed.
    points = [point(8, 500.0), point(64, 9999.0, "out_of_memory"), point(128, None)]
    assert points[1].failed
    assert points[2].failed
    chosen = optimal_batch(points)
    assert chosen is not None
    assert chosen.batch_size == 8
    assert optimal_batch([point(64, None, "out_of_memory")]) is None
    assert optimal_batch([]) is None


def test_curves_group_by_configuration_and_order_by_batch_size() -> None:
    rows = [
        row(32, 3000.0),
        row(1, 100.0),
        row(64, None),
        row(8, 800.0, precision="fp32"),
        row(8, 900.0, is_simulated=True),
    ]
    curves = batch_curves(rows)
    assert [(c.key.precision, c.key.is_simulated) for c in curves] == [
        ("fp16", False),
        ("fp16", True),
        ("fp32", False),
    ]
    fp16 = curves[0]
    assert [p.batch_size for p in fp16.points] == [1, 32, 64]
    assert fp16.optimal is not None
    assert fp16.optimal.batch_size == 32
    assert fp16.chart() == {
        "batch_size": [1.0, 32.0, 64.0],
        "throughput": [100.0, 3000.0, None],
        "latency_ms": [2.0, 64.0, None],
    }
    # A simulated run is a curve of its own, never mixed into the real one.
    assert curves[1].key.label == "cuda H100, fp16, seq=128, simulated"


def test_a_repeated_batch_size_keeps_its_newest_run() -> None:
    curves = batch_curves([row(8, 800.0, recorded_time=T0 + 10), row(8, 100.0)])
    assert curves[0].points == [CurvePoint(8, 800.0, 16.0, None, T0 + 10)]


def test_each_backend_on_the_same_device_is_a_curve_of_its_own() -> None:
    torch_row = row(8, 800.0, recorded_time=T0 + 10)  # a row from before schema 10: no backend
    ort_row = row(8, 950.0, backend="onnxruntime")
    curves = batch_curves([torch_row, ort_row])
    assert [(c.key.backend, c.points[0].throughput) for c in curves] == [
        ("onnxruntime", 950.0),
        ("torch", 800.0),
    ]
    assert [c.key.label for c in curves] == [
        "cuda H100, fp16, seq=128, onnxruntime",
        "cuda H100, fp16, seq=128",
    ]


def test_every_batch_size_failed_gives_a_curve_with_no_optimum() -> None:
    (curve,) = batch_curves([row(64, None), row(128, None)])
    assert curve.optimal is None
    assert all(p.failed for p in curve.points)


SELECTION = {
    "model": "bert",
    "variant": "seq=128",
    "hardware": "cuda",
    "device_name": "H100",
    "precision": "fp16",
    "batch_size": "8",
    "is_simulated": "false",
}


def test_a_history_selection_takes_every_label() -> None:
    assert selection_from(SELECTION) == SeriesSelection(
        "bert", "seq=128", "cuda", "H100", "fp16", 8, is_simulated=False
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": ""}, "model"),
        ({"device_name": "x\x00y"}, "device_name"),
        ({"batch_size": "0"}, "batch_size"),
        ({"batch_size": "eight"}, "batch_size"),
        ({"batch_size": "9" * 30}, "batch_size"),
        ({"is_simulated": "maybe"}, "is_simulated"),
        ({"backend": "tensorrt"}, "backend"),
    ],
)
def test_a_bad_selection_names_its_parameter(change: dict[str, str], field: str) -> None:
    with pytest.raises(BadSelection) as bad:
        selection_from({**SELECTION, **change})
    assert bad.value.name == field


def test_history_points_keep_only_the_chosen_series_with_failures_as_gaps() -> None:
    chosen = selection_from(SELECTION)
    rows = [
        row(8, 800.0),
        row(8, 900.0, variant="seq=512"),
        row(8, 900.0, is_simulated=True),
        row(8, None, recorded_time=T0 + 5),
        row(8, 990.0, backend="openvino"),
    ]
    assert history_points(rows, chosen) == [
        {"t": T0, "throughput_items_per_second": 800.0, "latency_ms": 16.0, "failed": False},
        {"t": T0 + 5, "throughput_items_per_second": None, "latency_ms": None, "failed": True},
    ]


# ---------------------------------------------------------------- served


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "dash.duckdb"
    seed_store(path)
    secret = create_token_in_file(path, "viewer", Role.VIEWER, now=T0).secret
    with TestClient(create_app(path, clock=FakeClock(T0 + 7200))) as served:
        signed = served.post("/dashboard/login", data={"token": secret}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        yield served


def test_the_page_shows_the_curve_its_optimum_and_the_failed_batch_size(
    client: TestClient,
) -> None:
    page = client.get("/dashboard/benchmarks", headers=HTML)
    assert page.status_code == 200, page.text
    text = page.text
    assert f'data-curve-model="{MODEL}"' in text
    assert 'data-optimal="1"' in text
    assert "Optimal batch size <b>1</b>: 125 items/s" in text
    failed = text.split('data-batch="64"')[1].split("</tr>")[0]
    assert "failed: out_of_memory" in failed
    curve = text.split('data-curve="')[1].split('"')[0]
    assert html.unescape(curve) == (
        '{"batch_size": [1.0, 64.0], "latency_ms": [10.0, null], "throughput": [125.0, null]}'
    )
    assert 'src="/dashboard/static/benchmarks.js"' in text
    assert 'class="series-row' in text


def test_a_series_rows_link_serves_its_history(client: TestClient) -> None:
    page = client.get("/dashboard/benchmarks", headers=HTML).text
    links = [html.unescape(part.split('"')[0]) for part in page.split('data-history="')[1:]]
    batch_one = next(link for link in links if "batch_size=1&" in link)
    answer = client.get(batch_one)
    assert answer.status_code == 200, answer.text
    points = answer.json()["points"]
    assert [p["throughput_items_per_second"] for p in points] == [100.0, 125.0]
    assert [p["failed"] for p in points] == [False, False]
    batch_64 = next(link for link in links if "batch_size=64&" in link)
    # The latest batch-64 run failed: a gap after the one measured run.
    assert [p["failed"] for p in client.get(batch_64).json()["points"]] == [False, True]


def test_a_history_request_without_its_labels_is_a_400_naming_the_first(
    client: TestClient,
) -> None:
    answer = client.get("/dashboard/benchmarks/history?model=bert")
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "variant"
    assert "open the chart from a series row" in answer.json()["error"]["message"]


def test_series_rows_list_a_configurations_batch_sizes_by_number() -> None:
    def sample(batch: str, figure: Figure = Figure.THROUGHPUT) -> Sample:
        labels = (("hardware", "cuda"), ("batch_size", batch), ("is_simulated", "false"))
        return Sample(SeriesKey(SeriesKind.BENCHMARK, MODEL, figure, labels), 1.0, 10.0)

    samples = [sample(b) for b in ("8", "1", "32", "16")] + [sample("2", Figure.LATENCY)]
    listed = [
        (row.key.figure, dict(row.key.labels)["batch_size"]) for row in series_rows(samples, [])
    ]
    assert listed == [
        (Figure.LATENCY, "2"),
        (Figure.THROUGHPUT, "1"),
        (Figure.THROUGHPUT, "8"),
        (Figure.THROUGHPUT, "16"),
        (Figure.THROUGHPUT, "32"),
    ]


def test_a_backends_history_link_keeps_to_that_backend() -> None:
    chosen = selection_from({**SELECTION, "backend": "openvino"})
    assert chosen.backend == "openvino"
    rows = [row(8, 800.0), row(8, 990.0, backend="openvino", recorded_time=T0 + 1)]
    assert [p["throughput_items_per_second"] for p in history_points(rows, chosen)] == [990.0]
