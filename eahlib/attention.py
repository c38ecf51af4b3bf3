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
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from eahlib.models import (
    attention_module,
    decoder,
    decoder_layers,
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
        key_mask: ``[B, k]`` bool, the keys the last query may attend: the real (non-padding)
            tokens under a causal mask.
        is_prefill: no cached keys (``q == k``): the call processes the whole sequence.
    """

    module: nn.Module
    scores: Tensor
    probs: Tensor | None
    key_mask: Tensor
    is_prefill: bool


class LayerHook:
    """Base of the per-layer hooks: sees (and may replace) a layer's attention.

    A hooked call computes float32 logits, lets every hook ``adjust_scores`` (e.g. PAI's boost
    of image-token logits), takes the softmax, then passes the probabilities through every
    hook's ``__call__`` (e.g. EAH's head broadcast, or a capture). ``modifies`` hooks run before
    observers; ``wants_probabilities`` says whether a call (a prefill or a decoding step)
    needs the explicit computation at all. Subclasses override what they need.
    """

    modifies: bool = False

    def wants_probabilities(self, is_prefill: bool) -> bool:
        return True

    def adjust_scores(self, call: AttentionCall) -> Tensor:
        return call.scores

    def __call__(self, call: AttentionCall) -> Tensor:
        assert call.probs is not None
        return call.probs


_LAYER_HOOKS: weakref.WeakKeyDictionary[nn.Module, list[LayerHook]] = weakref.WeakKeyDictionary()


@dataclass
class _Activation:
    count: int
    original: str


_ACTIVE_MODELS: weakref.WeakKeyDictionary[nn.Module, _Activation] = weakref.WeakKeyDictionary()


def _additive_mask(attention_mask: Tensor | None, query_length: int, key_length: int, device: torch.device) -> Tensor:
    """Turn any mask transformers hands over into a float32 additive ``[.., q, k]`` mask.

    ``None`` (SDPA's causal shortcut) means plain causal attention with the queries at the end.
    """
    minimum = torch.finfo(torch.float32).min
    if attention_mask is None:
        query_pos = torch.arange(query_length, device=device).unsqueeze(-1) + (key_length - query_length)
        allowed = torch.arange(key_length, device=device) <= query_pos
        return torch.where(allowed, 0.0, minimum)
    if attention_mask.dtype == torch.bool:
        return torch.where(attention_mask, 0.0, minimum)
    return attention_mask.float()


def attention_scores(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
) -> Tensor:
    """Masked pre-softmax attention logits of every query head, in float32.

    Args:
        module: the attention module (for ``num_key_value_groups``).
        query: ``[B, H, q, d]``.
        key: ``[B, H_kv, k, d]``.
        attention_mask: bool (True = attend), additive float, or ``None`` (causal).
        scaling: score scale (default ``d ** -0.5``).

    Returns:
        ``[B, H, q, k]`` float32; masked positions hold the float32 minimum.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    key = repeat_kv(key, groups) if groups > 1 else key
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query.float(), key.float().transpose(2, 3)) * scale
    mask = _additive_mask(attention_mask, query.shape[2], key.shape[2], query.device)
    return scores + mask[..., : key.shape[2]]


def _key_mask(attention_mask: Tensor | None, batch: int, key_length: int, device: torch.device) -> Tensor:
    """``[B, k]`` keys visible to the last query (real tokens, under a causal mask)."""
    if attention_mask is None:
        return torch.ones(batch, key_length, dtype=torch.bool, device=device)
    last = attention_mask[..., -1, :key_length]
    visible = last if last.dtype == torch.bool else last > torch.finfo(last.dtype).min / 2
    return visible.reshape(visible.shape[0], -1, key_length).any(1).expand(batch, -1)


def _explicit_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None,
    dropout: float,
    hooks: list[LayerHook],
) -> tuple[Tensor, Tensor]:
    call = AttentionCall(module, attention_scores(module, query, key, attention_mask, scaling), None,
                         _key_mask(attention_mask, query.shape[0], key.shape[2], query.device),
                         query.shape[2] == key.shape[2])
    for hook in hooks:
        call.scores = hook.adjust_scores(call)
    call.probs = torch.softmax(call.scores, dim=-1)
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
    """The registered attention function: base implementation, or explicit probabilities + hooks."""
    hooks = _LAYER_HOOKS.get(module, [])
    active = [h for h in hooks if h.wants_probabilities(query.shape[2] == key.shape[2])]
    if not active and base == "sdpa":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    for unsupported in ("softcap", "s_aux", "sinks"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(
                f"{type(module).__name__} passes `{unsupported}` to its attention; eahlib's explicit attention does "
                "not implement it, so this layer cannot provide probabilities."
            )
    return _explicit_attention(module, query, key, value, attention_mask, scaling, dropout, active)


def _register() -> None:
    masks = {"sdpa": sdpa_mask, "eager": eager_mask}
    for base in BASE_IMPLEMENTATIONS:
        AttentionInterface.register(NAME_PREFIX + base, partial(_eahlib_attention, base))
        AttentionMaskInterface.register(NAME_PREFIX + base, masks[base])


_register()


def _set_text_attention(model: nn.Module, implementation: str) -> None:
    family = model_family(model)
    if family.text_config is None:
        model.set_attn_implementation(implementation)
    else:
        model.set_attn_implementation({family.text_config: implementation})


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
        _set_text_attention(model, NAME_PREFIX + original)
        state = _ACTIVE_MODELS[model] = _Activation(count=0, original=original)
    state.count += 1
    try:
        yield
    finally:
        state.count -= 1
        if state.count == 0:
            del _ACTIVE_MODELS[model]
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
    modules = [getattr(layer, "self_attn", None) for layer in decoder_layers(model)]
    return {i: list(_LAYER_HOOKS[m]) for i, m in enumerate(modules) if m is not None and _LAYER_HOOKS.get(m)}


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
        layers: layer indices (default: all decoder layers).

    Yields:
        An :class:`AttentionCapture` whose ``attentions`` fill as the model runs.
    """
    if layers is None:
        layers = list(range(len(decoder_layers(model))))
    elif isinstance(layers, int):
        layers = [layers]
    capture = AttentionCapture(tuple(layers))
    with layer_hooks(model, {layer: capture.hook_for(layer) for layer in layers}):
        yield capture


@dataclass
class PromptTracker:
    """Knows the token ids of the sequence the language model is processing.

    Two forward pre-hooks: one on the input-embedding module (which sees the ids wherever the
    embeddings are computed, also in ``generate`` paths that pass ``inputs_embeds`` on) and
    one on the decoder, which takes those ids, or its own ``input_ids``, at the start of each
    forward. ``input_ids`` is ``None`` when the current forward came with embeddings only.
    """

    model: nn.Module
    input_ids: Tensor | None = None
    _pending: Tensor | None = None

    def saw_embedding_call(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._pending = args[0] if args and isinstance(args[0], Tensor) else None

    def saw_decoder_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        pending, self._pending = self._pending, None
        if ids is None and embeds is not None and pending is not None and pending.shape == embeds.shape[:2]:
            ids = pending
        self.input_ids = ids

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
    """Keep a :class:`PromptTracker` current while the block runs (hooks removed on exit)."""
    tracker = PromptTracker(model)
    handles = []
    try:
        handles.append(model.get_input_embeddings().register_forward_pre_hook(tracker.saw_embedding_call))
        handles.append(decoder(model).register_forward_pre_hook(tracker.saw_decoder_call, with_kwargs=True))
        yield tracker
    finally:
        for handle in handles:
            handle.remove()
