"""Dummy inputs of the right shape and dtype for each model family.

Callers: the runner plans the inputs once per run (:func:`plan_inputs`, which
also refuses shapes the model cannot take) and makes them once per batch size
(:func:`make_inputs`).

Shapes (B = batch size, L = ``sequence_length``):

* text encoder: ``input_ids`` and ``attention_mask`` [B, L];
* causal LM: ``input_ids`` [B, L];
* seq2seq: ``input_ids`` [B, L] and ``decoder_input_ids`` [B, L];
* vision: ``pixel_values`` [B, C, S, S], S = ``image_size`` or the model's
  (a size other than the model's is run with ``interpolate_pos_encoding``);
* speech: ``input_features`` [B, num_mel_bins, 2 * max_source_positions]
  (Whisper's encoder takes exactly that many frames: 30 s of audio for
  whisper-tiny) and ``decoder_input_ids`` [B, min(L, max_target_positions)].

Token ids are uniform over the vocabulary and features are standard normal,
from a fixed seed; float inputs take the benchmark's dtype, ids stay int64.
``use_cache=False`` is passed where the forward accepts it: one forward pass
needs no key/value cache, and building one would add memory and time that a
forward-pass benchmark should not count.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testfleet.domain.benchmark import BenchmarkConfig
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.errors import BenchmarkError
from testfleet.worker.benchmarking.models import InputFamily, LoadedModel

if TYPE_CHECKING:
    import torch

INPUT_SEED = 1234


@dataclass(frozen=True)
class InputPlan:
    family: InputFamily
    vocab_size: int = 0
    sequence_length: int | None = None
    decoder_length: int | None = None
    image_size: int | None = None
    num_channels: int | None = None
    num_mel_bins: int | None = None
    frames: int | None = None
    call_kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The input shape facts for the run's conditions (None fields left out)."""
        facts: dict[str, Any] = {
            "input_family": self.family.value,
            "sequence_length": self.sequence_length,
            "decoder_length": self.decoder_length,
            "image_size": self.image_size,
            "num_channels": self.num_channels,
            "num_mel_bins": self.num_mel_bins,
            "audio_frames": self.frames,
        }
        return {key: value for key, value in facts.items() if value is not None}


def _int_attr(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _accepts(model: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def plan_inputs(loaded: LoadedModel, config: BenchmarkConfig) -> InputPlan:
    """The input shapes for this model and benchmark; ``invalid_config`` if it cannot take them."""
    model_config = loaded.config
    family = loaded.family
    kwargs: dict[str, Any] = {}
    if _accepts(loaded.model, "use_cache"):
        kwargs["use_cache"] = False
    vocab = _int_attr(model_config, "vocab_size") or 0
    length = config.sequence_length

    if family is InputFamily.VISION:
        native = _int_attr(model_config, "image_size")
        size = config.image_size or native
        if size is None:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG, "the model's config has no image_size; give image_size"
            )
        patch = _int_attr(model_config, "patch_size")
        if patch is not None and size < patch:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG, f"image_size {size} is smaller than one {patch}px patch"
            )
        if native is not None and size != native:
            if not _accepts(loaded.model, "interpolate_pos_encoding"):
                raise BenchmarkError(
                    ErrorClass.INVALID_CONFIG,
                    f"{loaded.class_name} takes {native}px images and cannot interpolate "
                    f"its position embeddings to image_size {size}",
                )
            kwargs["interpolate_pos_encoding"] = True
        channels = _int_attr(model_config, "num_channels") or 3
        return InputPlan(family, image_size=size, num_channels=channels, call_kwargs=kwargs)

    if vocab < 1:
        raise BenchmarkError(ErrorClass.INVALID_CONFIG, "the model's config has no vocab_size")

    if family is InputFamily.SPEECH:
        mel = _int_attr(model_config, "num_mel_bins")
        positions = _int_attr(model_config, "max_source_positions")
        if mel is None or positions is None:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                "a speech model needs num_mel_bins and max_source_positions in its config",
            )
        target = _int_attr(model_config, "max_target_positions")
        decoder = min(length, target) if target else length
        return InputPlan(
            family,
            vocab_size=vocab,
            decoder_length=decoder,
            num_mel_bins=mel,
            frames=2 * positions,
            call_kwargs=kwargs,
        )

    limit = _int_attr(model_config, "max_position_embeddings")
    if limit is not None and length > limit:
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            f"sequence_length {length} is longer than the model's {limit} positions",
        )
    decoder_length = length if family is InputFamily.SEQ2SEQ else None
    return InputPlan(
        family,
        vocab_size=vocab,
        sequence_length=length,
        decoder_length=decoder_length,
        call_kwargs=kwargs,
    )


def make_inputs(
    plan: InputPlan,
    batch_size: int,
    *,
    device: torch.device,
    float_dtype: torch.dtype,
) -> dict[str, Any]:
    """The forward pass's keyword arguments for one batch size, on ``device``."""
    import torch

    generator = torch.Generator().manual_seed(INPUT_SEED)

    def ids(length: int) -> torch.Tensor:
        values = torch.randint(0, plan.vocab_size, (batch_size, length), generator=generator)
        return values.to(device)

    def floats(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=float_dtype)

    inputs: dict[str, Any] = {}
    family = plan.family
    if family is InputFamily.VISION:
        assert plan.image_size is not None
        assert plan.num_channels is not None
        size = plan.image_size
        inputs["pixel_values"] = floats(batch_size, plan.num_channels, size, size)
    elif family is InputFamily.SPEECH:
        assert plan.num_mel_bins is not None
        assert plan.frames is not None
        assert plan.decoder_length is not None
        inputs["input_features"] = floats(batch_size, plan.num_mel_bins, plan.frames)
        inputs["decoder_input_ids"] = ids(plan.decoder_length)
    else:
        assert plan.sequence_length is not None
        inputs["input_ids"] = ids(plan.sequence_length)
        if family is InputFamily.TEXT_ENCODER:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        elif family is InputFamily.SEQ2SEQ:
            assert plan.decoder_length is not None
            inputs["decoder_input_ids"] = ids(plan.decoder_length)
    return {**inputs, **plan.call_kwargs}
