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
    """

    module: nn.Module
    scores: Tensor
    probs: Tensor | None
    visible: Tensor
    is_prefill: bool

    @property
    def real_keys(self) -> Tensor:
        """``[B, k]`` bool: at a prefill, the real (non-padding) tokens; at a decoding step, the real keys the
        new token can see (in a sliding-window layer, older tokens are out of its view).

        A prefill reads them from the mask's diagonal: transformers masks a key for every query, itself
        included, exactly when the padding mask marks it as padding, and a real token always sees itself.
        One query's row would not do: in a sliding-window layer it hides the real tokens outside its window.
        """
        if self.is_prefill:
            return self.visible.diagonal(dim1=-2, dim2=-1)
        return self.visible.any(-2)

    def visibility(self) -> Tensor | None:
        """The prefill's visibility for the sink definitions: ``None`` when the mask is plain causal over the
        real tokens (the closed forms of :mod:`eahlib.metrics`), else ``[B, N, N]``."""
        return beyond_causal(self.visible, self.real_keys)


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
    softcap: float | None = None,
) -> Tensor:
    """Masked pre-softmax attention logits of every query head, in float32.

    Args:
        module: the attention module (for ``num_key_value_groups``).
        query: ``[B, H, q, d]``.
        key: ``[B, H_kv, k, d]``.
        attention_mask: bool (True = attend), additive float, or ``None`` (causal).
        scaling: score scale (default ``d ** -0.5``).
        softcap: logit soft-capping ``c * tanh(x / c)`` before the mask (Gemma 2 and its descendants).

    Returns:
        ``[B, H, q, k]`` float32; masked positions hold the float32 minimum.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    key = repeat_kv(key, groups) if groups > 1 else key
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query.float(), key.float().transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    mask = _additive_mask(attention_mask, query.shape[2], key.shape[2], query.device)
    return scores + mask[..., : key.shape[2]]


def attention_probabilities(scores: Tensor, sinks: Tensor | None = None) -> Tensor:
    """Softmax over the keys; with per-head ``sinks`` logits (gpt-oss style), each row also spreads over a
    virtual sink that is then dropped, so a row sums to less than 1.

    Args:
        scores: ``[B, H, q, k]`` float32 logits.
        sinks: ``[H]`` sink logits, or ``None``.

    Returns:
        ``[B, H, q, k]`` float32.
    """
    if sinks is None:
        return torch.softmax(scores, dim=-1)
    sink = sinks.float().reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
    return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]


def visible_keys(attention_mask: Tensor | None, batch: int, query_length: int, key_length: int,
                 device: torch.device) -> Tensor:
    """``[B, q, k]`` bool: which keys each query may attend, from the mask transformers hands over.

    ``None`` (SDPA's causal shortcut, no padding) means plain causal attention with the queries at the end;
    a mask with a head dimension counts a key as visible when any head may attend it.
    """
    if attention_mask is None:
        query_pos = torch.arange(query_length, device=device).unsqueeze(-1) + (key_length - query_length)
        return (torch.arange(key_length, device=device) <= query_pos).expand(batch, -1, -1)
    mask = attention_mask[..., :key_length]
    visible = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    if visible.dim() == 4:
        visible = visible.any(1)
    return visible.expand(batch, query_length, key_length)


def _explicit_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None,
    dropout: float,
    hooks: list[LayerHook],
    softcap: float | None = None,
    sinks: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    call = AttentionCall(module, attention_scores(module, query, key, attention_mask, scaling, softcap), None,
                         visible_keys(attention_mask, query.shape[0], query.shape[2], key.shape[2], query.device),
                         query.shape[2] == key.shape[2])
    for hook in hooks:
        call.scores = hook.adjust_scores(call)
    call.probs = attention_probabilities(call.scores, sinks)
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
    sinks = kwargs.get("s_aux", kwargs.get("sinks"))
    if sinks is not None and sinks.dim() != 1:
        raise NotImplementedError(
            f"{type(module).__name__} passes attention sinks of shape {list(sinks.shape)}; eahlib's explicit attention "
            "implements one sink logit per head ([heads]), so this layer cannot provide probabilities."
        )
    return _explicit_attention(module, query, key, value, attention_mask, scaling, dropout, active,
                               kwargs.get("softcap"), sinks)


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
    ``inputs_embeds`` on, as InstructBLIP's). ``input_ids`` is ``None`` when a forward came with embeddings only.
    """

    model: nn.Module
    input_ids: Tensor | None = None
    _pending: Tensor | None = None
    _outer: Tensor | None = None

    def saw_model_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._outer = ids if isinstance(ids, Tensor) else None

    def left_model_call(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._outer = None

    def saw_embedding_call(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._pending = args[0] if args and isinstance(args[0], Tensor) else None

    def saw_decoder_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        pending, self._pending = self._pending, None
        if ids is None and embeds is not None:
            for candidate in (self._outer, pending):
                if candidate is not None and candidate.shape == embeds.shape[:2]:
                    ids = candidate
                    break
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
        handles.append(model.register_forward_pre_hook(tracker.saw_model_call, with_kwargs=True))
        handles.append(model.register_forward_hook(tracker.left_model_call))
        handles.append(model.get_input_embeddings().register_forward_pre_hook(tracker.saw_embedding_call))
        handles.append(decoder(model).register_forward_pre_hook(tracker.saw_decoder_call, with_kwargs=True))
        yield tracker
    finally:
        for handle in handles:
            handle.remove()
