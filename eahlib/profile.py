"""Layer-by-layer vision-sink profile of one forward pass.

Every decoder layer of the language model computes explicit probabilities during the pass,
reduces them to received scores inside its own attention call, and drops the matrix: peak
memory is about one layer's attention, against all layers' for ``output_attentions=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from eahlib.attention import AttentionCall, LayerHook, PromptTracker, layer_hooks, track_prompts
from eahlib.metrics import Normalizer, SinkCriterion, received_attention, sink_criterion, uniform_received_attention
from eahlib.models import attention_layers


@dataclass
class SinkProfile:
    """Received scores and sink densities of every layer and head for one batch.

    Attributes:
        density: ``[L, B, H]`` int64, vision sinks per layer, sample and head.
        scores: ``[L, B, H, N]`` float32 received scores of every key (0 at padding).
        uniform: ``[L, B, N]`` float32 uniform scores under each layer's own mask (a sliding-window
            layer's differ from a full-attention layer's).
        bounds: ``[L, B, N]`` float32, the score a sink must exceed at each layer and position.
        image_mask: ``[B, N]`` bool, image-token positions.
        attention_mask: ``[B, N]`` bool, real tokens.
        criterion: the sink criterion used.
        normalizer: the received-score normalizer used.
        layers: the decoder layer index of each row of ``density`` and ``scores``.
    """

    density: Tensor
    scores: Tensor
    uniform: Tensor
    bounds: Tensor
    image_mask: Tensor
    attention_mask: Tensor
    criterion: SinkCriterion
    normalizer: Normalizer
    layers: list[int]

    def image_scores(self, layer: int, sample: int = 0) -> Tensor:
        """``[H, n_image]`` received scores over one sample's image tokens, in prompt order (``layer``: row)."""
        return self.scores[layer, sample][:, self.image_mask[sample]]

    @classmethod
    def from_scores(
        cls,
        scores: Tensor,
        uniform: Tensor,
        image_mask: Tensor,
        attention_mask: Tensor,
        criterion: SinkCriterion,
        normalizer: Normalizer,
        layers: list[int],
    ) -> SinkProfile:
        """The profile of received scores ``[L, B, H, N]`` and uniform scores ``[L, B, N]`` under ``criterion``."""
        bounds = criterion.bounds_from_uniform(uniform)
        density = _sink_events(scores, bounds, image_mask).sum(-1)
        return cls(density, scores, uniform, bounds, image_mask, attention_mask, criterion, normalizer, layers)

    def with_criterion(self, criterion: SinkCriterion) -> SinkProfile:
        """The same scores under another criterion (no new forward pass)."""
        return SinkProfile.from_scores(self.scores, self.uniform, self.image_mask, self.attention_mask, criterion,
                                       self.normalizer, self.layers)

    def sinks(self) -> Tensor:
        """``[L, B, H, N]`` bool: which image tokens are vision sinks of each layer and head."""
        return _sink_events(self.scores, self.bounds, self.image_mask)

    def densest_heads(self) -> Tensor:
        """``[L, B]`` the densest head per layer and sample (lowest index on ties)."""
        return self.density.argmax(-1)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (layer, sample, head) with its density and the criterion."""
        _, batch, heads = self.density.shape
        grid = np.stack(np.meshgrid(np.array(self.layers), np.arange(batch), np.arange(heads), indexing="ij"), -1)
        frame = pd.DataFrame(grid.reshape(-1, 3), columns=["layer", "sample", "head"])
        frame["density"] = self.density.reshape(-1).numpy()
        frame["n_image_tokens"] = self.image_mask.sum(-1).numpy()[frame["sample"].to_numpy()]
        frame["criterion"] = self.criterion.kind
        frame["criterion_value"] = self.criterion.value
        frame["normalizer"] = self.normalizer
        return frame


def _sink_events(scores: Tensor, bounds: Tensor, image_mask: Tensor) -> Tensor:
    """``[L, B, H, N]`` bool: scores ``[L, B, H, N]`` above their bounds ``[L, B, N]`` on image tokens ``[B, N]``."""
    return (scores > bounds[:, :, None, :]) & image_mask[None, :, None, :]


@dataclass
class _LayerReduction:
    """What one layer's prefill leaves behind: received and uniform scores, image and real tokens."""

    scores: Tensor
    uniform: Tensor
    image: Tensor
    real: Tensor


@dataclass(eq=False)
class _ProfileHook(LayerHook):
    """Observer that reduces one layer's prefill attention to received and uniform scores."""

    tracker: PromptTracker
    normalizer: Normalizer
    results: list[_LayerReduction] = field(default_factory=list)

    def wants_probabilities(self, is_prefill: bool) -> bool:
        return is_prefill

    def __call__(self, call: AttentionCall) -> Tensor:
        real, visibility = call.real_keys, call.visibility()
        image = self.tracker.image_mask(call.probs.shape[-1]).to(call.probs.device) & real
        scores = received_attention(call.probs, real, self.normalizer, image, visibility)
        uniform = uniform_received_attention(real, self.normalizer, image, visibility)
        self.results.append(_LayerReduction(scores.cpu(), uniform.cpu(), image.cpu(), real.cpu()))
        return call.probs


@torch.no_grad()
def sink_profile(
    model: nn.Module,
    threshold: float | None = None,
    normalizer: Normalizer = "causal",
    relative_threshold: float | None = None,
    layers: Sequence[int] | None = None,
    **inputs: Any,
) -> SinkProfile:
    """Run one forward pass and measure vision sinks in every language-model layer.

    Example:
        >>> profile = sink_profile(model, relative_threshold=4.0, **inputs)  # doctest: +SKIP
        >>> profile.to_frame().groupby("layer").density.mean()  # doctest: +SKIP

    Args:
        model: a supported vision-language model.
        threshold: absolute sink threshold (default 8e-4 when ``relative_threshold`` is unset).
        normalizer: ``"causal"`` or ``"release"``.
        relative_threshold: ``k`` times the uniform-attention score.
        layers: restrict to these layers (default: every layer with attention, which in a hybrid model
            skips the convolution or recurrent layers); ``density`` has one row per layer.
        **inputs: the model inputs (``input_ids``, ``attention_mask``, ``pixel_values``, ...).

    Returns:
        The :class:`SinkProfile`.

    Raises:
        ValueError: the layers have different head counts (profile each group with ``layers=``).
    """
    criterion = sink_criterion(threshold, relative_threshold)
    stray = sorted(name for name, value in inputs.items() if not isinstance(value, Tensor))
    if stray:
        raise TypeError(f"sink_profile got {stray}, which are neither its own arguments nor model input tensors "
                        "(a misspelled argument?); its arguments: threshold, normalizer, relative_threshold, layers.")
    if "input_ids" not in inputs:
        raise ValueError("sink_profile needs input_ids (to find the image tokens); pass the processor's output.")
    layer_ids = attention_layers(model) if layers is None else list(layers)
    with track_prompts(model) as tracker:
        hooks = {layer: _ProfileHook(tracker, normalizer) for layer in layer_ids}
        with layer_hooks(model, hooks):
            model(**inputs, use_cache=False)
    calls = {layer: len(hook.results) for layer, hook in hooks.items() if len(hook.results) != 1}
    if calls:
        raise RuntimeError(
            f"A profile takes one attention map per layer, but these layers ran their attention this many times in "
            f"one forward: {calls} (0: not through transformers' AttentionInterface; more than 1: a looped layer)."
        )
    reductions = [hooks[layer].results[0] for layer in layer_ids]
    heads = {layer: int(r.scores.shape[1]) for layer, r in zip(layer_ids, reductions)}
    if len(set(heads.values())) > 1:
        first = [layer for layer, count in heads.items() if count == heads[layer_ids[0]]]
        raise ValueError(
            f"The layers have different head counts ({heads}; per-layer attention configs, as in sliding-window "
            f"layers of their own size); a profile holds layers of one head count: pass layers=, e.g. {first}."
        )
    scores = torch.stack([r.scores for r in reductions])
    uniform = torch.stack([r.uniform for r in reductions])
    first = reductions[0]
    return SinkProfile.from_scores(scores, uniform, first.image, first.real, criterion, normalizer, layer_ids)


def threshold_sweep(
    model: nn.Module,
    relative_thresholds: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0),
    normalizer: Normalizer = "causal",
    **inputs: Any,
) -> pd.DataFrame:
    """Sink density per layer and head for a range of relative thresholds ``k``, in one pass.

    Use it to pick ``k`` with a reason: the smallest ``k`` at which uniform-looking heads stop
    counting sinks while the densest heads keep theirs.

    Args:
        model: a supported vision-language model.
        relative_thresholds: the values of ``k`` to report.
        normalizer: ``"causal"`` or ``"release"``.
        **inputs: the model inputs.

    Returns:
        Tidy frame with columns ``k, layer, sample, head, density, n_image_tokens``.
    """
    profile = sink_profile(model, normalizer=normalizer, relative_threshold=float(relative_thresholds[0]), **inputs)
    frames = []
    for k in relative_thresholds:
        frame = profile.with_criterion(sink_criterion(relative_threshold=float(k))).to_frame()
        frame.insert(0, "k", float(k))
        frames.append(frame.drop(columns=["criterion", "criterion_value", "normalizer"]))
    return pd.concat(frames, ignore_index=True)
