"""Model adapters: one declarative table of the supported vision-language families.

Each :class:`ModelFamily` row says where the language model sits inside the full model, which
sub-config describes it, and which config attributes hold the ids of the visual tokens that the
processor expands into the prompt. Everything else in eahlib asks this table; there are no
``if "llava" in name`` branches elsewhere.
"""

from __future__ import annotations

import importlib
import warnings
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
        model_types: the ``config.model_type`` values of the family's checkpoints.
        architectures: class names of the full models of this family.
        language_model: dotted attribute path from the full model to the language model (``""``: the
            full model is itself the decoder, as in Phi-4-multimodal).
        text_config: dotted path of the language model's sub-config (``None``: the top config).
        image_token_attrs: config attributes holding visual-token ids, dotted paths from the top config
            (``"vision_config.image_token_id"``); also looked up on the text config; missing ones skipped.
        checkpoint: a public checkpoint of the family, for documentation and examples.
        attention: attribute of a decoder layer holding its self-attention module; a layer without it
            (a hybrid model's convolution or recurrent layer) has no attention to study.
        auto_class: the ``transformers`` auto class that loads the family's checkpoints.
        notes: what is special about the family for eahlib (masks, layout), shown in the support matrix.
    """

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    language_model: str
    text_config: str | None
    image_token_attrs: tuple[str, ...]
    checkpoint: str
    attention: str = "self_attn"
    auto_class: str = "AutoModelForImageTextToText"
    notes: str = ""


@dataclass(frozen=True)
class UnservedFamily:
    """A vision-language family eahlib cannot serve, and why (raised by :func:`model_family`).

    Attributes:
        model_types: the ``config.model_type`` values.
        architectures: class names of the full models.
        reason: why the definitions or the interventions do not apply, or what fails.
    """

    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    reason: str


_IMAGE_IDS = ("image_token_id", "image_token_index")

FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("llava", ("llava",), ("LlavaForConditionalGeneration",), "model.language_model", "text_config",
                _IMAGE_IDS, "llava-hf/llava-1.5-7b-hf"),
    ModelFamily("llava_next", ("llava_next",), ("LlavaNextForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "llava-hf/llava-v1.6-vicuna-7b-hf",
                notes="any-resolution tiles: the image-token count depends on the image size"),
    ModelFamily("qwen2_vl", ("qwen2_vl",), ("Qwen2VLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen2-VL-2B-Instruct",
                notes="GQA, M-RoPE"),
    ModelFamily("qwen2_5_vl", ("qwen2_5_vl",), ("Qwen2_5_VLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen2.5-VL-3B-Instruct",
                notes="GQA, M-RoPE, windowed vision attention"),
    ModelFamily("instructblip", ("instructblip",), ("InstructBlipForConditionalGeneration",), "language_model",
                "text_config", _IMAGE_IDS, "Salesforce/instructblip-vicuna-7b",
                notes="Q-Former queries are the image tokens; generate runs the language model on embeddings"),
    ModelFamily("blip_2", ("blip-2",), ("Blip2ForConditionalGeneration",), "language_model", "text_config",
                _IMAGE_IDS, "Salesforce/blip2-opt-2.7b",
                notes="language model at the top (OPT or Flan-T5 decoder-only variants); checkpoints without "
                      "image_token_index prepend the queries without image tokens and are refused"),
    ModelFamily("idefics3", ("idefics3",), ("Idefics3ForConditionalGeneration",), "model.text_model",
                "text_config", _IMAGE_IDS, "HuggingFaceM4/Idefics3-8B-Llama3",
                notes="language model at model.text_model"),
    ModelFamily("smolvlm", ("smolvlm",), ("SmolVLMForConditionalGeneration",), "model.text_model", "text_config",
                _IMAGE_IDS, "HuggingFaceTB/SmolVLM-256M-Instruct", notes="language model at model.text_model"),
    ModelFamily("gemma3", ("gemma3",), ("Gemma3ForConditionalGeneration",), "model.language_model", "text_config",
                _IMAGE_IDS, "google/gemma-3-4b-it",
                notes="sliding-window layers (5 of every 6); bidirectional attention inside each image"),
    ModelFamily("paligemma", ("paligemma",), ("PaliGemmaForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "google/paligemma2-3b-mix-224",
                notes="bidirectional prefix (image and prompt); no chat template"),
    ModelFamily("lfm2_vl", ("lfm2_vl",), ("Lfm2VlForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "LiquidAI/LFM2-VL-450M",
                notes="hybrid language model: short-convolution layers between attention layers"),
    ModelFamily("phi4_multimodal", ("phi4_multimodal",), ("Phi4MultimodalForCausalLM",), "model", None,
                ("vision_config.image_token_id",), "microsoft/Phi-4-multimodal-instruct",
                auto_class="AutoModelForCausalLM",
                notes="no text sub-config (the top config is the language model's); image id under vision_config"),
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
    # --- group 3: rows above this line ---
    
    # --- group 4: rows above this line ---
    
)

UNSERVED: tuple[UnservedFamily, ...] = (
    UnservedFamily(("mllama",), ("MllamaForConditionalGeneration",),
                   "cross-attention model: the image reaches the language model through cross-attention layers, "
                   "not as tokens of the sequence, so there are no image tokens whose received attention to count"),
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
    # --- group 3: rows above this line ---
    
    # --- group 4: rows above this line ---
    
)

GENERIC_FAMILY = ModelFamily(
    "generic", (), (), "model.language_model", "text_config", _IMAGE_IDS, ""
)
"""Tried for a model outside the table: the layout most recent transformers VLMs share."""


def _resolve(root: Any, path: str) -> Any:
    obj: Any = root
    for part in path.split(".") if path else ():
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


_WARNED_GENERIC: set[str] = set()


def model_family(model: nn.Module) -> ModelFamily:
    """The table row for ``model`` (or the generic layout, if it fits, with a warning).

    Raises:
        ValueError: the family cannot be served (:data:`UNSERVED` says why), or the model is neither in the
            table nor shaped like a standard VLM.
    """
    class_name = type(model).__name__
    for family in FAMILIES:
        if class_name in family.architectures:
            return family
    for unserved in UNSERVED:
        if class_name in unserved.architectures:
            raise ValueError(f"eahlib cannot serve {class_name}: {unserved.reason}.")
    config = getattr(model, "config", None)
    has_image_token = any(getattr(config, a, None) is not None for a in GENERIC_FAMILY.image_token_attrs)
    if has_image_token and _resolve(model, GENERIC_FAMILY.language_model) is not None:
        if class_name not in _WARNED_GENERIC:
            _WARNED_GENERIC.add(class_name)
            model_type = getattr(config, "model_type", "?")
            warnings.warn(
                f"{class_name} is not in eahlib's family table; trying the generic layout (language model at "
                "`model.language_model`, sub-config `text_config`, image tokens from `image_token_id`/"
                "`image_token_index`). If it works, add this row to eahlib.models.FAMILIES so it is tested: "
                f"ModelFamily({model_type!r}, ({model_type!r},), ({class_name!r},), \"model.language_model\", "
                f"\"text_config\", _IMAGE_IDS, \"<hub checkpoint>\").",
                stacklevel=2,
            )
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
    config = model.config if family.text_config is None else _resolve(model.config, family.text_config)
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


def attention_layers(model: nn.Module) -> list[int]:
    """Indices of the decoder layers that have self-attention (all of them, except in hybrid models)."""
    name = model_family(model).attention
    return [i for i, layer in enumerate(decoder_layers(model)) if getattr(layer, name, None) is not None]


def layers_at_depth(model: nn.Module, depth: Sequence[float]) -> list[int]:
    """The attention layers in a slice of the language model's depth, given as fractions.

    Published layer ranges are written for 32-layer LLaMA; as fractions they mean something at any depth. With
    ``L`` attention layers (every decoder layer except a hybrid model's convolution or recurrent layers), the
    ``i``-th of them (0-based) covers the share ``[i / L, (i + 1) / L)`` of the depth and is chosen when the
    middle of its share lies in the slice: ``start <= (i + 1/2) / L < end``. If no middle does (a slice
    thinner than one layer), the one layer whose middle is nearest the slice's middle is chosen (the lower
    on a tie). On 32 layers, ``[k / 32, m / 32)`` gives exactly layers ``k .. m - 1``.

    Args:
        model: a supported vision-language model.
        depth: ``(start, end)`` with ``0 <= start < end <= 1``.

    Returns:
        Decoder-layer indices, ascending, never empty.
    """
    if len(depth) != 2 or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in depth):
        raise ValueError(f"depth must be two fractions (start, end) of the language model's depth, got {depth!r}.")
    start, end = float(depth[0]), float(depth[1])
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"depth must satisfy 0 <= start < end <= 1, got start={start}, end={end}.")
    layers = attention_layers(model)
    middles = [(i + 0.5) / len(layers) for i in range(len(layers))]
    inside = [layer for layer, middle in zip(layers, middles) if start <= middle < end]
    if inside:
        return inside
    centre = (start + end) / 2
    return [min(zip(layers, middles), key=lambda pair: abs(pair[1] - centre))[0]]


def choose_layers(model: nn.Module, depth: Sequence[float], layers: Sequence[int] | None) -> list[int]:
    """An intervention's layers: ``layers`` (decoder-layer indices, each with attention) if given, else
    :func:`layers_at_depth` of ``depth``.

    Returns:
        Decoder-layer indices (negative ones counted from the end), ascending.
    """
    if layers is None:
        return layers_at_depth(model, depth)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be a non-empty list of decoder-layer indices (or None: by depth), got {layers!r}.")
    for layer in layers:
        attention_module(model, layer)  # refuses a layer out of range or without attention, naming the valid ones
    return sorted({layer % len(decoder_layers(model)) for layer in layers})


def attention_module(model: nn.Module, layer: int) -> nn.Module:
    """The self-attention module of decoder layer ``layer`` (0-based; negative counts from the end).

    Raises:
        IndexError: ``layer`` is out of range.
        ValueError: the layer has no self-attention (a hybrid model's convolution layer, say).
    """
    layers = decoder_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -len(layers) <= layer < len(layers):
        raise IndexError(
            f"layer={layer!r} is out of range: the language model has {len(layers)} decoder layers "
            f"(valid: 0..{len(layers) - 1})."
        )
    attention = getattr(layers[layer], model_family(model).attention, None)
    if attention is None:
        raise ValueError(
            f"Decoder layer {layer % len(layers)} of {type(model).__name__} has no self-attention (a hybrid model's "
            f"{type(layers[layer]).__name__} without attention); its attention layers are {attention_layers(model)}."
        )
    return attention


def head_count(model: nn.Module) -> int:
    """Number of attention (query) heads per language-model layer."""
    return int(text_config(model).num_attention_heads)


def image_token_ids(model: nn.Module) -> list[int]:
    """Ids of the visual tokens (image, and video where the family has one) in the prompt."""
    family = model_family(model)
    configs = [model.config, text_config(model)]
    ids = {int(v) for a in family.image_token_attrs for c in configs if (v := _resolve(c, a)) is not None}
    if not ids:
        raise ValueError(
            f"{type(model).__name__}: none of the config attributes {family.image_token_attrs} is set, so image "
            "tokens cannot be located in input_ids (a checkpoint that feeds image features without image "
            "tokens in the prompt cannot be served)."
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
    import transformers

    if name_or_path in BUILTIN_MODELS:
        module_name, function = BUILTIN_MODELS[name_or_path].split(":")
        model, processor = getattr(importlib.import_module(module_name), function)()
        if dtype != "auto":
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        if isinstance(device_map, str) and device_map != "auto":
            model = model.to(device_map)
        return model.eval(), processor
    model_type = transformers.AutoConfig.from_pretrained(name_or_path).model_type
    auto_class = family_of_model_type(model_type).auto_class
    model = getattr(transformers, auto_class).from_pretrained(
        name_or_path, dtype=dtype, device_map=device_map, attn_implementation=attn_implementation, **kwargs
    )
    model_family(model)
    processor = transformers.AutoProcessor.from_pretrained(name_or_path)
    return model.eval(), processor


def family_of_model_type(model_type: str) -> ModelFamily:
    """The table row for a checkpoint's ``config.model_type`` (before any weights are downloaded).

    Raises:
        ValueError: the family cannot be served (with the reason from :data:`UNSERVED`).
    """
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    for unserved in UNSERVED:
        if model_type in unserved.model_types:
            raise ValueError(f"eahlib cannot serve model type {model_type!r}: {unserved.reason}.")
    return GENERIC_FAMILY
