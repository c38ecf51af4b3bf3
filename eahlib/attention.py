"""Attention capture through transformers' ``AttentionInterface``: no patched modeling files.

eahlib registers, once at import, one attention function per base implementation
(``"eahlib_sdpa"``, ``"eahlib_eager"``) together with the base's mask function in
``AttentionMaskInterface`` (without one, transformers silently drops the causal mask). While an
eahlib context is active, the language model's sub-config points at that name. The function
looks the calling attention module up in a table of *layer hooks*:

- a module with no active hook runs the base implementation unchanged (SDPA stays SDPA);
- a hooked module computes explicit post-softmax probabilities (float32), passes them through
  its hooks in order (modifiers such as EAH first, observers such as capture after), and
  multiplies the result by its own values.

Only hooked layers ever materialise a probability matrix, and each one is dropped after its
layer, so memory stays at about one layer's attention.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from eahlib.metrics import beyond_causal
from eahlib.models import (
    attention_layers,
    attention_module,
    decoder,
    image_token_mask,
    language_model,
    model_family,
    text_config,
)

NAME_PREFIX = "eahlib_"
BASE_IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "eager")


@dataclass
class AttentionCall:
    """One hooked attention call, as the hooks see it.

    Attributes:
        module: the attention module.
        scores: ``[B, H, q, k]`` float32 pre-softmax logits, mask already added.
        probs: ``[B, H, q, k]`` float32 post-softmax attention (``None`` while scores are adjusted).
        visible: ``[B, q, k]`` bool, query ``i`` may attend key ``j`` under this layer's own mask
            (causal, sliding window, chunked, bidirectional blocks, padding).
        is_prefill: no cached keys (``q == k``): the call processes the whole sequence.
        selected: the keys a sparse-attention layer's indexer kept for each query, ``[B, q, k]`` bool, or
            ``[B, H, q, k]`` where each head has its own selection (``None``: no selection); the scores already mask
            the others.
        padding: ``[B, k]`` the padding mask the language model was called with (1 = real token), when a prompt
            tracker (:func:`track_prompts`) saw it as one tensor of this length; ``None`` otherwise.
    """

    module: nn.Module
    scores: Tensor
    probs: Tensor | None
    visible: Tensor
    is_prefill: bool
    selected: Tensor | None = None
    padding: Tensor | None = None

    @property
    def attended(self) -> Tensor:
        """``[B, q, k]`` bool: the keys each query attends (in some head), its own mask and a sparse layer's selection
        together."""
        if self.selected is None:
            return self.visible
        return self.visible & (self.selected if self.selected.dim() == 3 else self.selected.any(1))

    @property
    def attended_by_head(self) -> Tensor:
        """``[B, H, q, k]`` bool, or ``[B, 1, q, k]`` where every head attends alike: the keys each head of each query
        attends, the only logits the mask leaves unchanged (it adds exactly 0 there)."""
        if self.selected is None or self.selected.dim() == 3:
            return self.attended.unsqueeze(1)
        return self.visible.unsqueeze(1) & self.selected

    @property
    def real_keys(self) -> Tensor:
        """``[B, k]`` bool: at a prefill, the real (non-padding) tokens; at a decoding step, the real keys the
        new token can see (in a sliding-window layer, older tokens are out of its view).

        A prefill takes them from the language model's padding mask. Without one (a 4-D mask passed by hand), it
        reads them from the mask's diagonal, before any sparse selection: transformers masks a key for every query,
        itself included, exactly when the padding mask marks it as padding, and a real token sees itself (unless
        a sparse layer folded into the mask an indexer that left the token's own key out). One query's row would
        not do: in a sliding-window layer it hides the real tokens outside its window.
        """
        if self.is_prefill and self.padding is not None:
            return self.padding.to(self.visible.device).bool()
        if self.is_prefill:
            return self.visible.diagonal(dim1=-2, dim2=-1)
        return self.attended.any(-2)

    def visibility(self) -> Tensor | None:
        """The prefill's visibility for the sink definitions: ``None`` when the mask is plain causal over the
        real tokens (the closed forms of :mod:`eahlib.metrics`), else ``[B, N, N]``."""
        return beyond_causal(self.attended, self.real_keys)


class LayerHook:
    """Base of the per-layer hooks: sees (and may replace) a layer's attention.

    A hooked call computes float32 logits, lets every hook ``adjust_scores`` (e.g. PAI's boost
    of image-token logits), takes the softmax, then passes the probabilities through every
    hook's ``__call__`` (e.g. EAH's head broadcast, or a capture). ``modifies`` hooks run before
    observers; ``wants_probabilities`` says whether a call (a prefill or a decoding step)
    needs the explicit computation at all. Subclasses override what they need.

    A hook that keeps one record per prefill (EAH's chosen heads, VAR's counts) reports how many it holds
    (``prefill_count``) and can merge the records since a given one (``merge_prefills``): a decoder that runs
    one prefill per sample (OPERA) turns them back into one record of the batch.
    """

    modifies: bool = False

    def wants_probabilities(self, is_prefill: bool) -> bool:
        return True

    def adjust_scores(self, call: AttentionCall) -> Tensor:
        return call.scores

    def __call__(self, call: AttentionCall) -> Tensor:
        assert call.probs is not None
        return call.probs

    def prefill_count(self) -> int:
        return 0

    def merge_prefills(self, start: int) -> None:
        """Make the records of the prefills since ``start`` one record (rows in order); no-op without records."""


_LAYER_HOOKS: weakref.WeakKeyDictionary[nn.Module, list[LayerHook]] = weakref.WeakKeyDictionary()


@dataclass
class _Activation:
    count: int
    original: str


_ACTIVE_MODELS: weakref.WeakKeyDictionary[nn.Module, _Activation] = weakref.WeakKeyDictionary()

_PRIVATE = threading.local()


def in_private_stream() -> bool:
    """Whether the current thread runs inside :func:`private_stream`."""
    return bool(getattr(_PRIVATE, "active", False))


@contextlib.contextmanager
def private_stream() -> Iterator[None]:
    """Hide the forward calls this thread makes inside the block from eahlib's layer hooks and prompt trackers.

    An intervention's own measurement pass (VHR's text-only stream, run in a helper thread while the main
    forward waits mid-way) must not be changed by other components' hooks, nor overwrite the prompt their
    trackers hold for the paused main forward; its attention runs the base implementation.
    """
    previous = in_private_stream()
    _PRIVATE.active = True
    try:
        yield
    finally:
        _PRIVATE.active = previous


def _unmasked_visibility(query_length: int, key_length: int, device: torch.device, causal: bool) -> Tensor:
    """``[q, k]`` bool: what a call without a mask may attend: causal (SDPA's causal shortcut) with the queries at
    the end, or every key for a module that is not causal (``is_causal=False``, as SDPA reads it)."""
    if not causal:
        return torch.ones(query_length, key_length, dtype=torch.bool, device=device)
    query_pos = torch.arange(query_length, device=device).unsqueeze(-1) + (key_length - query_length)
    return torch.arange(key_length, device=device) <= query_pos


def _additive_mask(attention_mask: Tensor | None, query_length: int, key_length: int, device: torch.device,
                   causal: bool = True) -> Tensor:
    """Turn any mask transformers hands over into a float32 additive ``[.., q, k]`` mask (``None``: see
    :func:`_unmasked_visibility`)."""
    minimum = torch.finfo(torch.float32).min
    if attention_mask is None:
        return torch.where(_unmasked_visibility(query_length, key_length, device, causal), 0.0, minimum)
    if attention_mask.dtype == torch.bool:
        return torch.where(attention_mask, 0.0, minimum)
    return attention_mask.float()


def attention_scores(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    softcap: float | None = None,
    position_bias: Tensor | None = None,
    causal: bool = True,
) -> Tensor:
    """Masked pre-softmax attention logits of every query head, in float32.

    Args:
        module: the attention module (for ``num_key_value_groups``).
        query: ``[B, H, q, d]``.
        key: ``[B, H_kv, k, d]``.
        attention_mask: bool (True = attend), additive float, or ``None`` (causal, or none at all if not ``causal``).
        scaling: score scale (default ``d ** -0.5``).
        softcap: logit soft-capping ``c * tanh(x / c)`` before the mask (Gemma 2 and its descendants).
        position_bias: additive logits ``[B or 1, H, q, k]`` before the mask (a learned relative-position bias,
            as T5 and Inkling pass it), or ``None``.
        causal: what ``attention_mask=None`` means: causal, or no mask (a module with ``is_causal=False``).

    Returns:
        ``[B, H, q, k]`` float32; masked positions hold the float32 minimum.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    key = repeat_kv(key, groups) if groups > 1 else key
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query.float(), key.float().transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if position_bias is not None:
        scores = scores + position_bias.float()
    mask = _additive_mask(attention_mask, query.shape[2], key.shape[2], query.device, causal)
    return scores + mask[..., : key.shape[2]]


def attention_probabilities(scores: Tensor, sinks: Tensor | None = None) -> Tensor:
    """Softmax over the keys; with ``sinks`` logits, each row also spreads over a virtual sink that is then
    dropped, so a row sums to less than 1.

    Args:
        scores: ``[B, H, q, k]`` float32 logits.
        sinks: one learned sink logit per head ``[H]`` (gpt-oss), one per head and query ``[B, H, q, 1]``
            (computed from the hidden states, as Inkling 2 does), or ``None``.

    Returns:
        ``[B, H, q, k]`` float32.
    """
    if sinks is None:
        return torch.softmax(scores, dim=-1)
    sink = sinks.float().reshape(1, -1, 1, 1) if sinks.dim() == 1 else sinks.float()
    sink = sink.expand(*scores.shape[:-1], 1)
    return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]


def visible_keys(attention_mask: Tensor | None, batch: int, query_length: int, key_length: int,
                 device: torch.device, causal: bool = True) -> Tensor:
    """``[B, q, k]`` bool: which keys each query may attend, from the mask transformers hands over.

    ``None`` (no padding) means plain causal attention with the queries at the end (SDPA's causal shortcut), or
    every key when not ``causal``; a mask with a head dimension counts a key as visible when any head may attend it.
    """
    if attention_mask is None:
        return _unmasked_visibility(query_length, key_length, device, causal).expand(batch, -1, -1)
    mask = attention_mask[..., :key_length]
    visible = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    if visible.dim() == 4:
        visible = visible.any(1)
    return visible.expand(batch, query_length, key_length)


def selected_keys(indices: Tensor, key_length: int) -> Tensor:
    """The keys a sparse-attention layer (DeepSeek sparse attention and its descendants) keeps for each query.

    Such a layer folds its indexer's top-k into the mask only under the implementations named ``"eager"`` and
    ``"sdpa"``; under any other name (eahlib's included) it hands the ``indices`` to the attention function for a
    sparse kernel, and eahlib applies them as the mask would.

    Args:
        indices: ``[B, q, topk]`` key indices each query may attend; ``-1`` marks an empty slot.
        key_length: ``k``.

    Returns:
        ``[B, q, k]`` bool.
    """
    if indices.dim() != 3:
        raise NotImplementedError(
            f"Sparse-attention indices of shape {list(indices.shape)}: eahlib's attention reads the [batch, query, "
            "top-k] selection of DeepSeek-sparse-attention layers only."
        )
    slots = torch.where(indices >= 0, indices.long(), key_length)  # empty slots land in a dropped extra column
    selected = torch.zeros(*indices.shape[:-1], key_length + 1, dtype=torch.bool, device=indices.device)
    return selected.scatter_(-1, slots, True)[..., :key_length]


def selected_blocks(block_indices: Tensor, block_size: int, key_length: int, heads: int) -> Tensor:
    """The keys a block-sparse layer (MiniMax-M3's lightning indexer) keeps for each query head.

    Its indexer picks, per query and indexer head, blocks of ``block_size`` consecutive keys (block ``i``: keys
    ``i * block_size ..``); each indexer head serves a group of consecutive query heads. The layer folds them into
    its mask only under the implementations named ``"eager"`` and ``"sdpa"``; under any other name it hands them
    over as ``block_indices``, and eahlib applies them as that mask would.

    Args:
        block_indices: ``[B, H_idx, q, topk]`` block indices; ``-1`` marks an empty slot.
        block_size: keys per block.
        key_length: ``k``.
        heads: the query heads ``H``, a multiple of ``H_idx``.

    Returns:
        ``[B, H, q, k]`` bool.
    """
    if block_indices.dim() != 4 or heads % block_indices.shape[1]:
        raise NotImplementedError(
            f"Block-sparse indices of shape {list(block_indices.shape)} for {heads} query heads: eahlib's attention "
            "reads a [batch, indexer heads, query, top-k] block selection whose indexer heads divide the query heads."
        )
    blocks = -(-key_length // block_size)
    kept = selected_keys(block_indices.flatten(0, 1), blocks).unflatten(0, block_indices.shape[:2])
    keys = kept.repeat_interleave(block_size, dim=-1)[..., :key_length]  # [B, H_idx, q, k]
    return keys.repeat_interleave(heads // block_indices.shape[1], dim=1)


def _mask_with_selection(attention_mask: Tensor | None, selected: Tensor, causal: bool) -> Tensor:
    """``[B, 1 or H, q, k]`` bool: the layer's mask restricted to the selected keys (``[B, q, k]``, or per head
    ``[B, H, q, k]``)."""
    batch, query_length, key_length = selected.shape[0], selected.shape[-2], selected.shape[-1]
    visible = visible_keys(attention_mask, batch, query_length, key_length, selected.device, causal)
    return visible.unsqueeze(1) & (selected if selected.dim() == 4 else selected.unsqueeze(1))


@dataclass(frozen=True)
class LayerExtras:
    """What a layer hands its attention function besides queries, keys, values and the mask.

    Attributes:
        softcap: logit soft-capping (Gemma 2 and its descendants).
        sinks: sink logits (``[H]`` or ``[B, H, q, 1]``; see :func:`attention_probabilities`).
        position_bias: additive logits (T5-style relative positions, Inkling).
        causal: what a missing mask means (``is_causal``, from the call or the module, as SDPA reads it).
        selected: the keys a sparse-attention layer's indexer kept: ``[B, q, k]``, or ``[B, H, q, k]`` where each
            query head has its own (``None``: all).
        additive: fold ``selected`` into an additive mask in the queries' dtype (0 kept, the dtype's minimum
            elsewhere), whatever form the layer's mask has, as a block-sparse layer's own eager/SDPA path does (a
            query with no key left then attends uniformly, where a boolean mask would give it zeros); otherwise the
            mask keeps its form, as a DSA layer's own path does.
    """

    softcap: float | None = None
    sinks: Tensor | None = None
    position_bias: Tensor | None = None
    causal: bool = True
    selected: Tensor | None = None
    additive: bool = False

    @classmethod
    def of_call(cls, module: nn.Module, query: Tensor, key: Tensor, kwargs: dict[str, Any]) -> LayerExtras:
        """Read (and validate) the extras of one attention call from its keyword arguments."""
        sinks = kwargs.get("s_aux", kwargs.get("sinks"))
        per_query = (query.shape[0], query.shape[1], query.shape[2], 1)
        if sinks is not None and not (sinks.dim() == 1 or (sinks.dim() == 4 and sinks.shape[1:] == per_query[1:])):
            raise NotImplementedError(
                f"{type(module).__name__} passes attention sinks of shape {list(sinks.shape)}; eahlib's explicit "
                f"attention implements one sink logit per head ([heads]) or per head and query ({list(per_query)}), "
                "so this layer cannot provide probabilities."
            )
        causal = kwargs.get("is_causal")
        indices, blocks = kwargs.get("indices"), kwargs.get("block_indices")
        selected = None if indices is None else selected_keys(indices, key.shape[2])
        if blocks is not None:
            block_size = _KEY_BLOCK_SIZES.get(module)
            if block_size is None:
                raise NotImplementedError(
                    f"{type(module).__name__} hands its attention function block_indices (a block-sparse key "
                    "selection), but its family row in eahlib.models.FAMILIES names no key_block_size, so eahlib "
                    "cannot tell which keys they keep."
                )
            per_head = selected_blocks(blocks, block_size, key.shape[2], query.shape[1])
            selected = per_head if selected is None else selected.unsqueeze(1) & per_head
        return cls(
            softcap=kwargs.get("softcap"), sinks=sinks, position_bias=kwargs.get("position_bias"),
            causal=getattr(module, "is_causal", True) if causal is None else bool(causal), selected=selected,
            additive=blocks is not None,
        )

    def mask(self, attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        """The layer's mask, restricted to the selected keys of a sparse layer (``dtype``: the queries')."""
        if self.selected is None:
            return attention_mask
        kept = _mask_with_selection(attention_mask, self.selected, self.causal)
        if not self.additive:
            return kept
        return torch.zeros(kept.shape, dtype=dtype, device=kept.device).masked_fill(~kept, torch.finfo(dtype).min)


_KEY_BLOCK_SIZES: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()
"""Keys per block of the ``block_indices`` each attention module of an active model hands over (see
:func:`selected_blocks`), from the family's ``key_block_size``."""

_PADDING_SOURCES: weakref.WeakKeyDictionary[nn.Module, list[PromptTracker]] = weakref.WeakKeyDictionary()
"""The prompt trackers watching the model of each attention module, innermost last (see :func:`track_prompts`)."""


def _padding_of(module: nn.Module, batch: int, key_length: int) -> Tensor | None:
    """The ``[B, k]`` padding mask the language model owning attention ``module`` was last called with, when a
    prompt tracker saw one of this size."""
    trackers = _PADDING_SOURCES.get(module)
    padding = trackers[-1].padding if trackers else None
    return padding if padding is not None and tuple(padding.shape) == (batch, key_length) else None


def _explicit_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None,
    dropout: float,
    hooks: list[LayerHook],
    extras: LayerExtras,
) -> tuple[Tensor, Tensor]:
    scores = attention_scores(module, query, key, extras.mask(attention_mask, query.dtype), scaling, extras.softcap,
                              extras.position_bias, extras.causal)
    visible = visible_keys(attention_mask, query.shape[0], query.shape[2], key.shape[2], query.device, extras.causal)
    call = AttentionCall(module, scores, None, visible, query.shape[2] == key.shape[2], extras.selected,
                         _padding_of(module, query.shape[0], key.shape[2]))
    for hook in hooks:
        call.scores = hook.adjust_scores(call)
    call.probs = attention_probabilities(call.scores, extras.sinks)
    for hook in hooks:
        call.probs = hook(call)
    probs = call.probs
    weights = probs.to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    groups = getattr(module, "num_key_value_groups", 1)
    value = repeat_kv(value, groups) if groups > 1 else value
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _eahlib_attention(
    base: str,
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """The registered attention function: base implementation, or explicit probabilities + hooks (both under the
    layer's own mask, sparse-attention key selections included); a private stream's calls skip the hooks."""
    extras = LayerExtras.of_call(module, query, key, kwargs)
    kwargs.pop("indices", None)
    kwargs.pop("block_indices", None)
    hooks = [] if in_private_stream() else _LAYER_HOOKS.get(module, [])
    active = [h for h in hooks if h.wants_probabilities(query.shape[2] == key.shape[2])]
    if not active and base == "sdpa":
        return sdpa_attention_forward(module, query, key, value, extras.mask(attention_mask, query.dtype), dropout=dropout,
                                      scaling=scaling, **kwargs)
    return _explicit_attention(module, query, key, value, attention_mask, scaling, dropout, active, extras)


def _register() -> None:
    masks = {"sdpa": sdpa_mask, "eager": eager_mask}
    for base in BASE_IMPLEMENTATIONS:
        AttentionInterface.register(NAME_PREFIX + base, partial(_eahlib_attention, base))
        AttentionMaskInterface.register(NAME_PREFIX + base, masks[base])


_register()


def _set_text_attention(model: nn.Module, implementation: str) -> None:
    """Switch the language model's attention only: its sub-config (``{"text_config": impl}``, nested for a dotted
    path), or the top config alone (``{"": impl}``) when the language model uses it; every other sub-config (the
    vision tower, an audio tower) keeps its own implementation."""
    path = model_family(model).text_config
    request: dict[str, Any] = {"": implementation}
    for part in reversed(path.split(".") if path else ()):
        request = {part: request}
    model.set_attn_implementation(request)


def _key_block_size(model: nn.Module) -> int | None:
    """Keys per block of the family's block-sparse selection (``key_block_size``), or ``None``."""
    attribute = model_family(model).key_block_size
    if not attribute:
        return None
    size = getattr(text_config(model), attribute, None)
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{type(model).__name__}'s text config has no positive integer `{attribute}` (the keys per "
                         f"block of its block-sparse selection), got {size!r}.")
    return size


@contextlib.contextmanager
def eahlib_attention(model: nn.Module) -> Iterator[None]:
    """Route the language model's attention through eahlib's registered function.

    Re-entrant (reference-counted per model). Restores the original implementation on exit.
    """
    state = _ACTIVE_MODELS.get(model)
    if state is None:
        lm = language_model(model)
        if not getattr(lm, "_can_set_attn_implementation", lambda: False)():
            raise ValueError(
                f"{type(lm).__name__} does not dispatch its attention through transformers' AttentionInterface, "
                "so eahlib cannot read its attention probabilities."
            )
        original = text_config(model)._attn_implementation
        if original not in BASE_IMPLEMENTATIONS:
            raise ValueError(
                f"The language model uses attn_implementation={original!r}, which cannot provide attention "
                f"probabilities. Load the model with attn_implementation='sdpa' (or 'eager'), or call "
                "model.set_attn_implementation('sdpa') first."
            )
        block_size = _key_block_size(model)
        _set_text_attention(model, NAME_PREFIX + original)
        state = _ACTIVE_MODELS[model] = _Activation(count=0, original=original)
        for layer in attention_layers(model) if block_size is not None else ():
            _KEY_BLOCK_SIZES[attention_module(model, layer)] = block_size
    state.count += 1
    try:
        yield
    finally:
        state.count -= 1
        if state.count == 0:
            del _ACTIVE_MODELS[model]
            for layer in attention_layers(model):
                _KEY_BLOCK_SIZES.pop(attention_module(model, layer), None)
            _set_text_attention(model, state.original)


@contextlib.contextmanager
def layer_hooks(model: nn.Module, hooks: Mapping[int, LayerHook]) -> Iterator[None]:
    """Install ``{layer: hook}`` on the language model's attention for the duration of the block.

    Removes exactly the hooks it installed (also when installing or the body raises).
    """
    modules = {layer: attention_module(model, layer) for layer in hooks}
    installed: list[tuple[nn.Module, LayerHook]] = []
    with eahlib_attention(model):
        try:
            for layer, hook in hooks.items():
                module = modules[layer]
                current = _LAYER_HOOKS.setdefault(module, [])
                current.append(hook)
                current.sort(key=lambda h: not h.modifies)
                installed.append((module, hook))
            yield
        finally:
            for module, hook in installed:
                current = _LAYER_HOOKS.get(module, [])
                if hook in current:
                    current.remove(hook)
                if not current:
                    _LAYER_HOOKS.pop(module, None)


def active_hooks(model: nn.Module) -> dict[int, list[LayerHook]]:
    """The layer hooks currently installed on ``model``'s language model, by layer."""
    modules = {i: attention_module(model, i) for i in attention_layers(model)}
    return {i: list(_LAYER_HOOKS[m]) for i, m in modules.items() if _LAYER_HOOKS.get(m)}


@dataclass
class AttentionCapture:
    """Observer hook that keeps a CPU copy of a layer's (possibly modified) attention per call.

    ``attentions[layer]`` is a list with one ``[B, H, q, k]`` float32 tensor per forward call.
    """

    layers: tuple[int, ...]
    attentions: dict[int, list[Tensor]] = field(default_factory=dict)

    def hook_for(self, layer: int) -> LayerHook:
        return _CaptureHook(self, layer)


@dataclass(eq=False)
class _CaptureHook(LayerHook):
    owner: AttentionCapture
    layer: int

    def __call__(self, call: AttentionCall) -> Tensor:
        self.owner.attentions.setdefault(self.layer, []).append(call.probs.detach().cpu())
        return call.probs


@contextlib.contextmanager
def capture_attention(model: nn.Module, layers: int | list[int] | tuple[int, ...] | None = None) -> Iterator[AttentionCapture]:
    """Record the post-softmax attention of some language-model layers.

    Example:
        >>> with capture_attention(model, layers=[0, 1]) as cap:  # doctest: +SKIP
        ...     model(**inputs)
        >>> cap.attentions[1][0].shape  # [batch, heads, q, k] of the first call  # doctest: +SKIP

    Only the captured layers compute explicit probabilities; a layer modified by an active
    EAH context is captured after the modification.

    Args:
        model: a supported vision-language model.
        layers: layer indices (default: every decoder layer with attention).

    Yields:
        An :class:`AttentionCapture` whose ``attentions`` fill as the model runs.
    """
    if layers is None:
        layers = attention_layers(model)
    elif isinstance(layers, int):
        layers = [layers]
    capture = AttentionCapture(tuple(layers))
    with layer_hooks(model, {layer: capture.hook_for(layer) for layer in layers}):
        yield capture


@dataclass
class PromptTracker:
    """Knows the token ids of the sequence the language model is processing.

    The ids reach the decoder in one of three ways, and three forward pre-hooks catch them: the decoder's own
    ``input_ids``; the full model's ``input_ids``, while the full model's forward runs (families that embed the
    prompt themselves and may replace image-token ids before the embedding lookup, as Gemma 3 does for ids
    outside the vocabulary); or the ids of the last input-embedding call (``generate`` paths that pass
    ``inputs_embeds`` on, as InstructBLIP's; under beam search ``generate`` repeats each sample's embeddings once per
    beam, and its ids are repeated alike). ``input_ids`` is ``None`` when a forward came with embeddings only.
    ``padding`` is the ``[B, N]`` padding mask of the sequence: the decoder's own, or the full model's when the
    decoder got its masks in another form (Gemma 3's per-layer-type 4-D masks); the hooked attention calls take
    their real tokens from it. Calls made inside :func:`private_stream` leave the tracker unchanged.
    """

    model: nn.Module
    input_ids: Tensor | None = None
    padding: Tensor | None = None
    _pending: Tensor | None = None
    _outer: Tensor | None = None
    _outer_padding: Tensor | None = None

    def saw_model_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if in_private_stream():
            return
        ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
        self._outer = ids if isinstance(ids, Tensor) else None
        self._outer_padding = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None

    def left_model_call(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not in_private_stream():
            self._outer = self._outer_padding = None

    def saw_embedding_call(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if in_private_stream():
            return
        self._pending = args[0] if args and isinstance(args[0], Tensor) else None

    def saw_decoder_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if in_private_stream():
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        pending, self._pending = self._pending, None
        if ids is None and embeds is not None:
            batch, length = embeds.shape[:2]
            for candidate in (self._outer, pending):
                if candidate is not None and candidate.shape[1] == length and batch % candidate.shape[0] == 0:
                    ids = candidate.repeat_interleave(batch // candidate.shape[0], dim=0)  # beams, as generate expands
                    break
        self.input_ids = ids
        mask = kwargs.get("attention_mask")
        length = None if ids is None and embeds is None else (ids if ids is not None else embeds).shape[1]
        if not (isinstance(mask, Tensor) and mask.dim() == 2):
            outer = self._outer_padding
            mask = outer if outer is not None and outer.shape[1] == length else None
        self.padding = mask

    def image_mask(self, key_length: int) -> Tensor:
        """``[B, key_length]`` image-token mask of the current prefill sequence."""
        if self.input_ids is None:
            raise ValueError(
                "eahlib needs the prompt's input_ids to locate image tokens, but this forward call came with "
                "inputs_embeds only. Call the model (or generate) with input_ids."
            )
        if self.input_ids.shape[1] != key_length:
            raise RuntimeError(
                f"The prompt has {self.input_ids.shape[1]} tokens but the layer saw {key_length} keys: eahlib needs "
                "the prompt processed in one prefill pass (no pre-filled cache, no chunked prefill)."
            )
        return image_token_mask(self.model, self.input_ids)


@contextlib.contextmanager
def track_prompts(model: nn.Module) -> Iterator[PromptTracker]:
    """Keep a :class:`PromptTracker` current while the block runs (hooks removed on exit); the model's attention
    calls read their padding mask from it."""
    tracker = PromptTracker(model)
    handles = []
    modules = [attention_module(model, layer) for layer in attention_layers(model)]
    try:
        handles.append(model.register_forward_pre_hook(tracker.saw_model_call, with_kwargs=True))
        handles.append(model.register_forward_hook(tracker.left_model_call))
        handles.append(model.get_input_embeddings().register_forward_pre_hook(tracker.saw_embedding_call))
        handles.append(decoder(model).register_forward_pre_hook(tracker.saw_decoder_call, with_kwargs=True))
        for module in modules:
            _PADDING_SOURCES.setdefault(module, []).append(tracker)
        yield tracker
    finally:
        for handle in handles:
            handle.remove()
        for module in modules:
            trackers = [t for t in _PADDING_SOURCES.get(module, []) if t is not tracker]
            if trackers:
                _PADDING_SOURCES[module] = trackers
            else:
                _PADDING_SOURCES.pop(module, None)


def _cache_argument(kwargs: Mapping[str, Any]) -> Any:
    for name in ("cache", "past_key_values", "past_key_value"):
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


@dataclass(eq=False)
class PromptKeys:
    """The prompt's image tokens and the real tokens before them, for every generation stream, at every call.

    One generation may run several streams through the same layers, each with its own KV cache: the main
    stream and a contrastive decoder's second one (VCD's noised image, PAI's text-only prompt), or OPERA's
    searches, one per sample. A stream is known by the cache object its attention modules receive. At a
    stream's prefill the prompt's keys are read from its token ids and remembered under its cache; at its later
    calls (decoding steps, OPERA's rollbacks) they are recalled and aligned with the call's keys, which are the
    stream's last ``k`` tokens (fewer than all in a sliding-window layer; the cache counts them). The prompt must
    reach the model in one prefill pass, as ``generate`` sends it (no chunked prefill).

    Attributes:
        tracker: the prompt tracker (token ids of the current forward).
        remembered: per stream, ``(image, before_image)`` ``[B, N]`` bool of its prompt.
    """

    tracker: PromptTracker
    remembered: weakref.WeakKeyDictionary[Any, tuple[Tensor, Tensor]] = field(default_factory=weakref.WeakKeyDictionary)
    _streams: weakref.WeakKeyDictionary[nn.Module, Any] = field(default_factory=weakref.WeakKeyDictionary)

    def saw_attention_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        cache = _cache_argument(kwargs)
        self._streams[module] = None if cache is None else weakref.ref(cache)

    def _stream(self, module: nn.Module) -> Any:
        reference = self._streams.get(module)
        return None if reference is None else reference()

    def keys(self, call: AttentionCall) -> tuple[Tensor, Tensor]:
        """``(image, before_image)``, each ``[B, k]`` bool over the call's keys: the prompt's image tokens, and its
        real tokens before the sample's first image token (none in a sample without image tokens)."""
        stream, key_length = self._stream(call.module), call.scores.shape[-1]
        if call.is_prefill:
            real = call.real_keys
            image = self.tracker.image_mask(key_length).to(real.device) & real
            before = real & (image.long().cumsum(-1) == 0) & image.any(-1, keepdim=True)
            if stream is not None:
                self.remembered[stream] = (image, before)
            return image, before
        if stream is None:
            raise RuntimeError(
                f"{type(call.module).__name__} processed new tokens on top of earlier ones without receiving a KV cache "
                "argument (cache or past_key_values), so eahlib cannot tell which prompt they continue."
            )
        prompt = self.remembered.get(stream)
        if prompt is None or prompt[0].shape[0] != call.scores.shape[0]:
            raise RuntimeError(
                "An attention call continues a generation whose prefill this intervention did not see (or with another "
                "batch size): enter the intervention before generate, and call generate with the whole prompt."
            )
        total = stream.get_seq_length(getattr(call.module, "layer_idx", 0))
        first = max(total - key_length, 0)  # a sliding window shows the last tokens only; a static cache all slots
        image, before = (mask[:, first:first + key_length] for mask in prompt)
        return (nn.functional.pad(image, (0, key_length - image.shape[1])),  # generated tokens are neither
                nn.functional.pad(before, (0, key_length - before.shape[1])))


@contextlib.contextmanager
def track_prompt_keys(model: nn.Module, layers: Sequence[int]) -> Iterator[PromptKeys]:
    """Keep a :class:`PromptKeys` current for the attention calls of ``layers`` while the block runs."""
    handles = []
    with track_prompts(model) as tracker:
        prompts = PromptKeys(tracker)
        try:
            for layer in layers:
                module = attention_module(model, layer)
                handles.append(module.register_forward_pre_hook(prompts.saw_attention_call, with_kwargs=True))
            yield prompts
        finally:
            for handle in handles:
                handle.remove()
