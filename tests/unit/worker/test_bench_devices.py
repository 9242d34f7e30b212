"""Device choice and error classification: pure, no torch."""

from __future__ import annotations

import pytest

from testfleet.domain.benchmark import KNOWN_MODELS
from testfleet.domain.enums import ErrorClass, HardwareKind
from testfleet.domain.hardware import TorchInfo
from testfleet.worker.benchmarking.devices import (
    choose_hardware,
    needs_probe,
    unsupported_reason,
    usable_hardware,
)
from testfleet.worker.benchmarking.errors import (
    BenchmarkError,
    classify_batch_error,
    classify_setup_error,
    is_out_of_memory,
)
from testfleet.worker.benchmarking.models import ZOO, zoo_entry

CPU, CUDA, ROCM, MPS, OPENVINO = (
    HardwareKind.CPU,
    HardwareKind.CUDA,
    HardwareKind.ROCM,
    HardwareKind.MPS,
    HardwareKind.OPENVINO,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_usable_hardware_follows_the_torch_probe() -> None:
    assert usable_hardware(None) == {CPU}
    assert usable_hardware(TorchInfo(version="2")) == {CPU}
    assert usable_hardware(TorchInfo(version="2", cuda_available=True)) == {CPU, CUDA}
    rocm = TorchInfo(version="2", cuda_available=True, hip_version="6.2")
    assert usable_hardware(rocm) == {CPU, ROCM}
    assert usable_hardware(TorchInfo(version="2", mps_available=True)) == {CPU, MPS}


@pytest.mark.parametrize(
    ("pinned", "required", "usable", "expected"),
    [
        (None, [], {CPU}, CPU),
        (None, [], {CPU, CUDA}, CPU),  # nothing required: the CPU, even on a GPU worker
        (CUDA, [], {CPU}, CUDA),  # pinned wins, and the runner says if it is missing
        (CPU, [CUDA], {CPU, CUDA}, CPU),
        (None, [CUDA], {CPU, CUDA}, CUDA),
        (None, [ROCM, CUDA], {CPU, CUDA}, CUDA),
        (None, [CUDA, CPU], {CPU}, CPU),
        (None, [CPU, CUDA], {CPU, CUDA}, CPU),
        # Nothing usable: the first required kind, to fail loudly rather than measure the CPU.
        (None, [CUDA], {CPU}, CUDA),
        (None, [ROCM, MPS], {CPU}, ROCM),
        (None, [OPENVINO], {CPU}, OPENVINO),
    ],
)
def test_choose_hardware(
    pinned: HardwareKind | None,
    required: list[HardwareKind],
    usable: set[HardwareKind],
    expected: HardwareKind,
) -> None:
    assert choose_hardware(pinned, required, frozenset(usable)) is expected


def test_the_probe_is_needed_only_when_the_choice_depends_on_it() -> None:
    assert not needs_probe(None, [])
    assert not needs_probe(None, [CUDA])
    assert not needs_probe(None, [CPU, CUDA])
    assert not needs_probe(CUDA, [ROCM, CUDA])
    assert needs_probe(None, [ROCM, CUDA])
    assert needs_probe(None, [CUDA, CPU])


def test_only_torch_kinds_are_supported() -> None:
    for kind in (CPU, CUDA, ROCM, MPS):
        assert unsupported_reason(kind) is None
    reason = unsupported_reason(OPENVINO)
    assert reason is not None
    assert "openvino" in reason


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError (matched by name, no torch import)."""


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("HIP out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        ),
        OSError(12, "Cannot allocate memory"),
    ],
)
def test_every_way_memory_runs_out_is_out_of_memory(exc: BaseException) -> None:
    assert is_out_of_memory(exc)
    error = classify_batch_error(exc)
    assert error.error_class is ErrorClass.OUT_OF_MEMORY
    assert classify_setup_error(exc).error_class is ErrorClass.OUT_OF_MEMORY


def test_an_oom_message_keeps_only_its_first_line() -> None:
    exc = OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nallocator advice ...")
    assert classify_batch_error(exc).message == (
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    )


def test_other_errors_are_classified_by_where_they_happen() -> None:
    shape = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    assert not is_out_of_memory(shape)
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime/OS errors say so
    assert classify_batch_error(shape).error_class is ErrorClass.TASK_FAILURE
    assert classify_setup_error(shape).error_class is ErrorClass.INFRASTRUCTURE
    missing = classify_setup_error(ModuleNotFoundError("No module named 'transformers'"))
    assert missing.error_class is ErrorClass.INFRASTRUCTURE
    assert "not importable" in missing.message
    named = BenchmarkError(ErrorClass.INVALID_CONFIG, "bad key")
    assert classify_batch_error(named).error_class is ErrorClass.INVALID_CONFIG
    assert classify_setup_error(named).message == "bad key"


def test_every_known_model_has_a_zoo_entry_and_unknown_names_list_them() -> None:
    assert set(ZOO) == set(KNOWN_MODELS)
    assert zoo_entry("gpt2").model_class == "GPT2LMHeadModel"
    with pytest.raises(BenchmarkError) as caught:
        zoo_entry("bert-large-cased")
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG
    for name in KNOWN_MODELS:
        assert name in caught.value.message


def test_zoo_entries_are_the_published_checkpoints_configurations() -> None:
    whisper = ZOO["whisper-tiny"].values
    assert (whisper["d_model"], whisper["encoder_layers"], whisper["decoder_layers"]) == (384, 4, 4)
    assert (whisper["encoder_attention_heads"], whisper["num_mel_bins"]) == (6, 80)
    t5 = ZOO["t5-small"].values
    assert (t5["d_model"], t5["d_ff"], t5["num_layers"], t5["num_heads"], t5["d_kv"]) == (
        512,
        2048,
        6,
        8,
        64,
    )
    assert t5["vocab_size"] == 32128
    vit = ZOO["vit-base-patch16-224"].values
    assert (vit["image_size"], vit["patch_size"], vit["hidden_size"]) == (224, 16, 768)
