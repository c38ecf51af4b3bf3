"""Heads-guided attention intervention (Jiang et al., "Devils in Middle Layers of Large Vision-Language Models:
Interpreting, Detecting and Mitigating Object Hallucinations via Attention Lens", CVPR 2025, arXiv:2411.16724).

In the middle layers, where the model enriches the text with visual information, the newest token's query row
gains, on every image key, ``alpha`` times the mean over heads of the magnitude of that key's logit:
``l[h, -1, j] += alpha * mean_h' |l[h', -1, j]|``, the same term for every head, before the softmax. Heads that
already look at an image token pull the others along. The model runs once.

What the released code (``ZhangqiJiang07/middle_layers_indicating_hallucinations`` @ a0622a9) computes, and this
module follows:

- ``modify_attention.py:67-88``: after the mask is added (and clamped to the dtype's minimum), before the
  softmax, only the last query row ``-1`` of every head is edited, on the image columns: the row's logits plus
  ``alpha * |l[:, -1, j]|.mean(dim=1)`` (mean over heads); at the prefill that is the prompt's last token, at each
  decoding step the new token;
- ``chair_eval.py:44-47, 73-74`` and ``README.md``: ``--guide-range "5,18"`` becomes ``range(5, 19)``, layers 5..18
  of LLaVA-1.5's 32 (the log file ``..._layers_5-19_...`` shows the exclusive end), ``alpha=0.5``,
  ``aggregation="mean"``; any other aggregation edits nothing (l. 83), so only ``"mean"`` is accepted here;
- the image span: ``<bos>`` + the text before the image gives its start, 576 tokens (``model_manager.py:69-70``).

What we do differently:

- image columns are the image tokens found by id in each prompt, and only those the query may attend (a
  sliding-window layer may hide some); padding never enters the mean; where a block-sparse layer's heads each keep
  their own keys, the mean runs over the heads that attend the key and the others keep it masked (the released mean
  would take a masked logit's magnitude, the dtype's minimum: an overflow to ``inf``);
- a call that processes several new tokens on top of the cache (OPERA's rollback) edits each new token's row,
  as one-token steps would; the prefill edits the prompt's last row only;
- grouped-query attention: the released forward assumes as many key/value heads as query heads; here the mean
  runs over the query heads (the logits of every query head, key/value heads repeated as the model does);
- layers as fractions of depth (``depth=(5/32, 19/32)``, see :func:`eahlib.models.layers_at_depth`: exactly
  layers 5..18 on 32 layers; 5..17 on the 30-layer SmolLM2 organism), or given by index (``layers=``);
- logits in float32 (released: the model's float16);
- the released environment's SDPA prefill is not reproduced. Under its pins (transformers 4.37.2) LLaVA runs SDPA
  attention, and for a prompt without padding the SDPA path passes no mask at all (``is_causal`` is left to the
  kernel; ``_prepare_4d_causal_attention_mask_for_sdpa``); the replaced ``forward`` (eager code) then receives ``attention_mask=None`` and runs the guided layers'
  prefill **without a causal mask**: every prompt token sees the later ones, the cached keys and values change,
  and ``alpha=0`` already differs from the stock model. The paper describes causal attention. We do not offer the
  shipped behaviour as an option: it is an artefact of a transformers shortcut, not the method; it applies only
  when no token of the batch is padding, so a prompt's output would depend on its batch mates (the released
  evaluation runs batch size 1); and it would make the neutral setting differ from the model.

``alpha = 0`` leaves the model exactly as it is (no explicit attention is computed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eahlib.attention import AttentionCall, LayerHook, PromptKeys, layer_hooks, track_prompt_keys
from eahlib.methods.registry import Component, NoRecord, register
from eahlib.models import choose_layers

DEPTH = (5 / 32, 19 / 32)
"""Released layers 5..18 of 32 (``--guide-range 5,18``, end inclusive) as a fraction of the depth."""
AGGREGATIONS = ("mean",)


def guide_by_heads(scores: Tensor, image: Tensor, attended: Tensor, alpha: float) -> Tensor:
    """Heads-guided edit of every given query row: image-key logits ``+ alpha * mean over heads of |logit|``.

    Args:
        scores: ``[B, H, q, k]`` pre-softmax logits (mask added) of the rows to edit.
        image: ``[B, k]`` bool, the image-token keys.
        attended: ``[B, q, k]`` bool, the keys each query may attend, or ``[B, H, q, k]`` where each head has its own
            (a block-sparse layer's): the mean runs over the heads that attend the key, the others keep it masked.
        alpha: guidance strength.

    Returns:
        ``[B, H, q, k]``: on attended image keys ``l + alpha * mean_h |l|``, elsewhere ``l``.
    """
    edit = (image[:, None, None, :] & (attended if attended.dim() == 4 else attended[:, None])).expand_as(scores)
    heads = edit.sum(1, keepdim=True).clamp(min=1)  # a masked logit (the dtype's minimum) never enters the mean
    magnitude = scores.abs().masked_fill(~edit, 0.0).sum(1, keepdim=True) / heads
    return torch.where(edit, scores + alpha * magnitude, scores)


@dataclass(eq=False)
class HeadsGuidedAttention(LayerHook):
    """The layer hook of heads-guided attention (one instance shared by the guided layers).

    Attributes:
        alpha: guidance strength.
        prompts: the prompt's keys per generation stream.
    """

    alpha: float
    prompts: PromptKeys
    modifies: bool = True

    def wants_probabilities(self, is_prefill: bool) -> bool:
        return self.alpha != 0

    def adjust_scores(self, call: AttentionCall) -> Tensor:
        image, _ = self.prompts.keys(call)
        first = call.scores.shape[2] - 1 if call.is_prefill else 0  # the prompt's last row, or every new token's
        guided = guide_by_heads(call.scores[:, :, first:], image, call.attended_by_head[:, :, first:], self.alpha)
        return torch.cat([call.scores[:, :, :first], guided], dim=2)


@contextlib.contextmanager
def guide_attention_by_heads(
    model: nn.Module,
    alpha: float = 0.5,
    aggregation: str = "mean",
    depth: Sequence[float] = DEPTH,
    layers: Sequence[int] | None = None,
) -> Iterator[HeadsGuidedAttention]:
    """Heads-guided attention: the newest token's image logits gain ``alpha`` times their mean magnitude over heads.

    Example:
        >>> with guide_attention_by_heads(model) as guided:  # doctest: +SKIP
        ...     out = model.generate(**inputs, max_new_tokens=64)

    Args:
        model: a supported vision-language model.
        alpha: guidance strength (released 0.5; 0 = unchanged).
        aggregation: how the heads are aggregated: ``"mean"`` (the only one the released code implements).
        depth: ``(start, end)`` fractions of the language model's depth (released layers 5..18 of 32:
            ``(5/32, 19/32)``); the rule is :func:`eahlib.models.layers_at_depth`'s.
        layers: decoder-layer indices instead of ``depth``.

    Yields:
        The :class:`HeadsGuidedAttention` hook.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"heads_guided's alpha must be a number >= 0 (0 = unchanged), got {alpha!r}.")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"heads_guided's aggregation must be one of {AGGREGATIONS} (the released code edits nothing "
                         f"under any other), got {aggregation!r}.")
    guided = choose_layers(model, depth, layers)
    with track_prompt_keys(model, guided) as prompts:
        hook = HeadsGuidedAttention(float(alpha), prompts)
        with layer_hooks(model, {layer: hook for layer in guided}):
            yield hook


@contextlib.contextmanager
def heads_guided(model: nn.Module, **params: Any) -> Iterator[NoRecord]:
    """Heads-guided attention (Devils in Middle Layers, CVPR 2025) around any decoder; see
    :func:`guide_attention_by_heads`."""
    with guide_attention_by_heads(model, **params):
        yield NoRecord()


register(Component(
    "heads_guided", "intervention", heads_guided,
    {"alpha": 0.5, "aggregation": "mean", "depth": list(DEPTH), "layers": None},
    "Jiang et al., Devils in Middle Layers of Large Vision-Language Models: Interpreting, Detecting and Mitigating "
    "Object Hallucinations via Attention Lens, CVPR 2025",
    description="heads-guided attention: in the middle layers (depth 5/32-19/32: released layers 5-18 of 32), the "
                "newest token's image logits gain alpha times their mean magnitude over heads, before the softmax",
))
