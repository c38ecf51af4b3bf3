"""Vision-aware Head Reinforcement (VHR; He et al., "Cracking the Code of Hallucination in LVLMs with
Vision-aware Head Divergence", ACL 2025, arXiv:2412.13949), training-free.

A head's output ``A[l, i]`` is its slice of the input to the attention output projection
(``[B, q, H * d] -> [B, q, H, d]``, before ``W_O`` mixes the heads; the paper's Eq. 2-3). For the
first generation step (the prompt's last token, whose output predicts the first answer token):

1. **VHD** (Eq. 4): ``VHD[l, i] = || A[l, i](y_0 | x_V, x_T) - A[l, i](y_0 | x_T) ||_2``, the head's output
   with the image and with the image context removed (the prompt without its image tokens).
2. **Outliers** (Eq. 6): ``VHD[l, i]`` is set to 0 where both ``VHD[l, i] > mean + std`` and
   ``TA[l, i] > mean + std`` over the layer's heads, ``TA[l, i] = || A[l, i](y_0 | x_T) ||^2``: a head whose
   output surges without the image is sensitive the wrong way round.
3. **Reinforcement** (Eq. 7): the heads with ``VHD[l, i] > median(VHD[l, *])`` (the upper half) have their
   output multiplied by ``alpha``.

Layer by layer (Sec. 3.2): the heads of a layer are chosen while the earlier layers are already reinforced,
in one forward pass. Each sample gets its own heads, chosen at the first step and kept for every later
step (Algorithm 1: "if t = 0 then compute VHD, select H_l"; "reinforce the heads in H_l" at every step), so
that the cached keys and values of all tokens come from the same heads.

Published defaults (Sec. 4.4, Appendices C-D): ``alpha=2``; the second layer and the last 14 of LLaVA's
32 layers (LLaVA-1.5 and LLaVA-NeXT); the last 18 (and not the second) for InstructBLIP. Here the layers
with attention count (a hybrid model's convolution layers do not): ``second_layer=True`` takes the second
of them (0-based 1, the paper's "layer1"), and the last ``floor(last_fraction * n + 0.5)`` of the ``n``
attention layers, ``last_fraction=14/32``: 14 of 32, 13 of the 30-layer SmolLM2 organism, 1 of a 2-layer
tiny model. InstructBLIP as published: ``second_layer=False, last_fraction=18/32``.

Cost: per prompt, one more forward pass of the prompt without its image (run as far as the last reinforced
layer); per generated token, one multiplication of the chosen heads per reinforced layer. The attention
keeps its implementation (SDPA stays SDPA).

Sources. The released code (``jinghan1he/VHR``: a replaced ``LlamaSdpaAttention`` under transformers 4.45)
could not be obtained here; everything above is from the paper's text (arXiv 2412.13949, Eqs. 4-7,
Algorithm 1, Sec. 3.2, 4.4, 4.7, Appendices C-D). Not stated in the paper, chosen here:

- **What the stream without the image sees.** The paper computes a layer's VHD "as the previous layers are
  already reinforced" and selects and reinforces "within a single forward pass". We reinforce the earlier
  layers' chosen heads in both streams, so that VHD at layer ``l`` compares the same (reinforced) model with
  and without the image; reinforcing only the image stream would make the earlier layers' scaling itself
  show up as divergence. Both streams run in lock-step: the text-only stream runs in a helper thread that
  pauses at each reinforced layer until the main stream has chosen the layer's heads (exactly one of the two
  runs at any time), its calls hidden from other eahlib hooks (:func:`eahlib.attention.private_stream`).
- **The prompt without the image** is each prompt with its image tokens removed (by id) and the rest of the
  template kept, left-padded, its positions counted over its own tokens (as a text-only prompt runs), as
  PAI's text-only stream (:func:`eahlib.methods.pai.text_only_prompt`); token-type inputs (PaliGemma's
  prefix, Gemma 3's image types) follow their tokens. Families whose forward needs the image
  (InstructBLIP) run the prompt through their language model alone.
- **The standard deviation** of Eq. 6 is the sample one (``torch.std``'s default, the library the released
  code is written in). The median of Eq. 7 needs no tie rule: ``VHD > median`` selects the same heads for
  the lower, upper or mean middle value.
- **Which positions are reinforced.** Every position of every forward pass: at the prefill the whole prompt,
  so that the cached keys and values of the prompt come from the reinforced model, as the paper's KV-cache
  argument for fixing the heads at the first step requires.
- **A batch.** Each sample is its own: its own heads, its own text-only prompt; padding never reaches a
  real token. A sample without image tokens is left unchanged (no heads to tell apart).

Composes with every decoder: heads are kept per KV cache, so beam search (rows reordered within a sample,
whose beams share one prompt and so one set of heads), sampling, OPERA's rollbacks and the second streams
of contrastive decoders (each stream with an image gets its own text-only counterpart and heads; PAI's
text-only stream, without image, is left unchanged) all see the heads of their own prefill. A forward pass
without a KV cache is a prefill of its own and chooses its heads at its last token.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationMixin

from eahlib.attention import PromptTracker, private_stream, track_prompts
from eahlib.methods.pai import text_only_prompt
from eahlib.methods.registry import Component, register
from eahlib.models import (
    attention_layers,
    decoder,
    image_token_mask,
    language_model,
    output_projection,
    uniform_heads,
)

PUBLISHED_ALPHA = 2.0
"""The scale factor of the paper's experiments (Sec. 4.4)."""
LAST_FRACTION = 14 / 32
"""The last 14 of LLaVA's 32 layers (Sec. 4.4; InstructBLIP: 18 / 32)."""
TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")
"""Per-token inputs that follow their tokens into the prompt without the image."""


def reinforced_layers(model: nn.Module, last_fraction: float = LAST_FRACTION, second_layer: bool = True) -> list[int]:
    """VHR's layers: the second attention layer (if ``second_layer``) and the last ``floor(last_fraction * n +
    0.5)`` of the ``n`` attention layers, as decoder-layer indices in order.

    Example: 32 layers give ``[1, 18, ..., 31]`` (published for LLaVA); 30 give ``[1, 17, ..., 29]``.
    """
    if not 0.0 <= last_fraction <= 1.0:
        raise ValueError(f"vhr's last_fraction must be in [0, 1], got {last_fraction!r}.")
    with_attention = attention_layers(model)
    last = math.floor(last_fraction * len(with_attention) + 0.5)
    chosen = set(with_attention[len(with_attention) - last:] if last else [])
    if second_layer and len(with_attention) > 1:
        chosen.add(with_attention[1])
    return sorted(chosen)


def head_divergence(with_image: Tensor, without_image: Tensor) -> Tensor:
    """VHD (Eq. 4): the Euclidean distance between each head's outputs with and without the image.

    Args:
        with_image: ``[..., H, d]`` head outputs of the prompt with its image.
        without_image: ``[..., H, d]`` the same heads, same step, on the prompt without its image.

    Returns:
        ``[..., H]`` float32.
    """
    return (with_image.float() - without_image.float()).norm(dim=-1)


def outlier_heads(vhd: Tensor, text_outputs: Tensor) -> Tensor:
    """The heads whose VHD is an outlier of negative vision sensitivity (Eq. 6): both ``VHD`` and
    ``TA = ||A(x_T)||^2`` above their mean + (sample) standard deviation over the layer's heads.

    Args:
        vhd: ``[B, H]`` VHD of one layer.
        text_outputs: ``[B, H, d]`` the layer's head outputs without the image.

    Returns:
        ``[B, H]`` bool.
    """
    activation = text_outputs.float().pow(2).sum(-1)

    def above(x: Tensor) -> Tensor:
        return x > x.mean(-1, keepdim=True) + x.std(-1, keepdim=True)

    return above(vhd) & above(activation)


def reinforced_heads(vhd: Tensor, text_outputs: Tensor) -> Tensor:
    """The heads VHR reinforces in one layer (Eqs. 6-7): outliers' VHD set to 0, then the heads above the median.

    Args:
        vhd: ``[B, H]`` VHD of one layer.
        text_outputs: ``[B, H, d]`` the layer's head outputs without the image.

    Returns:
        ``[B, H]`` bool.
    """
    kept = vhd.masked_fill(outlier_heads(vhd, text_outputs), 0.0)
    return kept > kept.median(-1, keepdim=True).values


def scale_heads(heads: Tensor, chosen: Tensor, alpha: float) -> Tensor:
    """Multiply the chosen heads' outputs by ``alpha`` (Eq. 7).

    Args:
        heads: ``[B, q, H, d]`` head outputs.
        chosen: ``[B, H]`` bool, the heads to reinforce per sample.
        alpha: the scale factor.

    Returns:
        ``[B, q, H, d]``.
    """
    return torch.where(chosen[:, None, :, None].to(heads.device), heads * alpha, heads)


class _Stopped(Exception):
    """Ends the text-only stream's forward once the last reinforced layer is decided."""


class _LockstepStream:
    """A forward pass in a helper thread that pauses at each reinforced layer until the caller has decided.

    Exactly one of the two threads runs at any time: the caller resumes the helper and waits until it pauses
    (at the next reinforced layer) or ends; the helper waits until it is resumed. Its calls are hidden from
    eahlib's other hooks and trackers, and run without gradients.
    """

    def __init__(self, run: Callable[[], object]) -> None:
        self._run = run
        self._resume = threading.Semaphore(0)
        self._paused = threading.Semaphore(0)
        self._stop = False
        self._done = False
        self.error: BaseException | None = None
        self.reached: tuple[int, Tensor] | None = None
        self.decision: Tensor | None = None
        self._thread = threading.Thread(target=self._body, name="eahlib-vhr-text-stream", daemon=True)
        self._thread.start()

    def owns_current_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def _body(self) -> None:
        self._resume.acquire()
        try:
            if not self._stop:
                with private_stream(), torch.no_grad():
                    self._run()
        except _Stopped:
            pass
        except BaseException as error:  # handed to the caller, which raises it
            self.error = error
        finally:
            self._done = True
            self._paused.release()

    def pause(self, layer: int, outputs: Tensor) -> Tensor:
        """(Helper side.) Hand over ``outputs`` of ``layer`` and wait for the caller's decision on it."""
        self.reached = (layer, outputs)
        self._paused.release()
        self._resume.acquire()
        if self._stop:
            raise _Stopped
        assert self.decision is not None
        return self.decision

    def outputs_at(self, layer: int) -> Tensor:
        """(Caller side.) Let the helper run to ``layer`` (applying the last decision) and take its outputs there."""
        self._resume.release()
        self._paused.acquire()
        if self.error is not None:
            raise RuntimeError(f"VHR's stream without the image failed before layer {layer}: {self.error!r}") from self.error
        if self._done or self.reached is None or self.reached[0] != layer:
            raise RuntimeError(f"VHR's stream without the image did not reach layer {layer} after the main stream did.")
        return self.reached[1]

    def close(self) -> None:
        """Stop the helper wherever it waits and wait for its thread to end."""
        if self._thread.is_alive():
            self._stop = True
            self._resume.release()
            self._thread.join()


def _text_stream_model(model: nn.Module) -> nn.Module:
    """The module that runs a prompt without its image: the model itself, or its language model when the
    model's forward requires pixels (InstructBLIP)."""
    pixels = inspect.signature(model.forward).parameters.get("pixel_values")
    if pixels is None or pixels.default is not inspect.Parameter.empty:
        return model
    return language_model(model)


def prompt_without_image(model: nn.Module, prompt: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each prompt without its image tokens, left-padded again, with its token types (no image inputs).

    Args:
        model: the vision-language model.
        prompt: ``input_ids`` and ``attention_mask`` ``[B, N]`` (left-padded), and any of
            :data:`TOKEN_TYPE_KEYS`.

    Returns:
        ``input_ids``, ``attention_mask`` (and the token types given) ``[B, N']``.
    """
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    keep = mask.bool() & ~image_token_mask(model, ids)
    if not bool(keep.any(-1).all()):
        raise ValueError("VHR needs text besides the image in every prompt: a prompt of image tokens alone has no "
                         "counterpart without the image.")
    pad = model.generation_config.pad_token_id if getattr(model, "generation_config", None) is not None else None
    text = text_only_prompt(model, {"input_ids": ids, "attention_mask": mask}, 0 if pad is None else int(pad))
    placed = text["attention_mask"].bool()
    for key in TOKEN_TYPE_KEYS:
        if isinstance(prompt.get(key), Tensor) and prompt[key].shape == ids.shape:
            types = torch.zeros_like(text["input_ids"], dtype=prompt[key].dtype)
            types[placed] = prompt[key][keep]
            text[key] = types
    return text


def run_without_image(model: nn.Module, text: Mapping[str, Tensor]) -> Any:
    """One forward pass (no cache) of prompts without image, as ``generate`` runs a text prompt's prefill:
    positions counted over each row's real tokens, only the last logits.

    Args:
        model: the vision-language model.
        text: :func:`prompt_without_image`'s output.
    """
    runner = _text_stream_model(model)
    parameters = inspect.signature(runner.forward).parameters
    kwargs: dict[str, Any] = {k: v for k, v in text.items() if k in parameters}
    if "position_ids" in parameters:  # the generic rule; family overrides also compute image positions
        kwargs["position_ids"] = GenerationMixin._prepare_position_ids_for_generation(
            runner, text["input_ids"], {"attention_mask": text["attention_mask"]})
    if getattr(runner, "_supports_logits_to_keep", lambda: False)():
        kwargs["logits_to_keep"] = 1
    return runner(**kwargs, use_cache=False)


@dataclass(eq=False)
class _Prefill:
    """One prefill of the main stream: its length, who has an image, where each row's last token is, the
    stream without the image, and the heads and VHD chosen so far."""

    length: int
    has_image: Tensor
    last: Tensor
    stream: _LockstepStream | None
    heads: dict[int, Tensor] = field(default_factory=dict)
    vhd: dict[int, Tensor] = field(default_factory=dict)


@dataclass(eq=False)
class VisionHeadReinforcement:
    """VHR's hooks and their record.

    Attributes:
        alpha: the scale factor.
        layers: the reinforced decoder layers, in order.
        vhd: one ``[B, len(layers), H]`` float32 tensor per prefill: each head's VHD (Eq. 4, before the outlier
            rule), measured with the earlier layers reinforced; NaN for samples without image tokens.
        reinforced: the matching ``[B, len(layers), H]`` bool: the heads reinforced at every step.
    """

    model: nn.Module
    alpha: float
    layers: list[int]
    tracker: PromptTracker
    vhd: list[Tensor] = field(default_factory=list)
    reinforced: list[Tensor] = field(default_factory=list)
    _n_heads: int = 0
    _head_dim: int = 0
    _heads: dict[int, Tensor] | None = None
    _prefill: _Prefill | None = None
    _by_cache: weakref.WeakKeyDictionary[Any, dict[int, Tensor]] = field(default_factory=weakref.WeakKeyDictionary)
    _outer: dict[str, Any] | None = None
    _warned: bool = False

    def __post_init__(self) -> None:
        self._n_heads, self._head_dim = uniform_heads(self.model, self.layers, "VHR")

    def settings(self) -> dict[str, object]:
        """The parameters in effect, for result records."""
        return {"alpha": self.alpha, "layers": list(self.layers)}

    def _in_text_stream(self) -> bool:
        stream = self._prefill.stream if self._prefill is not None else None
        return stream is not None and stream.owns_current_thread()

    # ---- model and decoder calls (the main stream's; the stream without the image is recognised by its thread)

    def saw_model_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self._in_text_stream():
            self._outer = kwargs

    def left_model_call(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self._in_text_stream():
            self._outer = None

    def saw_decoder_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._in_text_stream():
            return
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            heads = self._by_cache.get(cache)
            if heads is None:
                raise RuntimeError("VHR saw a decoding step of a KV cache whose prefill it did not see: enter the "
                                   "VHR context before the prompt's first forward pass.")
            self._heads = heads
            return
        self._prefill = self._start_prefill(kwargs)
        self._heads = self._prefill.heads

    def _real_tokens(self, ids: Tensor, kwargs: Mapping[str, Any]) -> Tensor:
        for source in (self._outer or {}, kwargs):
            mask = source.get("attention_mask")
            if isinstance(mask, Tensor) and mask.shape == ids.shape:
                return mask.bool()
        return torch.ones_like(ids, dtype=torch.bool)

    def _start_prefill(self, kwargs: Mapping[str, Any]) -> _Prefill:
        ids = self.tracker.input_ids
        if ids is None:
            raise ValueError("VHR needs the prompt's input_ids to find its image tokens, but this forward call came "
                             "with inputs_embeds only. Call the model (or generate) with input_ids.")
        real = self._real_tokens(ids, kwargs)
        has_image = (image_token_mask(self.model, ids) & real).any(-1)
        last = ids.shape[1] - 1 - real.int().flip(-1).argmax(-1)
        stream = None
        if not bool(has_image.any()) and not self._warned:
            self._warned = True
            warnings.warn("A batch without image tokens reached VHR: it leaves such batches unchanged (warned once "
                          "per context).", stacklevel=2)
        if bool(has_image.any()):
            outer = self._outer or {}
            prompt = {"input_ids": ids, "attention_mask": real.long(),
                      **{k: outer[k] for k in TOKEN_TYPE_KEYS if isinstance(outer.get(k), Tensor)}}
            text = prompt_without_image(self.model, prompt)
            stream = _LockstepStream(lambda: run_without_image(self.model, text))
        return _Prefill(ids.shape[1], has_image, last, stream)

    def left_decoder_call(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._in_text_stream():
            return
        heads, self._heads = self._heads, None
        prefill, self._prefill = self._prefill, None
        if prefill is None:
            return
        if prefill.stream is not None:
            prefill.stream.close()
        if output is None:  # the forward raised
            return
        fields = getattr(output, "__dataclass_fields__", {})
        cache = getattr(output, "cache" if "cache" in fields else "past_key_values", None)  # renamed in 5.x
        if cache is not None:
            self._by_cache[cache] = heads
        if len(prefill.heads) == len(self.layers):
            self.reinforced.append(torch.stack([prefill.heads[layer].cpu() for layer in self.layers], 1))
            self.vhd.append(torch.stack([prefill.vhd[layer].cpu() for layer in self.layers], 1))

    # ---- the heads of one layer

    def hook_for(self, layer: int) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
        """The forward pre-hook of ``layer``'s output projection: choose the heads (at a prefill), scale them."""

        def reinforce(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            hidden = args[0]
            batch, length, _ = hidden.shape
            split = hidden.view(batch, length, self._n_heads, self._head_dim)
            if self._in_text_stream():
                chosen = self._prefill.stream.pause(layer, split[:, -1].detach())
            else:
                chosen = self._heads_of(layer, split)
            return (scale_heads(split, chosen, self.alpha).view(batch, length, -1), *args[1:])

        return reinforce

    def _heads_of(self, layer: int, split: Tensor) -> Tensor:
        if self._heads is None:
            raise RuntimeError("VHR's layer hook ran outside a call of the language model's decoder.")
        if layer not in self._heads:
            if self._prefill is None:
                raise RuntimeError(f"VHR has no heads of layer {layer} for this KV cache.")
            self._choose(layer, split, self._prefill)
        heads = self._heads[layer]
        if heads.shape[0] != split.shape[0]:
            raise RuntimeError(f"VHR chose heads for {heads.shape[0]} rows at the prefill but layer {layer} sees "
                               f"{split.shape[0]}; continue a generation on the batch it started with.")
        return heads

    def _choose(self, layer: int, split: Tensor, prefill: _Prefill) -> None:
        """Eqs. 4, 6, 7 at the prefill's last token, against the stream without the image at the same layer."""
        batch = split.shape[0]
        if prefill.stream is None:  # no sample has an image
            prefill.heads[layer] = torch.zeros(batch, self._n_heads, dtype=torch.bool, device=split.device)
            prefill.vhd[layer] = torch.full((batch, self._n_heads), float("nan"), device=split.device)
            return
        if split.shape[1] != prefill.length:
            raise RuntimeError(f"VHR needs the prompt processed in one prefill pass: the prompt has {prefill.length} "
                               f"tokens but layer {layer} saw {split.shape[1]} (no chunked prefill).")
        rows = torch.arange(batch, device=split.device)
        with_image = split[rows, prefill.last.to(split.device)].detach()
        without_image = prefill.stream.outputs_at(layer).to(split.device)
        vhd = head_divergence(with_image, without_image)
        has_image = prefill.has_image.to(split.device)[:, None]
        chosen = reinforced_heads(vhd, without_image) & has_image
        prefill.stream.decision = chosen
        if layer == self.layers[-1]:
            prefill.stream.close()
        prefill.heads[layer] = chosen
        prefill.vhd[layer] = vhd.masked_fill(~has_image, float("nan"))

    def merge_prefills(self, start: int) -> None:
        """Make the records of the prefills from ``start`` on one entry (a decoder that runs each sample of a
        batch on its own, as OPERA does, makes one prefill per sample)."""
        if len(self.reinforced) - start > 1:
            self.reinforced[start:] = [torch.cat(self.reinforced[start:])]
            self.vhd[start:] = [torch.cat(self.vhd[start:])]


_ACTIVE_VHR: weakref.WeakKeyDictionary[nn.Module, VisionHeadReinforcement] = weakref.WeakKeyDictionary()


def active_reinforcement(model: nn.Module) -> VisionHeadReinforcement | None:
    """The VHR context active on ``model``, if any."""
    return _ACTIVE_VHR.get(model)


@contextlib.contextmanager
def reinforce_vision_heads(
    model: nn.Module,
    alpha: float = PUBLISHED_ALPHA,
    layers: Sequence[int] | None = None,
    last_fraction: float = LAST_FRACTION,
    second_layer: bool = True,
) -> Iterator[VisionHeadReinforcement]:
    """Reinforce each sample's vision-aware heads (VHR) while the block runs.

    Example:
        >>> with reinforce_vision_heads(model) as vhr:  # doctest: +SKIP
        ...     out = model.generate(**inputs, max_new_tokens=64)
        >>> vhr.reinforced[0].shape  # [batch, reinforced layers, heads]  # doctest: +SKIP

    Args:
        model: a supported vision-language model.
        alpha: the scale factor of the chosen heads (published 2; 1 leaves the model unchanged).
        layers: the decoder layers to reinforce, in any order (default: :func:`reinforced_layers`).
        last_fraction: with ``layers=None``, the share of the attention layers, counted from the last, to
            reinforce (published 14/32 for LLaVA, 18/32 for InstructBLIP).
        second_layer: with ``layers=None``, also reinforce the second attention layer (published for LLaVA).

    Yields:
        The :class:`VisionHeadReinforcement` record (``vhd``, ``reinforced``).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"vhr's alpha must be a finite number >= 0, got {alpha!r}.")
    if not isinstance(second_layer, bool):
        raise ValueError(f"vhr's second_layer must be true or false, got {second_layer!r}.")
    chosen_layers = reinforced_layers(model, last_fraction, second_layer) if layers is None else sorted(set(layers))
    if not chosen_layers:
        raise ValueError(f"vhr has no layer to reinforce (layers={layers!r}, last_fraction={last_fraction!r}, "
                         f"second_layer={second_layer!r}).")
    projections = {layer: output_projection(model, layer) for layer in chosen_layers}  # refuses bad layers
    if model in _ACTIVE_VHR:
        raise RuntimeError("reinforce_vision_heads is already active on this model; exit that context first.")
    handles = []
    with track_prompts(model) as tracker:
        state = VisionHeadReinforcement(model, float(alpha), chosen_layers, tracker)
        _ACTIVE_VHR[model] = state
        try:
            handles.append(model.register_forward_pre_hook(state.saw_model_call, with_kwargs=True))
            handles.append(model.register_forward_hook(state.left_model_call, always_call=True))
            stack = decoder(model)
            handles.append(stack.register_forward_pre_hook(state.saw_decoder_call, with_kwargs=True))
            handles.append(stack.register_forward_hook(state.left_decoder_call, always_call=True))
            for layer, projection in projections.items():
                handles.append(projection.register_forward_pre_hook(state.hook_for(layer)))
            yield state
        finally:
            for handle in handles:
                handle.remove()
            if state._prefill is not None and state._prefill.stream is not None:
                state._prefill.stream.close()
            state._prefill = state._heads = None
            _ACTIVE_VHR.pop(model, None)


class _VHRRecorder:
    def __init__(self, state: VisionHeadReinforcement) -> None:
        self.state = state

    def extras(self, batch: int) -> list[dict[str, Any]]:
        if not self.state.reinforced:
            return [{"vhr_heads": {}} for _ in range(batch)]
        reinforced = self.state.reinforced[0]
        step = reinforced.shape[0] // batch  # beam search expands each sample into num_beams rows
        return [{"vhr_heads": {str(layer): row.nonzero().flatten().tolist()
                               for layer, row in zip(self.state.layers, reinforced[i * step])}}
                for i in range(batch)]


@contextlib.contextmanager
def vhr(model: nn.Module, **params: Any) -> Iterator[_VHRRecorder]:
    """VHR (arXiv:2412.13949) around any decoder; see :func:`reinforce_vision_heads`."""
    with reinforce_vision_heads(model, **params) as state:
        yield _VHRRecorder(state)


register(Component(
    "vhr", "intervention", vhr,
    {"alpha": PUBLISHED_ALPHA, "layers": None, "last_fraction": LAST_FRACTION, "second_layer": True},
    "He et al., Cracking the Code of Hallucination in LVLMs with Vision-aware Head Divergence, ACL 2025, "
    "arXiv:2412.13949",
    description="VHR: per sample, at the first step, each head's output with and without the image (VHD); in the "
                "second and the last 14/32 of the attention layers, layer by layer, the heads above the layer's "
                "median VHD (outliers dropped) are scaled by alpha (2) at every step",
))
