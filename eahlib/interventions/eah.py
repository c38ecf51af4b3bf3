"""Enhancing Attention Heads (EAH, arXiv:2411.09968), training-free.

At one shallow decoder layer of the language model, in the prefill pass and for each sample
separately: count every head's vision sinks over the sample's image tokens, pick the densest
head ``h*`` and give every head of the layer ``h*``'s post-softmax attention matrix (all rows,
all columns). Each head keeps its own values, and the layer continues as usual.

Differences from the released code (a patched transformers-4.29 ``modeling_llama.py``), all
deliberate and documented in the README:

- layer, head count and image span come from the model and prompt, not constants
  (released: layer 15, 32 heads, image tokens at [36, 611));
- every sample of a batch gets its own head (released: batch element 0 only);
- head 0 can be a source (released: never; ``preset="release"`` restores that rule);
- the default normalizer divides by the number of later queries (``"causal"``); the release
  divisor ``e + s - j`` is available as ``normalizer="release"``;
- sink statistics are computed from float32 probabilities (released: after the cast to fp16).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from eahlib.attention import AttentionCall, LayerHook, PromptTracker, layer_hooks, track_prompts
from eahlib.methods.registry import Component, register
from eahlib.metrics import NORMALIZERS, Normalizer, SinkCriterion, sink_criterion, sink_mask
from eahlib.models import attention_layers, attention_module, decoder_layers, head_count

HeadChoice = int | Literal["densest", "sparsest", "random"]
DecodeMode = Literal["off", "reuse"]

PRESETS: dict[str, dict[str, object]] = {
    "paper": {"layer": 1, "threshold": 8e-4, "normalizer": "causal", "head0_never_source": False},
    "release": {"layer": 15, "threshold": 8e-4, "normalizer": "release", "head0_never_source": True},
}
"""``paper``: layer two (0-based 1), as the paper's title says; ``release``: the released code.

A preset's layer counts the layers *with attention*: on the paper's all-attention LLaMA it is the decoder
layer of that index; on a hybrid model (LFM2-VL's convolution layers between attention layers) ``"paper"``
means the second attention layer, not decoder layer 1, which may have no attention at all."""

_ACTIVE_EAH: weakref.WeakSet[nn.Module] = weakref.WeakSet()


@dataclass(eq=False)
class EnhancedHeads(LayerHook):
    """The EAH layer hook and its record of what it did.

    Attributes:
        layer: target decoder layer (0-based).
        criterion: the sink criterion.
        normalizer: received-score normalizer.
        head: source-head rule.
        decode: ``"off"`` or ``"reuse"``.
        head0_never_source: the released code's rule (head 0 densest → nothing broadcast).
        chosen_heads: one ``[B]`` int64 tensor per prefill call (−1 = nothing broadcast).
        densities: the matching ``[B, H]`` sink densities.
    """

    layer: int
    criterion: SinkCriterion
    normalizer: Normalizer
    head: HeadChoice
    decode: DecodeMode
    head0_never_source: bool
    seed: int
    tracker: PromptTracker
    chosen_heads: list[Tensor] = field(default_factory=list)
    densities: list[Tensor] = field(default_factory=list)
    modifies: bool = True
    _generator: torch.Generator = field(init=False)
    _warned: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)

    def wants_probabilities(self, is_prefill: bool) -> bool:
        if is_prefill:
            return True
        return self.decode == "reuse" and bool(self.chosen_heads) and bool((self.chosen_heads[-1] >= 0).any())

    def _choose(self, density: Tensor, has_image: Tensor) -> Tensor:
        batch, heads = density.shape
        if isinstance(self.head, int):
            chosen = torch.full((batch,), self.head, dtype=torch.long)
        elif self.head == "densest":
            chosen = density.argmax(-1)  # first maximum = lowest index on ties
            chosen = torch.where(density.amax(-1) > 0, chosen, -1)
            if self.head0_never_source:
                chosen = torch.where(chosen == 0, -1, chosen)
        elif self.head == "sparsest":
            chosen = density.argmin(-1)
        else:
            chosen = torch.randint(heads, (batch,), generator=self._generator)
        return torch.where(has_image, chosen, -1)

    def __call__(self, call: AttentionCall) -> Tensor:
        if call.is_prefill:
            chosen = self._prefill(call)
        else:
            chosen = self.chosen_heads[-1].to(call.probs.device)
            if chosen.shape[0] != call.probs.shape[0]:
                raise RuntimeError(
                    f"decode='reuse' saw a batch of {call.probs.shape[0]} after a prefill of {chosen.shape[0]}; "
                    "call generate() on the same batch, or use decode='off'."
                )
        return broadcast_head(call.probs, chosen)

    def _prefill(self, call: AttentionCall) -> Tensor:
        real = call.real_keys
        image = self.tracker.image_mask(call.probs.shape[-1]).to(call.probs.device) & real
        density = sink_mask(call.probs, image, self.criterion, real, self.normalizer, call.visibility()).sum(-1).cpu()
        has_image = image.any(-1).cpu()
        if not bool(has_image.any()) and not self._warned:
            self._warned = True
            warnings.warn("A batch without image tokens reached EAH: it leaves such batches unchanged "
                          "(warned once per context).", stacklevel=2)
        chosen = self._choose(density, has_image)
        self.densities.append(density)
        self.chosen_heads.append(chosen)
        return chosen.to(call.probs.device)

    def prefill_count(self) -> int:
        return len(self.chosen_heads)

    def merge_prefills(self, start: int) -> None:
        if len(self.chosen_heads) - start > 1:
            self.chosen_heads[start:] = [torch.cat(self.chosen_heads[start:])]
            self.densities[start:] = [torch.cat(self.densities[start:])]

    def settings(self) -> dict[str, object]:
        """The parameters in effect, for result records."""
        return {
            "layer": self.layer, self.criterion.kind + "_threshold": self.criterion.value,
            "normalizer": self.normalizer, "head": self.head, "decode": self.decode,
            "head0_never_source": self.head0_never_source, "seed": self.seed,
        }


def broadcast_head(probs: Tensor, chosen: Tensor) -> Tensor:
    """Give every head of each sample the attention of that sample's chosen head.

    Args:
        probs: ``[B, H, q, k]`` attention probabilities.
        chosen: ``[B]`` source head per sample; −1 leaves the sample unchanged.

    Returns:
        ``[B, H, q, k]``.
    """
    batch = torch.arange(probs.shape[0], device=probs.device)
    source = probs[batch, chosen.clamp(min=0)].unsqueeze(1).expand_as(probs)
    return torch.where((chosen >= 0).view(-1, 1, 1, 1), source, probs)


def _resolve_arguments(
    model: nn.Module,
    preset: str | None,
    layer: int | None,
    threshold: float | None,
    relative_threshold: float | None,
    normalizer: Normalizer | None,
) -> tuple[int, SinkCriterion, Normalizer, bool]:
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)} or None.")
    defaults = PRESETS[preset or "paper"]
    if threshold is None and relative_threshold is None:
        threshold = float(defaults["threshold"])  # type: ignore[arg-type]
    criterion = sink_criterion(threshold, relative_threshold)
    normalizer = normalizer or defaults["normalizer"]  # type: ignore[assignment]
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}.")
    if layer is None:
        with_attention, nth = attention_layers(model), int(defaults["layer"])  # type: ignore[arg-type]
        if nth >= len(with_attention):
            raise IndexError(f"Preset {preset or 'paper'!r}'s layer {nth} is out of range: the language model has "
                             f"{len(decoder_layers(model))} layers, {len(with_attention)} with attention "
                             f"({with_attention}); pass layer=.")
        layer = with_attention[nth]
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"layer must be a decoder-layer index, got {layer!r}.")
    attention_module(model, layer)  # refuses a layer out of range or without attention, naming the valid ones
    return layer % len(decoder_layers(model)), criterion, normalizer, bool(defaults["head0_never_source"])


@contextlib.contextmanager
def enhance_attention_heads(
    model: nn.Module,
    layer: int | None = None,
    threshold: float | None = None,
    normalizer: Normalizer | None = None,
    head: HeadChoice = "densest",
    decode: DecodeMode = "off",
    preset: str | None = None,
    relative_threshold: float | None = None,
    seed: int = 0,
) -> Iterator[EnhancedHeads]:
    """Broadcast the densest-sink head's attention to all heads of one layer (EAH).

    Example:
        >>> with enhance_attention_heads(model, preset="paper") as eah:  # doctest: +SKIP
        ...     out = model.generate(**inputs, max_new_tokens=64)
        >>> eah.chosen_heads[0]  # source head per sample, -1 = unchanged  # doctest: +SKIP

    Args:
        model: a supported vision-language model (see :mod:`eahlib.models`).
        layer: target decoder layer, 0-based (default: the preset's attention layer, see :data:`PRESETS`;
            ``"paper"`` = 1); a layer without attention (hybrid models) is refused with the valid ones.
        threshold: absolute sink threshold on the received score (default 8e-4).
        normalizer: ``"causal"`` (default) or ``"release"``; see :func:`eahlib.received_attention`.
        head: ``"densest"`` (EAH), ``"sparsest"``, ``"random"`` (seeded), or a head index.
        decode: ``"off"`` leaves decoding steps untouched (as released); ``"reuse"`` broadcasts
            the new query row of the head chosen at prefill at every later step.
        preset: ``"paper"`` or ``"release"``; explicit arguments override it.
        relative_threshold: ``k``: sinks receive more than ``k`` times the uniform score
            (exclusive with ``threshold``).
        seed: seed of ``head="random"``.

    Yields:
        The :class:`EnhancedHeads` record (``chosen_heads``, ``densities``).
    """
    layer, criterion, normalizer, head0_rule = _resolve_arguments(
        model, preset, layer, threshold, relative_threshold, normalizer
    )
    n_heads = head_count(model, layer)
    if isinstance(head, bool) or not (isinstance(head, int) or head in ("densest", "sparsest", "random")):
        raise ValueError(f"head must be 'densest', 'sparsest', 'random' or a head index, got {head!r}.")
    if isinstance(head, int) and not 0 <= head < n_heads:
        raise ValueError(f"head={head} is out of range: layer {layer} has {n_heads} heads (0..{n_heads - 1}).")
    if decode not in ("off", "reuse"):
        raise ValueError(f"decode must be 'off' or 'reuse', got {decode!r}.")
    if model in _ACTIVE_EAH:
        raise RuntimeError("enhance_attention_heads is already active on this model; exit that context first.")
    _ACTIVE_EAH.add(model)
    try:
        with track_prompts(model) as tracker:
            hook = EnhancedHeads(layer, criterion, normalizer, head, decode, head0_rule, seed, tracker)
            with layer_hooks(model, {layer: hook}):
                yield hook
    finally:
        _ACTIVE_EAH.discard(model)


class _EAHRecorder:
    def __init__(self, enhanced: EnhancedHeads) -> None:
        self.enhanced = enhanced

    def extras(self, batch: int) -> list[dict[str, Any]]:
        heads = self.enhanced.chosen_heads[0] if self.enhanced.chosen_heads else torch.full((batch,), -1)
        densities = self.enhanced.densities[0] if self.enhanced.densities else None
        step = heads.shape[0] // batch  # beam search expands each sample into num_beams rows
        return [
            {"eah_head": int(heads[i * step]),
             "eah_density": int(densities[i * step].max()) if densities is not None else 0}
            for i in range(batch)
        ]


@contextlib.contextmanager
def eah(model: nn.Module, **params: Any) -> Iterator[_EAHRecorder]:
    """EAH (arXiv:2411.09968) around any decoder; see :func:`enhance_attention_heads`."""
    with enhance_attention_heads(model, **params) as enhanced:
        yield _EAHRecorder(enhanced)


register(Component(
    "eah", "intervention", eah,
    {"layer": None, "threshold": None, "relative_threshold": None, "normalizer": None, "head": "densest",
     "decode": "off", "preset": None, "seed": 0},
    "Zhang et al., Seeing Clearly by Layer Two: Enhancing Attention Heads to Alleviate Hallucination in LVLMs, "
    "arXiv:2411.09968",
    description="EAH: broadcast the shallow-layer head with the most vision sinks to every head of that layer "
                "(defaults None: layer 1, threshold 8e-4, causal normalizer, as the paper preset)",
))
