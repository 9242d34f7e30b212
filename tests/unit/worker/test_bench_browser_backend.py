"""The browser backend without a browser: its refusals before anything starts,
and the tensors' round trip through the page's base64 encoding.

Real runs in Debian's Chromium are in tests/integration/test_it_browser_backend.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkConfig
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.backends import backend_for
from testfleet.worker.benchmarking.backends.browser import (
    BrowserBackend,
    _encode,
    decode_output,
)
from testfleet.worker.benchmarking.errors import BenchmarkError
from testfleet.worker.browser_assets import ASSETS_ENV, REQUIRED_FILES
from testfleet.worker.chromium import BROWSER_ENV


def config(**fields: object) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate(
        {"model": "bert-base-uncased", "backend": "browser", **fields}
    )


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake Chromium on an otherwise empty PATH, and complete fake assets."""
    path = tmp_path / "bin" / "chromium"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(path.parent))
    monkeypatch.delenv(BROWSER_ENV, raising=False)
    dist = tmp_path / "dist"
    dist.mkdir()
    for name in REQUIRED_FILES:
        (dist / name).write_text("")
    monkeypatch.setenv(ASSETS_ENV, str(dist))
    return path


def refusal(backend: BrowserBackend, cfg: BenchmarkConfig) -> BenchmarkError:
    with pytest.raises(BenchmarkError) as caught:
        backend.check(cfg)
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG
    return caught.value


def test_the_registry_gives_the_browser_backend() -> None:
    assert isinstance(backend_for(BenchmarkBackend.BROWSER), BrowserBackend)


def test_a_ready_worker_passes_the_check(chromium: Path) -> None:
    BrowserBackend().check(config(backend_device="webgpu"))


def test_only_fp32_runs_in_the_browser(chromium: Path) -> None:
    error = refusal(BrowserBackend(), config(precision="fp16"))
    assert "the browser backend runs fp32, not fp16" in str(error)


def test_no_chromium_is_a_refusal_naming_the_option(
    chromium: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "--browser PATH" in str(refusal(BrowserBackend(), config()))
    monkeypatch.setenv(BROWSER_ENV, str(tmp_path / "gone"))
    assert "gone: no executable there" in str(refusal(BrowserBackend(), config()))


def test_missing_assets_name_the_make_target(
    chromium: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ASSETS_ENV, str(tmp_path / "nothing"))
    message = str(refusal(BrowserBackend(), config()))
    assert "make browser-assets" in message
    assert REQUIRED_FILES[0] in message


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        np.array([[1, -2, 2**40]], dtype=np.int64),
        np.array([True, False]),
        np.zeros((2, 0, 3), dtype=np.float32),
    ],
)
def test_tensors_survive_the_page_encoding_exactly(array: np.ndarray) -> None:
    (encoded,) = _encode({"x": array})
    back = decode_output({**encoded, "name": "x"})
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_a_dtype_the_page_cannot_take_is_invalid_config() -> None:
    with pytest.raises(BenchmarkError, match="cannot pass complex64"):
        _encode({"x": np.zeros(2, dtype=np.complex64)})
