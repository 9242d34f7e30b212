"""The model zoo: each of ``KNOWN_MODELS`` built from its configuration, or a local model.

Callers: the runner calls :func:`load_model` once per run; the executor calls
:func:`zoo_entry` to refuse an unknown model name without starting a child.

Known models are built from their transformers config class with random
weights (seeded, so two runs build the same model): nothing is downloaded.
Each entry spells out the published checkpoint's configuration values rather
than trusting the config class's defaults to stay equal to them across
transformers releases (with transformers 5.24 they are equal for all five):

============================  ====================================  ==========
name                          built as                              parameters
============================  ====================================  ==========
bert-base-uncased             BertModel(BertConfig)                 109.5 M
gpt2                          GPT2LMHeadModel(GPT2Config)           124.4 M
t5-small                      T5ForConditionalGeneration(T5Config)   60.5 M
vit-base-patch16-224          ViTModel(ViTConfig)                    86.4 M
whisper-tiny                  WhisperForConditionalGeneration        37.8 M
============================  ====================================  ==========

``config_overrides`` are applied to the configuration before the model is
built; a key the configuration does not have is ``invalid_config`` (listing the
keys it has), so a typo never silently benchmarks the full-size model. Aliases
transformers defines (``hidden_size`` for GPT-2's ``n_embd``) are accepted.

``model_path`` loads a saved model with ``local_files_only=True``: the class
named first in its config's ``architectures`` when transformers has it (so a
saved ``GPT2LMHeadModel`` keeps its head), else ``AutoModel``. Overrides are
set on the loaded configuration before the weights are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from testfleet.domain.benchmark import KNOWN_MODELS, BenchmarkConfig
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.errors import BenchmarkError, clip, describe, is_out_of_memory

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

#: Random weights come from this seed, so every run of a known model builds the same model.
WEIGHT_SEED = 0
#: Configuration entries that describe the file, not the model; never overridable.
_NOT_OVERRIDABLE = frozenset({"model_type", "transformers_version", "architectures"})


class InputFamily(StrEnum):
    """What a model's forward pass takes (see :mod:`.inputs`)."""

    TEXT_ENCODER = "text_encoder"
    CAUSAL_LM = "causal_lm"
    SEQ2SEQ = "seq2seq"
    VISION = "vision"
    SPEECH = "speech"


@dataclass(frozen=True)
class ZooEntry:
    config_class: str
    model_class: str
    family: InputFamily
    #: The published checkpoint's configuration values (the rest are the class defaults).
    values: Mapping[str, Any]


ZOO: dict[str, ZooEntry] = {
    "bert-base-uncased": ZooEntry(
        "BertConfig",
        "BertModel",
        InputFamily.TEXT_ENCODER,
        {
            "vocab_size": 30522,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        },
    ),
    "gpt2": ZooEntry(
        "GPT2Config",
        "GPT2LMHeadModel",
        InputFamily.CAUSAL_LM,
        {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12},
    ),
    "t5-small": ZooEntry(
        "T5Config",
        "T5ForConditionalGeneration",
        InputFamily.SEQ2SEQ,
        {
            "vocab_size": 32128,
            "d_model": 512,
            "d_kv": 64,
            "d_ff": 2048,
            # num_decoder_layers is left to T5Config, which sets it to num_layers
            # (6 here): overriding num_layers then shrinks both stacks, as it would
            # with T5Config(num_layers=...).
            "num_layers": 6,
            "num_heads": 8,
            "relative_attention_num_buckets": 32,
            "feed_forward_proj": "relu",
            "dropout_rate": 0.1,
            "layer_norm_epsilon": 1e-6,
        },
    ),
    "vit-base-patch16-224": ZooEntry(
        "ViTConfig",
        "ViTModel",
        InputFamily.VISION,
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 16,
            "num_channels": 3,
        },
    ),
    "whisper-tiny": ZooEntry(
        "WhisperConfig",
        "WhisperForConditionalGeneration",
        InputFamily.SPEECH,
        {
            "vocab_size": 51865,
            "num_mel_bins": 80,
            "d_model": 384,
            "encoder_layers": 4,
            "decoder_layers": 4,
            "encoder_attention_heads": 6,
            "decoder_attention_heads": 6,
            "encoder_ffn_dim": 1536,
            "decoder_ffn_dim": 1536,
            "max_source_positions": 1500,
            "max_target_positions": 448,
        },
    ),
}
assert set(ZOO) == set(KNOWN_MODELS), "every known model needs a zoo entry"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: PretrainedConfig
    family: InputFamily
    source: Literal["config", "local_path"]
    class_name: str
    parameters: int


def zoo_entry(name: str) -> ZooEntry:
    """The entry for a known model name, or ``invalid_config`` listing the known ones."""
    try:
        return ZOO[name]
    except KeyError:
        known = ", ".join(KNOWN_MODELS)
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            f"unknown model {name!r}: this worker builds {known} from their configurations "
            f"(or give model_path to a saved model on the worker)",
        ) from None


def load_model(config: BenchmarkConfig) -> LoadedModel:
    """Build or load the benchmark's model, in eval mode, on the CPU, in fp32."""
    if config.model_path is not None:
        return _load_local(Path(config.model_path), config.config_overrides)
    return _build_known(config.model, config.config_overrides)


def _overridable_keys(reference: PretrainedConfig) -> tuple[set[str], dict[str, str]]:
    keys = {key for key in reference.to_dict() if not key.startswith("_")} - _NOT_OVERRIDABLE
    aliases = dict(getattr(reference, "attribute_map", {}) or {})
    return keys, aliases


def _normalise_overrides(
    reference: PretrainedConfig, overrides: Mapping[str, Any], what: str
) -> dict[str, Any]:
    """Overrides under the configuration's own key names; unknown keys are invalid_config."""
    keys, aliases = _overridable_keys(reference)
    normalised: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in overrides.items():
        canonical = aliases.get(key, key)
        if canonical not in keys:
            unknown.append(key)
        else:
            normalised[canonical] = value
    if unknown:
        listed = ", ".join(sorted(keys | set(aliases)))
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            clip(
                f"config_overrides has keys {what} does not have: {', '.join(sorted(unknown))} "
                f"(its keys: {listed})"
            ),
        )
    return normalised


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _build_known(name: str, overrides: Mapping[str, Any]) -> LoadedModel:
    entry = zoo_entry(name)
    import torch
    import transformers

    config_class = getattr(transformers, entry.config_class)
    model_class = getattr(transformers, entry.model_class)
    reference = config_class(**entry.values)
    normalised = _normalise_overrides(reference, overrides, f"{name} ({entry.config_class})")
    # Unknown keys were refused above, so the checkpoint's values plus the overrides
    # go through the constructor (which derives dependent fields, like T5's
    # num_decoder_layers or its activation from feed_forward_proj).
    try:
        model_config = config_class(**{**entry.values, **normalised})
    except Exception as exc:
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG, f"config_overrides rejected: {describe(exc)}"
        ) from exc
    torch.manual_seed(WEIGHT_SEED)
    try:
        model = model_class(model_config)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        # With overrides the likeliest cause is an inconsistent configuration
        # (hidden size not divisible by the heads); without, a broken install.
        error_class = ErrorClass.INVALID_CONFIG if normalised else ErrorClass.INFRASTRUCTURE
        raise BenchmarkError(
            error_class, f"building {entry.model_class} failed: {describe(exc)}"
        ) from exc
    model.eval()
    return LoadedModel(
        model=model,
        config=model_config,
        family=entry.family,
        source="config",
        class_name=entry.model_class,
        parameters=_count_parameters(model),
    )


def _model_class_for(config: PretrainedConfig) -> Any:
    import transformers

    for name in config.architectures or []:
        candidate = getattr(transformers, name, None)
        if isinstance(candidate, type) and issubclass(candidate, transformers.PreTrainedModel):
            return candidate
    return transformers.AutoModel


def _local_family(model: torch.nn.Module, config: PretrainedConfig, class_name: str) -> InputFamily:
    main_input = getattr(model, "main_input_name", "input_ids")
    if main_input == "input_features":
        return InputFamily.SPEECH
    if main_input == "pixel_values":
        return InputFamily.VISION
    if main_input != "input_ids":
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            f"{class_name} takes {main_input!r}; the runner makes inputs for text "
            f"(input_ids), vision (pixel_values) and speech (input_features) models",
        )
    if getattr(config, "is_encoder_decoder", False):
        return InputFamily.SEQ2SEQ
    if "CausalLM" in class_name or "LMHead" in class_name:
        return InputFamily.CAUSAL_LM
    return InputFamily.TEXT_ENCODER


def _load_local(path: Path, overrides: Mapping[str, Any]) -> LoadedModel:
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise BenchmarkError(ErrorClass.INVALID_CONFIG, f"model_path {what} on this worker: {path}")
    import torch
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            f"cannot read a model configuration in {path}: {describe(exc)}",
        ) from exc
    normalised = _normalise_overrides(model_config, overrides, f"the model in {path}")
    for key, value in normalised.items():
        setattr(model_config, key, value)
    model_class = _model_class_for(model_config)
    torch.manual_seed(WEIGHT_SEED)  # for any weights the files do not hold
    try:
        model = model_class.from_pretrained(path, config=model_config, local_files_only=True)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG, f"cannot load the model in {path}: {describe(exc)}"
        ) from exc
    model.eval()
    class_name = type(model).__name__
    return LoadedModel(
        model=model,
        config=model_config,
        family=_local_family(model, model_config, class_name),
        source="local_path",
        class_name=class_name,
        parameters=_count_parameters(model),
    )
