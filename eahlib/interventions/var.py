"""Visual Attention Redistribution (VAR; Kang et al., "See What You Are Told: Visual Attention Sink in Large
Multimodal Models", ICLR 2025, arXiv 2503.03321; code ``MICV-yonsei/VisAttnSink``), training-free.

Some image tokens draw a large share of the text's attention although they carry little about the image: they
have a *massive activation* in the language model's sink dimensions, as the ``<bos>`` token (the text sink) has.
VAR takes part of the attention these sink tokens receive and gives it to the other image tokens:

1. **Sink tokens** (prefill only, before each decoder layer from the third on, on the layer's *input* hidden
   state ``x``): a token is a sink when ``max_{d in D_sink} |x_d / rms(x)| > tau`` (``rms`` without the norm's
   weight; :func:`eahlib.normalised_magnitude`). Sinks inside the image are the *visual* sink tokens. Decoding
   steps reuse the prefill's sink tokens.
2. **Image-centric heads**, per (head, query row) from the post-softmax attention ``a`` of every forward:
   ``summation = sum_{image} a`` and the visual non-sink ratio ``1 - portion`` with
   ``portion = sum_{image sinks} a / (summation + 1e-6 * n_image)``; a row is selected when
   ``1 - portion >= rho`` and ``summation >= min_image_attention``. A sample without a visual sink token at a
   layer is not edited there.
3. **Redistribution**, post-softmax, before the values: on each selected row (at the prefill, the rows after
   the sample's last image token; at a decoding step, the new rows) every sink token the row attends keeps
   ``1 - p`` of its attention, and the removed mass ``p * sum_{sinks} a`` goes to the image tokens that are not
   sinks, in proportion to their attention. Each row keeps its sum.

**Parameters are named as in the paper, and converted from the released code.** The released ``rho`` is an
upper bound on the sink share (``portion <= rho``) and its ``p`` is the share a sink *keeps* (``a *= p``); the
paper's ``rho`` is a lower bound on the non-sink share and its ``p`` the share *taken away*: each is the
other's complement (VisAttnSink issue #5, confirmed by the author). The defaults reproduce the released
configuration (``A_exps/lv1.5_7b.yml``: ``tau: 20``, ``rho: 0.5``, ``p: 0.6``, ``summ: 0.2``): here
``tau=20``, ``rho = 1 - 0.5 = 0.5``, ``p = 1 - 0.6 = 0.4``, ``min_image_attention=0.2`` (released ``summ``).

**Sink dimensions** (``sink_dims``). The released code always uses LLaMA-2-7B's ``(2533, 1415)``
(``src/logic/constants.py``; the per-model switch ``set_llm_name`` is never called), published for
LLaVA-1.5-7B; :data:`eahlib.MASSIVE_ACTIVATION_DIMS` has them as ``"llava-1.5-7b"`` (and ``"llava-1.5-13b"``).
Other models have their own. The paper takes the sink dimensions from the language model's text sink: the
dimensions in which ``<bos>`` carries its massive activation. The default ``"first-token"`` applies that
rule to every prompt and layer: in each sample and examined layer, ``D_sink`` is the set of dimensions where
the sample's **first real non-image token** (``<bos>`` in LLaVA-style prompts, ``<|im_start|>`` in ChatML)
has ``|x_d / rms(x)| > tau`` at that layer's input. Where that token has no massive activation, the layer has
no sink dimension and no sink token in that sample, so it is not edited. Explicit dimensions (a list of
ints) or a name of :data:`eahlib.MASSIVE_ACTIVATION_DIMS` replace the rule; pass ``"llava-1.5-7b"`` on
LLaVA-1.5-7B to use the released dimensions. (Whether the rule finds exactly ``{1415, 2533}`` on
LLaVA-1.5-7B was not checked here: no checkpoint was available.) On the SmolLM2 organism (hidden size 576)
the rule finds one dimension, 507, where ``<|im_start|>`` reaches 20-24 at the inputs of layers 2-9 and 12-29
(18 and 3 at layers 10-11: no sink dimension there). Image tokens reach at most 17.4 in dimension 507 (32
images); only at the inputs of the last two layers do some pass 20, in other dimensions. So at the published
``tau`` VAR finds no visual sink token on that model and edits nothing; the recorder's ``var_image_sinks``
says so. Note that ``|x_d / rms(x)| <= sqrt(D)``: a hidden size of 576 allows at most 24, LLaMA-2-7B's 64.

What the released code computes (VisAttnSink @ 98e62d6; ``src/logic/logic.py``, ``src/model/llava.py``):

- sink tokens: ``DimProspector.run_logic`` (logic.py:98-110) on the input of layers ``range(L)[2:]``
  (logic.py:50-52), called before each layer only while ``output_token_count < 0``, i.e. at the prefill
  (llava.py:313-316; the counter steps after each forward, llava.py:350); any position can be a sink;
- head selection: ``HeadFork.run_logic`` (logic.py:115-145) on the post-softmax weights of every forward
  (llava.py:139-142), with ``portion = sum(image_attn[sinks]) / sum(image_attn + 1e-6)`` (so ``1e-6`` per image
  token), ``portion <= rho`` and ``summation >= summ``; no visual sink token at the layer: nothing selected;
- redistribution: ``VARProcessor.attn_redist`` (logic.py:163-212), applied before the values (llava.py:144-150):
  at the prefill only rows ``>= im + pa`` (after the image; logic.py:179), at a decoding step every row;
  ``text_indices`` are *all* sink tokens outside the image, so text sinks (the first token, say) lose their
  share too, and the budget of image and text sinks goes to the non-sink image tokens in proportion
  (logic.py:189-210). eahlib does the same (``text_sinks=True``); ``text_sinks=False`` takes attention from
  the visual sink tokens only, the narrower reading of the paper's "visual attention sink";
- quirks: (a) the last layer is edited too: ``VARProcessor.except_last_layer = False`` (logic.py:148) shadows
  the ``except_last_layer: 1`` of the config, which ``activate`` sets on ``LogicEngine`` only (logic.py:46);
  eahlib edits it (``edit_last_layer=True``, the run's behaviour; ``False`` does what the config asks);
  (b) the prompt is re-tokenized in segments without special tokens (``src/mm_utils.py:203-212`` replaces the
  ids by ``MetadataStation.segment_prompt``'s, ``src/stash.py:230``), so it has no
  ``<bos>`` and its first token, ``A`` of the system prompt, is the text sink; eahlib runs the prompt the
  processor builds (with ``<bos>`` for LLaVA-1.5); (c) state leaks between samples: ``StashEngine.clear``
  and ``LogicEngine.clear`` (inference.py:150-151) rebind class attributes to the *same* default dicts, so
  the token counter and the sink indices are never reset; from the second sample on no prefill computes
  sinks (the first sample's sink positions are reused) and the prefill row filter is off (every row with the
  image-centric test is edited). eahlib does what the release does for its *first* sample, for every sample.

Other differences, all deliberate:

- every sample of a batch is independent (its own sinks, image tokens and rows; padding never counts);
  released: batch size 1, image span ``[im, im + 576)`` from the prompt's segments. Here image tokens come
  from their ids, anywhere in the prompt; with several images, rows after the last image token are edited;
- attention and statistics in float32 (released: weights cast to float16 before the head test);
- layers "from the third on" count decoder layers (``start_layer=2``): massive activations form in the first
  two layers (the paper's analysis; the SmolLM2 organism's first token gets its own at layer 2's input too),
  so the start is absolute, not a fraction of the depth. On hybrid models only layers with attention count;
- a row whose non-sink image tokens have no attention at all is left alone (released: a division by zero);
- decoding steps reuse the sinks of *their own* prefill: state is kept per KV cache, so a contrastive
  decoder's second stream (VCD's noised image, PAI's text-only prompt) has its own sinks, and VAR acts on
  every stream of the model;
- ``p=0`` (nothing to move), or no visual sink token in a layer, leaves the layer on the model's own attention
  implementation: the output equals the stock model's bit for bit.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from eahlib.attention import AttentionCall, LayerHook, PromptTracker, layer_hooks, track_prompts, visible_keys
from eahlib.methods.registry import Component, register
from eahlib.metrics import MASSIVE_ACTIVATION_DIMS, massive_activation_sinks, normalised_magnitude
from eahlib.models import attention_layers, decoder_layers, text_config

FIRST_TOKEN = "first-token"
"""``sink_dims`` rule: the dimensions where each sample's first real non-image token is massive, per layer."""

SinkDims = str | Sequence[int]
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")


def var_sink_tokens(hidden_states: Tensor, real: Tensor, image: Tensor, sink_dims: SinkDims, tau: float) -> Tensor:
    """VAR's sink tokens of one layer, from its input hidden state.

    Args:
        hidden_states: ``[B, N, D]`` the layer's input.
        real: ``[B, N]`` bool, the real (non-padding) tokens.
        image: ``[B, N]`` bool, the image tokens.
        sink_dims: :data:`FIRST_TOKEN`, a name of :data:`eahlib.MASSIVE_ACTIVATION_DIMS`, or dimensions.
        tau: threshold on ``|x_d / rms(x)|``.

    Returns:
        ``[B, N]`` bool: real tokens with ``|x_d / rms(x)| > tau`` in a sink dimension.
    """
    if sink_dims != FIRST_TOKEN:
        return massive_activation_sinks(hidden_states, sink_dims, tau) & real
    massive = normalised_magnitude(hidden_states) > tau
    text = real & ~image
    first = text.int().argmax(-1)  # first True; a sample without text tokens gets no sink dimension below
    dims = massive[torch.arange(len(first), device=first.device), first] & text.any(-1, keepdim=True)
    return (massive & dims.unsqueeze(1)).any(-1) & real


def redistribute_attention(
    probs: Tensor, image: Tensor, sinks: Tensor, rows: Tensor,
    rho: float, p: float, min_image_attention: float, text_sinks: bool = True,
) -> tuple[Tensor, Tensor]:
    """VAR's head selection and redistribution on post-softmax attention.

    Args:
        probs: ``[B, H, q, k]`` attention probabilities.
        image: ``[B, k]`` bool, image-token keys.
        sinks: ``[B, k]`` bool, sink-token keys (image and text).
        rows: ``[B, q]`` bool, the query rows that may be edited.
        rho: least visual non-sink ratio of a selected row (paper's ``rho``).
        p: share of the sinks' attention moved to the non-sink image tokens (paper's ``p``).
        min_image_attention: least attention on the image of a selected row (released ``summ``).
        text_sinks: take attention from the sinks outside the image too (released), else from visual sinks only.

    Returns:
        ``(probs, selected)``: ``[B, H, q, k]`` with the selected rows redistributed (others unchanged), and
        ``[B, H, q]`` bool, the selected rows.
    """
    image_sinks = image & sinks
    receivers = image & ~sinks
    keys = lambda mask: mask[:, None, None, :]  # noqa: E731  [B, k] -> [B, 1, 1, k]
    summation = (probs * keys(image)).sum(-1)
    portion = (probs * keys(image_sinks)).sum(-1) / (summation + 1e-6 * image.sum(-1)[:, None, None])
    receiving = (probs * keys(receivers)).sum(-1, keepdim=True)
    selected = ((1 - portion >= rho) & (summation >= min_image_attention) & rows[:, None, :]
                & image_sinks.any(-1)[:, None, None] & (receiving.squeeze(-1) > 0))
    donors = keys(sinks if text_sinks else image_sinks)
    budget = p * (probs * donors).sum(-1, keepdim=True)
    share = probs * keys(receivers) / torch.where(receiving > 0, receiving, 1.0)
    moved = torch.where(donors, probs * (1 - p), probs) + budget * share
    return torch.where(selected.unsqueeze(-1), moved, probs), selected


@dataclass
class VarRecord:
    """What VAR did in one prefill and the decoding steps after it, per batch row (``[B]`` int64 each).

    Attributes:
        image_sinks: visual sink tokens, summed over the examined layers.
        text_sinks: sink tokens outside the image, summed over the examined layers.
        sink_layers: examined layers with at least one visual sink token.
        rows_prefill: redistributed (layer, head, query row) triples at the prefill.
        rows_decoding: redistributed (layer, head, query row) triples over every later forward of the stream.
    """

    image_sinks: Tensor
    text_sinks: Tensor
    sink_layers: Tensor
    rows_prefill: Tensor
    rows_decoding: Tensor

    @classmethod
    def zeros(cls, batch: int) -> VarRecord:
        return cls(*(torch.zeros(batch, dtype=torch.long) for _ in range(5)))

    @classmethod
    def cat(cls, records: Sequence[VarRecord]) -> VarRecord:
        return cls(*(torch.cat([getattr(r, f) for r in records]) for f in cls.__dataclass_fields__))


@dataclass(eq=False)
class _Stream:
    """One prefill and its decoding steps (one KV cache): image tokens, sink tokens per layer, record."""

    cache: weakref.ref | None
    image: Tensor
    real: Tensor
    record: VarRecord
    sinks: dict[int, Tensor] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)

    def holds(self, cache: Any) -> bool:
        return cache is None if self.cache is None else self.cache() is cache


@dataclass(eq=False)
class VisualAttentionRedistribution:
    """The VAR intervention's settings, its per-stream state and its records (one :class:`VarRecord` per prefill).

    Attributes:
        layers: the examined decoder layers.
        sink_dims, tau, rho, p, min_image_attention, text_sinks, start_layer, edit_last_layer: as in
            :func:`redistribute_visual_attention`.
        records: one :class:`VarRecord` per prefill, in order.
    """

    layers: tuple[int, ...]
    sink_dims: SinkDims
    tau: float
    rho: float
    p: float
    min_image_attention: float
    text_sinks: bool
    start_layer: int
    edit_last_layer: bool
    tracker: PromptTracker
    records: list[VarRecord] = field(default_factory=list)
    _streams: list[_Stream] = field(default_factory=list)

    def settings(self) -> dict[str, object]:
        """The parameters in effect, for result records."""
        dims = self.sink_dims if isinstance(self.sink_dims, str) else list(self.sink_dims)
        return {"sink_dims": dims, "tau": self.tau, "rho": self.rho, "p": self.p,
                "min_image_attention": self.min_image_attention, "text_sinks": self.text_sinks,
                "start_layer": self.start_layer, "edit_last_layer": self.edit_last_layer}

    def prefill_count(self) -> int:
        return len(self.records)

    def merge_prefills(self, start: int) -> None:
        """The records of the prefills since ``start`` become one (a decoder that runs one prefill per sample)."""
        if len(self.records) - start > 1:
            self.records[start:] = [VarRecord.cat(self.records[start:])]

    def prefill_stream(self, cache: Any, layer: int, hidden: Tensor, real: Tensor) -> _Stream:
        """The stream of this prefill: the cache's current one while its layers come, else a new one."""
        self._streams = [s for s in self._streams if s.cache is None or s.cache() is not None]
        current = next((s for s in self._streams if s.holds(cache)), None)
        if current is None or layer in current.seen:
            if current is not None:
                self._streams.remove(current)
            image = self.tracker.image_mask(hidden.shape[1]).to(hidden.device) & real
            current = _Stream(None if cache is None else weakref.ref(cache), image, real, VarRecord.zeros(len(real)))
            self._streams.append(current)
            self.records.append(current.record)
        current.seen.add(layer)
        return current

    def decoding_stream(self, cache: Any, batch: int) -> _Stream:
        stream = next((s for s in self._streams if cache is not None and s.holds(cache)), None)
        if stream is None:
            raise RuntimeError("VAR saw a decoding step whose prefill it did not see: enter the var context before "
                               "the prompt's prefill (e.g. around the whole generate call).")
        if stream.real.shape[0] != batch:
            raise RuntimeError(f"VAR saw a decoding step of {batch} rows after a prefill of {stream.real.shape[0]} "
                               "rows on the same cache; run each batch's prefill inside the var context.")
        return stream


@dataclass(eq=False)
class _VarLayer(LayerHook):
    """The hook of one examined layer: a forward pre-hook on the decoder layer (its input hidden state, mask and
    cache) and the attention hook (sink tokens at the prefill, then the redistribution at every forward)."""

    layer: int
    owner: VisualAttentionRedistribution
    modifies: bool = True
    _input: tuple[Tensor, Any, Any, int | None] | None = None
    _stream: _Stream | None = None
    _length: int | None = None

    def saw_layer_input(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(hidden, Tensor):
            raise TypeError(f"VAR reads the input hidden state of decoder layer {self.layer}, but "
                            f"{type(module).__name__} was called without a hidden-state tensor.")
        if hidden.dim() == 4:  # hyper-connections: [B, N, streams, D]; a token's residual state is all its streams
            hidden = hidden.flatten(2)
        cache = next((kwargs[k] for k in _CACHE_KWARGS if kwargs.get(k) is not None), None)
        cached = getattr(cache, "layers", None)
        past = int(cached[self.layer].get_seq_length()) if cached is not None and self.layer < len(cached) else None
        self._input = (hidden, kwargs.get("attention_mask"), cache, past)

    def wants_probabilities(self, is_prefill: bool) -> bool:
        if self._input is None:
            raise RuntimeError(f"VAR's attention hook of layer {self.layer} ran without its decoder layer's input.")
        hidden, mask, cache, past = self._input
        self._input = None
        self._length = None
        if is_prefill:
            self._stream = self._prefill(hidden, mask, cache)
        else:
            self._stream = self.owner.decoding_stream(cache, hidden.shape[0])
            self._length = None if past is None else past + hidden.shape[1]
        return self.owner.p > 0 and self.layer in self._stream.sinks

    def _prefill(self, hidden: Tensor, mask: Tensor | None, cache: Any) -> _Stream:
        batch, length = hidden.shape[:2]
        padding = self.owner.tracker.padding
        if padding is not None and tuple(padding.shape) == (batch, length):
            real = padding.to(hidden.device).bool()
        elif isinstance(mask, Tensor) and mask.dim() == 2:
            real = mask.to(hidden.device).bool()
        else:  # a 4-D mask: a token sees itself unless it is padding
            real = visible_keys(mask, batch, length, length, hidden.device).diagonal(dim1=-2, dim2=-1)
        stream = self.owner.prefill_stream(cache, self.layer, hidden, real)
        sinks = var_sink_tokens(hidden, real, stream.image, self.owner.sink_dims, self.owner.tau)
        in_image = (sinks & stream.image).sum(-1).cpu()
        record = stream.record
        record.image_sinks += in_image
        record.text_sinks += (sinks & ~stream.image).sum(-1).cpu()
        record.sink_layers += (in_image > 0).long()
        if bool((in_image > 0).any()):
            stream.sinks[self.layer] = sinks
        return stream

    def __call__(self, call: AttentionCall) -> Tensor:
        """Redistribute the editable rows in place: at the prefill the rows after each sample's image (the
        explicit probabilities of this call; the rows before the first editable one are not touched), at a
        decoding step every new row."""
        stream, probs = self._stream, call.probs
        assert stream is not None and probs is not None
        key_length = probs.shape[-1]
        length = max(key_length, self._length or 0)  # a sliding-window cache holds the last key_length positions
        pad = lambda mask: nn.functional.pad(mask, (0, length - mask.shape[1]))[:, length - key_length:]  # noqa: E731
        if call.is_prefill:
            positions = torch.arange(key_length, device=probs.device)
            last_image = torch.where(stream.image, positions, -1).amax(-1, keepdim=True)
            rows = (positions > last_image) & stream.real
        else:
            rows = torch.ones(probs.shape[0], probs.shape[2], dtype=torch.bool, device=probs.device)
        first = int(rows.any(0).int().argmax())
        owner = self.owner
        edited, selected = redistribute_attention(probs[:, :, first:], pad(stream.image), pad(stream.sinks[self.layer]),
                                                  rows[:, first:], owner.rho, owner.p, owner.min_image_attention,
                                                  owner.text_sinks)
        probs[:, :, first:] = edited
        counts = selected.sum((1, 2)).cpu()
        if call.is_prefill:
            stream.record.rows_prefill += counts
        else:
            stream.record.rows_decoding += counts
        return probs

    def prefill_count(self) -> int:
        return self.owner.prefill_count()

    def merge_prefills(self, start: int) -> None:
        self.owner.merge_prefills(start)


def _check_arguments(model: nn.Module, sink_dims: SinkDims, tau: float, rho: float, p: float,
                     min_image_attention: float, start_layer: int, flags: dict[str, object]) -> SinkDims:
    """Refuse bad settings with the valid ones; returns the sink dimensions in effect (a rule or a tuple)."""
    if sink_dims == FIRST_TOKEN:
        pass
    elif isinstance(sink_dims, str):
        if sink_dims not in MASSIVE_ACTIVATION_DIMS:
            raise ValueError(f"sink_dims={sink_dims!r} is unknown: use {FIRST_TOKEN!r} (the first token's massive "
                             f"dimensions), a name of {sorted(MASSIVE_ACTIVATION_DIMS)}, or a list of dimensions.")
        sink_dims = MASSIVE_ACTIVATION_DIMS[sink_dims]
    hidden = int(text_config(model).hidden_size)
    if sink_dims != FIRST_TOKEN:
        dims = list(sink_dims) if isinstance(sink_dims, Sequence) else []
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < hidden for d in dims):
            raise ValueError(f"sink_dims must be {FIRST_TOKEN!r}, a name of {sorted(MASSIVE_ACTIVATION_DIMS)} or a "
                             f"non-empty list of hidden dimensions in 0..{hidden - 1} (the language model's hidden "
                             f"size is {hidden}), got {sink_dims!r}.")
        sink_dims = tuple(dims)
    for name, value in (("rho", rho), ("p", p), ("min_image_attention", min_image_attention)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"var's {name} must be a number in [0, 1], got {value!r}.")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"var's tau must be a positive number, got {tau!r}.")
    if isinstance(start_layer, bool) or not isinstance(start_layer, int) or start_layer < 0:
        raise ValueError(f"var's start_layer must be a decoder-layer index >= 0, got {start_layer!r}.")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"var's {name} must be true or false, got {value!r}.")
    return sink_dims


@contextlib.contextmanager
def redistribute_visual_attention(
    model: nn.Module,
    sink_dims: SinkDims = FIRST_TOKEN,
    tau: float = 20.0,
    rho: float = 0.5,
    p: float = 0.4,
    min_image_attention: float = 0.2,
    text_sinks: bool = True,
    start_layer: int = 2,
    edit_last_layer: bool = True,
) -> Iterator[VisualAttentionRedistribution]:
    """Redistribute the attention that image-centric heads give to sink tokens onto the other image tokens (VAR).

    Example:
        >>> with redistribute_visual_attention(model) as var:  # doctest: +SKIP
        ...     out = model.generate(**inputs, max_new_tokens=64)
        >>> var.records[0].image_sinks  # visual sink tokens per sample, summed over layers  # doctest: +SKIP

    Args:
        model: a supported vision-language model (see :mod:`eahlib.models`).
        sink_dims: ``"first-token"`` (default: per sample and layer, the dimensions where the first real non-image
            token is massive), a name of :data:`eahlib.MASSIVE_ACTIVATION_DIMS` (``"llava-1.5-7b"``: the released
            ``(2533, 1415)``), or a list of hidden dimensions.
        tau: massive-activation threshold on ``|x_d / rms(x)|`` (published 20).
        rho: least visual non-sink ratio of an image-centric row (paper's ``rho``; released ``rho`` 0.5 is
            ``1 - rho``).
        p: share of each sink token's attention moved to the non-sink image tokens (paper's ``p``; released
            ``p`` 0.6 is the share kept, ``1 - p``); 0 leaves the model unchanged.
        min_image_attention: least attention on the image of an image-centric row (released ``summ``, 0.2).
        text_sinks: also take attention from sink tokens outside the image (released behaviour).
        start_layer: first examined decoder layer (published 2: "from the third layer on").
        edit_last_layer: examine the last decoder layer too (as the released code runs; ``False``: as its
            ``except_last_layer`` setting intends).

    Yields:
        The :class:`VisualAttentionRedistribution` record (``records``: one :class:`VarRecord` per prefill).
    """
    flags = {"text_sinks": text_sinks, "edit_last_layer": edit_last_layer}
    sink_dims = _check_arguments(model, sink_dims, tau, rho, p, min_image_attention, start_layer, flags)
    n_layers = len(decoder_layers(model))
    layers = tuple(i for i in attention_layers(model)
                   if i >= start_layer and (edit_last_layer or i != n_layers - 1))
    if not layers:
        raise ValueError(
            f"VAR has no layer to examine: the language model has {n_layers} decoder layers, with attention at "
            f"{attention_layers(model)}, and start_layer={start_layer} (edit_last_layer={edit_last_layer}). "
            "Pass a smaller start_layer."
        )
    with track_prompts(model) as tracker:
        owner = VisualAttentionRedistribution(layers, sink_dims, float(tau), float(rho), float(p),
                                              float(min_image_attention), text_sinks, start_layer, edit_last_layer,
                                              tracker)
        hooks = {layer: _VarLayer(layer, owner) for layer in layers}
        handles = []
        try:
            for layer, hook in hooks.items():
                handles.append(decoder_layers(model)[layer].register_forward_pre_hook(hook.saw_layer_input,
                                                                                      with_kwargs=True))
            with layer_hooks(model, hooks):
                yield owner
        finally:
            for handle in handles:
                handle.remove()


class _VarRecorder:
    """Per sample, from its first prefill (beam rows: the sample's first row; decoding: all its rows):
    ``var_image_sinks``, ``var_text_sinks``, ``var_sink_layers``, ``var_rows_prefill`` and ``var_rows_decoding``,
    the fields of :class:`VarRecord`."""

    def __init__(self, var: VisualAttentionRedistribution) -> None:
        self.var = var

    def extras(self, batch: int) -> list[dict[str, Any]]:
        record = self.var.records[0] if self.var.records else VarRecord.zeros(batch)
        step = record.image_sinks.shape[0] // batch  # beam search expands each sample into num_beams rows
        return [
            {"var_image_sinks": int(record.image_sinks[i * step]), "var_text_sinks": int(record.text_sinks[i * step]),
             "var_sink_layers": int(record.sink_layers[i * step]),
             "var_rows_prefill": int(record.rows_prefill[i * step]),
             "var_rows_decoding": int(record.rows_decoding[i * step:(i + 1) * step].sum())}
            for i in range(batch)
        ]


@contextlib.contextmanager
def var(model: nn.Module, **params: Any) -> Iterator[_VarRecorder]:
    """VAR (Kang et al., ICLR 2025) around any decoder; see :func:`redistribute_visual_attention`."""
    with redistribute_visual_attention(model, **params) as owner:
        yield _VarRecorder(owner)


register(Component(
    "var", "intervention", var,
    {"sink_dims": FIRST_TOKEN, "tau": 20.0, "rho": 0.5, "p": 0.4, "min_image_attention": 0.2, "text_sinks": True,
     "start_layer": 2, "edit_last_layer": True},
    "Kang et al., See What You Are Told: Visual Attention Sink in Large Multimodal Models, ICLR 2025 "
    "(arXiv 2503.03321)",
    description="VAR: in image-centric heads (visual non-sink ratio >= rho, image attention >= "
                "min_image_attention) move the share p of the attention on sink tokens (massive activation > tau in "
                "the sink dimensions; default: the first token's) to the other image tokens, from layer 2 on; "
                "rho and p as in the paper (the released code's are 1 - rho, 1 - p)",
))
