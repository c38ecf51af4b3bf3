"""Model adapters: one declarative table of the supported vision-language families.

Each :class:`ModelFamily` row says where the language model sits inside the full model, which
sub-config describes it, and which config attributes hold the ids of the visual tokens that the
processor expands into the prompt. Everything else in eahlib asks this table; there are no
``if "llava" in name`` branches elsewhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelFamily:
    """Where a family keeps its language model and how its image tokens are found.

    Attributes:
        name: short family name.
        architectures: class names of the full models of this family.
        language_model: dotted attribute path from the full model to the language model.
        text_config: name of the language model's sub-config (``None``: the top config).
        image_token_attrs: config attributes holding visual-token ids (missing ones skipped).
        checkpoint: a public checkpoint of the family, for documentation and examples.
    """

    name: str
    architectures: tuple[str, ...]
    language_model: str
    text_config: str | None
    image_token_attrs: tuple[str, ...]
    checkpoint: str


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        "llava", ("LlavaForConditionalGeneration",), "model.language_model", "text_config",
        ("image_token_id", "image_token_index"), "llava-hf/llava-1.5-7b-hf",
    ),
    ModelFamily(
        "llava_next", ("LlavaNextForConditionalGeneration",), "model.language_model", "text_config",
        ("image_token_id", "image_token_index"), "llava-hf/llava-v1.6-vicuna-7b-hf",
    ),
    ModelFamily(
        "qwen2_vl", ("Qwen2VLForConditionalGeneration",), "model.language_model", "text_config",
        ("image_token_id", "video_token_id"), "Qwen/Qwen2-VL-2B-Instruct",
    ),
    ModelFamily(
        "qwen2_5_vl", ("Qwen2_5_VLForConditionalGeneration",), "model.language_model", "text_config",
        ("image_token_id", "video_token_id"), "Qwen/Qwen2.5-VL-3B-Instruct",
    ),
    ModelFamily(
        "instructblip", ("InstructBlipForConditionalGeneration",), "language_model", "text_config",
        ("image_token_id", "image_token_index"), "Salesforce/instructblip-vicuna-7b",
    ),
)

GENERIC_FAMILY = ModelFamily(
    "generic", (), "model.language_model", "text_config", ("image_token_id", "image_token_index"), ""
)
"""Tried for a model outside the table: the layout most recent transformers VLMs share."""


def _resolve(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def model_family(model: nn.Module) -> ModelFamily:
    """The table row for ``model`` (or the generic layout, if it fits).

    Raises:
        ValueError: the model is neither in the table nor shaped like a standard VLM.
    """
    class_name = type(model).__name__
    for family in FAMILIES:
        if class_name in family.architectures:
            return family
    config = getattr(model, "config", None)
    has_image_token = any(getattr(config, a, None) is not None for a in GENERIC_FAMILY.image_token_attrs)
    if has_image_token and _resolve(model, GENERIC_FAMILY.language_model) is not None:
        return GENERIC_FAMILY
    supported = ", ".join(a for f in FAMILIES for a in f.architectures)
    raise ValueError(
        f"Unsupported model class {class_name}: it is not in eahlib's family table ({supported}) and does not "
        "look like a standard vision-language model (an image-token id in its config and a decoder at "
        "`model.language_model`). Add a ModelFamily row to eahlib.models.FAMILIES for it."
    )


def language_model(model: nn.Module) -> nn.Module:
    """The decoder-only language model inside a vision-language model."""
    family = model_family(model)
    module = _resolve(model, family.language_model)
    if module is None:
        raise ValueError(f"{type(model).__name__}: no language model at `{family.language_model}`.")
    return module


def text_config(model: nn.Module) -> Any:
    """The language model's config object (shared with the language model module)."""
    family = model_family(model)
    config = model.config if family.text_config is None else getattr(model.config, family.text_config)
    if config is None:
        raise ValueError(f"{type(model).__name__}: config has no `{family.text_config}`.")
    return config


def decoder(model: nn.Module) -> nn.Module:
    """The decoder stack of the language model (the module that owns ``.layers``)."""
    lm = language_model(model)
    for candidate in (lm, lm.get_decoder() if hasattr(lm, "get_decoder") else None):
        if isinstance(getattr(candidate, "layers", None), nn.ModuleList):
            return candidate
    raise ValueError(
        f"{type(model).__name__}: the language model {type(lm).__name__} has no `.layers` list of decoder "
        "layers (encoder-decoder language models such as T5 are not supported)."
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers, in order."""
    return decoder(model).layers


def attention_module(model: nn.Module, layer: int) -> nn.Module:
    """The self-attention module of decoder layer ``layer`` (0-based; negative counts from the end).

    Raises:
        IndexError: ``layer`` is out of range.
        ValueError: the layer has no ``self_attn`` module.
    """
    layers = decoder_layers(model)
    if not isinstance(layer, int) or not -len(layers) <= layer < len(layers):
        raise IndexError(
            f"layer={layer!r} is out of range: the language model has {len(layers)} decoder layers "
            f"(valid: 0..{len(layers) - 1})."
        )
    attention = getattr(layers[layer], "self_attn", None)
    if attention is None:
        raise ValueError(f"Decoder layer {layer} of {type(model).__name__} has no `self_attn` module.")
    return attention


def head_count(model: nn.Module) -> int:
    """Number of attention (query) heads per language-model layer."""
    return int(text_config(model).num_attention_heads)


def image_token_ids(model: nn.Module) -> list[int]:
    """Ids of the visual tokens (image, and video where the family has one) in the prompt."""
    family = model_family(model)
    configs = [model.config, text_config(model)]
    ids = {int(v) for a in family.image_token_attrs for c in configs if (v := getattr(c, a, None)) is not None}
    if not ids:
        raise ValueError(
            f"{type(model).__name__}: none of the config attributes {family.image_token_attrs} is set, so image "
            "tokens cannot be located in input_ids."
        )
    return sorted(ids)


def image_token_mask(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Which prompt positions are image tokens.

    Args:
        model: a supported vision-language model.
        input_ids: ``[B, N]`` token ids as produced by the model's processor (image placeholders
            already expanded to one token per image feature).

    Returns:
        ``[B, N]`` bool.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got {list(input_ids.shape)}.")
    ids = torch.tensor(image_token_ids(model), device=input_ids.device)
    return torch.isin(input_ids, ids)


BUILTIN_MODELS: dict[str, str] = {
    "organism": "eahlib.organism:load_organism",
    "organism-smollm2": "eahlib.organism.smollm2:load_organism_smollm2",
    "tiny-random-llava": "eahlib.testing:tiny_llava_pipeline",
}
"""Models built in code by eahlib (no download), by name: ``module:function`` returning
``(model, processor)``."""


def load_model(
    name_or_path: str,
    dtype: torch.dtype | str = "auto",
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str = "sdpa",
    **kwargs: Any,
) -> tuple[nn.Module, Any]:
    """Load a supported checkpoint and its processor from the Hugging Face Hub (or a local path).

    Downloads are cached by ``huggingface_hub``. Tests never call this for hub checkpoints.

    Args:
        name_or_path: e.g. ``"llava-hf/llava-1.5-7b-hf"``, or a name of :data:`BUILTIN_MODELS`.
        dtype: torch dtype or ``"auto"`` (the checkpoint's).
        device_map: passed to ``from_pretrained`` (``"auto"`` spreads over GPUs with accelerate).
        attn_implementation: the attention of every layer EAH does not touch.
        **kwargs: more ``from_pretrained`` arguments.

    Returns:
        ``(model, processor)``, the model in eval mode.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if name_or_path in BUILTIN_MODELS:
        module_name, function = BUILTIN_MODELS[name_or_path].split(":")
        model, processor = getattr(importlib.import_module(module_name), function)()
        if dtype != "auto":
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        if isinstance(device_map, str) and device_map != "auto":
            model = model.to(device_map)
        return model.eval(), processor
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path, dtype=dtype, device_map=device_map, attn_implementation=attn_implementation, **kwargs
    )
    model_family(model)
    processor = AutoProcessor.from_pretrained(name_or_path)
    return model.eval(), processor


def supported_families() -> Sequence[str]:
    """Names of the families in the table."""
    return [f.name for f in FAMILIES]
