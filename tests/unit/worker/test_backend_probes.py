"""worker.backend_probes: ONNX Runtime, OpenVINO and browser detection with fakes,
and the child-process runner with real children that hang, crash or answer.

The real probe of this machine's Chromium is in
tests/integration/test_it_backend_detection.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import (
    BackendInfo,
    BrowserInfo,
    CpuInfo,
    OnnxRuntimeInfo,
    OpenVinoInfo,
    WasmInfo,
    WebGpuInfo,
    WorkerCapabilities,
)
from testfleet.protocol.codec import MAX_FRAME_BYTES, decode, encode
from testfleet.protocol.messages import PROTOCOL_VERSION, Codec, Hello
from testfleet.worker import backend_probes
from testfleet.worker.backend_probes import (
    BackendProbes,
    ProbeFailedError,
    backend_hardware,
    probe_browser,
    probe_onnxruntime,
    run_in_child,
)
from testfleet.worker.browser_assets import ASSETS_ENV, REQUIRED_FILES
from testfleet.worker.browser_probe import adapter_from_page
from testfleet.worker.chromium import BROWSER_ENV, BrowserNotFoundError, find_chromium
from testfleet.worker.hardware import Probes, detect_capabilities

ORT = OnnxRuntimeInfo(version="1.20.0", providers=["CPUExecutionProvider"])
OV = OpenVinoInfo(version="2025.1", devices=["CPU", "GPU.0"], device_names={"CPU": "Xeon"})
CHROMIUM = BrowserInfo(
    path="/usr/bin/chromium",
    version="156.0",
    webgpu=WebGpuInfo(adapter="google swiftshader", features=["subgroups"]),
    webnn=True,
    wasm=WasmInfo(simd=True, threads=True),
)

# Probes that read nothing from this machine (no NVML, no torch child).
QUIET = Probes(
    cpu=lambda: CpuInfo(logical_cores=4),
    memory_gb=lambda: 16.0,
    os=lambda: "Linux",
    hostname=lambda: "box",
    python_version=lambda: "3.12",
    nvidia_gpus=lambda: [],
    torch=lambda: None,
)


def _fails() -> OpenVinoInfo | None:
    raise ProbeFailedError("did not answer within 15 s")


def test_every_backend_found_is_reported_and_adds_its_hardware_kind() -> None:
    probes = BackendProbes(onnxruntime=lambda: ORT, openvino=lambda: OV, browser=lambda: CHROMIUM)
    caps = detect_capabilities(
        tags={}, task_types=[TaskType.BENCHMARK], probes=QUIET, backend_probes=probes
    )
    assert caps.backends == BackendInfo(onnxruntime=ORT, openvino=OV, browser=CHROMIUM)
    assert caps.hardware == [
        HardwareKind.CPU,
        HardwareKind.OPENVINO,
        HardwareKind.WEBGPU,
        HardwareKind.WEBNN,
    ]
    assert caps.probe_errors == []


def test_a_failing_probe_is_an_error_line_and_the_others_still_count() -> None:
    probes = BackendProbes(onnxruntime=lambda: ORT, openvino=_fails, browser=lambda: None)
    caps = detect_capabilities(tags={}, task_types=[], probes=QUIET, backend_probes=probes)
    assert caps.backends.onnxruntime == ORT
    assert caps.backends.openvino is None
    assert caps.hardware == [HardwareKind.CPU]
    assert caps.probe_errors == ["openvino: ProbeFailedError: did not answer within 15 s"]


def test_without_backend_probes_nothing_is_probed() -> None:
    caps = detect_capabilities(tags={}, task_types=[], probes=QUIET)
    assert caps.backends == BackendInfo()


def test_an_absent_library_or_device_adds_no_kind() -> None:
    assert backend_hardware(BackendInfo()) == set()
    no_adapter = CHROMIUM.model_copy(update={"webgpu": WebGpuInfo(), "webnn": False})
    backends = BackendInfo(openvino=OpenVinoInfo(version="1"), browser=no_adapter)
    assert backend_hardware(backends) == set()


def test_the_hello_frame_with_the_largest_backend_document_round_trips() -> None:
    name = "n" * 128
    big = BackendInfo(
        onnxruntime=OnnxRuntimeInfo(version="v" * 64, providers=[name] * 32),
        openvino=OpenVinoInfo(
            version="v" * 64,
            devices=[name] * 32,
            device_names={f"{i:03}" + name[3:]: "d" * 256 for i in range(32)},
        ),
        browser=CHROMIUM.model_copy(update={"webgpu": WebGpuInfo(features=[name] * 64)}),
    )
    caps = WorkerCapabilities(hostname="h", os="o", python_version="3", backends=big)
    hello = Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id="w",
        session_key="k" * 16,
        capabilities=caps,
        slots=1,
    )
    for codec in Codec:
        frame = encode(hello, codec)
        assert len(frame) < MAX_FRAME_BYTES // 100
        assert decode(frame) == hello


def test_a_name_longer_than_its_bound_is_refused_at_the_edge() -> None:
    with pytest.raises(ValueError, match=r"providers\.0"):
        OnnxRuntimeInfo(version="1", providers=["x" * 129])
    with pytest.raises(ValueError, match="features"):
        WebGpuInfo(features=["f"] * 65)


def test_openvino_device_names_match_families_and_virtual_devices() -> None:
    assert OV.offers("CPU")
    assert OV.offers("gpu")
    assert OV.offers("GPU.0")
    assert not OV.offers("NPU")
    assert OV.offers("AUTO")
    assert OV.offers("MULTI:CPU,GPU")
    assert not OpenVinoInfo(version="1").offers("AUTO")


def test_the_page_answer_is_bounded() -> None:
    answer = {"adapter": "a" * 1000, "features": [f"f{i}" for i in range(100)]}
    info = adapter_from_page(answer)
    assert info.adapter is not None
    assert len(info.adapter) == 256
    assert len(info.features) == 64
    assert adapter_from_page({"adapter": None}) == WebGpuInfo()


# --------------------------------------------------------------------------- child processes


def test_a_child_that_answers_is_read_after_its_marker() -> None:
    assert run_in_child("json:dumps", [[1, 2]], timeout_seconds=60) == "[1, 2]"


def test_a_hung_probe_is_killed_at_its_timeout() -> None:
    with pytest.raises(ProbeFailedError, match="did not answer within 1 s"):
        run_in_child("time:sleep", [600], timeout_seconds=1)


def test_a_crashing_probe_is_an_error_naming_its_exit_code() -> None:
    with pytest.raises(ProbeFailedError, match="exited with code -6"):
        run_in_child("os:abort", [], timeout_seconds=60)


def test_a_probe_that_raises_names_the_exception() -> None:
    with pytest.raises(ProbeFailedError, match=r"code 1: ModuleNotFoundError"):
        run_in_child("no_such_module_here:probe", [], timeout_seconds=60)


def test_a_library_that_is_not_installed_starts_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_probes, "_installed", lambda module: False)

    def no_child(*_args: object, **_kw: object) -> None:
        raise AssertionError("no child for a library that is not installed")

    monkeypatch.setattr(backend_probes, "run_in_child", no_child)
    assert probe_onnxruntime() is None
    assert backend_probes.probe_openvino() is None


def test_a_child_answer_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_probes, "_installed", lambda module: True)
    monkeypatch.setattr(
        backend_probes, "run_in_child", lambda *a, **k: {"version": 3, "providers": "x"}
    )
    with pytest.raises(ValueError, match="version"):
        probe_onnxruntime()


# --------------------------------------------------------------------------- finding Chromium


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_chromium_is_found_on_path_by_its_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BROWSER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() is None
    assert probe_browser() is None
    chrome = _executable(tmp_path / "google-chrome")
    assert find_chromium() == chrome
    chromium = _executable(tmp_path / "chromium")
    assert find_chromium() == chromium


def test_a_named_browser_that_is_not_there_is_an_error_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BROWSER_ENV, raising=False)
    with pytest.raises(BrowserNotFoundError, match=r"--browser .*nope: no executable there"):
        find_chromium(str(tmp_path / "nope"))
    monkeypatch.setenv(BROWSER_ENV, str(tmp_path / "gone"))
    with pytest.raises(BrowserNotFoundError, match="gone"):
        find_chromium()


def test_a_named_browser_without_playwright_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = _executable(tmp_path / "chromium")
    monkeypatch.setattr(backend_probes, "_installed", lambda module: module != "playwright")
    with pytest.raises(ProbeFailedError, match="pip install 'testfleet\\[browser\\]'"):
        probe_browser(str(browser))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(BROWSER_ENV, raising=False)
    assert probe_browser() is None  # found on PATH only: simply no browser backend


def test_the_browser_probe_runs_in_a_child_with_the_found_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = _executable(tmp_path / "chromium")
    calls: list[tuple[str, list[str]]] = []

    def child(target: str, args: list[str], **_kw: object) -> object:
        calls.append((target, args))
        return json.loads(CHROMIUM.model_dump_json())

    monkeypatch.setattr(backend_probes, "run_in_child", child)
    dist = tmp_path / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in REQUIRED_FILES:
        (dist / name).write_text("")
    (dist.parent / "package.json").write_text('{"version": "1.31.1"}')
    monkeypatch.setenv(ASSETS_ENV, str(dist))
    expected = CHROMIUM.model_copy(update={"onnxruntime_web": "1.31.1"})
    assert probe_browser(str(browser)) == expected
    assert calls == [("testfleet.worker.browser_probe:browser_info", [str(browser)])]
    # Without onnxruntime-web's files the browser is still reported, unable to run yet.
    (dist / REQUIRED_FILES[0]).unlink()
    assert probe_browser(str(browser)) == CHROMIUM
