"""Visual Amplification Fusion (VAF; Yin et al., "ClearSight: Visual Signal Enhancement for Object
Hallucination Mitigation in Multimodal Large Language Models", CVPR 2025, arXiv:2503.13107).

In the middle layers of the language model, where the modalities fuse, the pre-softmax attention logits of
the text queries are rescaled by key: the image tokens' logits are multiplied by ``enhance`` (> 1) and the
system prompt's by ``suppress`` (< 1), in every head, so the text attends more to the image and less to the
system prompt. Nothing is learned; the model runs once.

What the released code (``ustc-hyin/ClearSight`` @ 5466c94) computes, and this module follows:

- ``visaug/inference/AttnAdapter.py:68-78``: the scaled logits ``QK^T / sqrt(d)`` are **multiplied**, before
  the causal mask is added (l. 92) and before the softmax: image columns by ``enh_para``, system-prompt columns
  by ``sup_para``, every head. A negative logit becomes more negative under ``enhance > 1``;
- rows (l. 73-78): at the prefill only the query rows after the image; at each decoding step (one query) the
  new row;
- layers (``infer_pope.py:52-58``): ``i > 8 and i < 15``, layers 9..14 of LLaVA-1.5's 32; factors from
  ``infer_pope.sh``: ``--enh-para 1.15 --sup-para 0.95`` (the CLI defaults are 1 and 1).

What we do differently:

- positions come from each prompt, not constants (released: system ``[0, 35)``, image ``[35, 611)``, LLaVA-1.5's
  template with a 576-token image): image columns are the image tokens found by id, system-prompt columns the
  sample's real tokens before its first image token (``<bos>``, the system prompt and the user tag: what
  ``[0, 35)`` covers in LLaVA-1.5's template), rows "after the image" those after the sample's last image token;
  a sample without image tokens is left unchanged;
- the multiplication is applied to the masked logits eahlib's hooks see, on the keys each query may attend only
  (in each head, where a block-sparse layer's heads keep their own keys); there the mask adds exactly 0, so the
  result equals "scale, then mask" (masked keys stay masked; tested). On a
  model that soft-caps its logits (Gemma 2) the capped logits are scaled: what its softmax sees;
- layers as fractions of depth (``depth=(9/32, 15/32)``, see :func:`eahlib.models.layers_at_depth`: exactly
  layers 9..14 on 32 layers; 8..13 on the 30-layer SmolLM2 organism), or given by index (``layers=``);
- logits in float32 (released: the model's float16);
- a decoding step is recognised per generation stream (its KV cache), so a contrastive decoder's second
  stream and OPERA's rollbacks get the prompt of their own stream (:class:`eahlib.attention.PromptKeys`).

``enhance = suppress = 1`` leaves the model exactly as it is (no explicit attention is computed).
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

DEPTH = (9 / 32, 15 / 32)
"""Released layers 9..14 of 32 (``i > 8 and i < 15``) as a fraction of the depth."""


def amplify_visual_logits(scores: Tensor, rows: Tensor, image: Tensor, system: Tensor, attended: Tensor,
                          enhance: float, suppress: float) -> Tensor:
    """VAF's edit: in the chosen query rows, image-key logits ``* enhance``, system-key logits ``* suppress``.

    Args:
        scores: ``[B, H, q, k]`` pre-softmax logits, mask added (0 on the keys a query may attend).
        rows: ``[B, q]`` bool, the query rows to edit.
        image: ``[B, k]`` bool, the image-token keys.
        system: ``[B, k]`` bool, the system-prompt keys.
        attended: ``[B, q, k]`` bool, the keys each query may attend, or ``[B, H, q, k]`` where each head has its own
            (a block-sparse layer's); the others stay masked.
        enhance: factor of the image keys.
        suppress: factor of the system keys.

    Returns:
        ``[B, H, q, k]``, equal to scaling the unmasked logits and then adding the mask.
    """
    factor = torch.where(image, enhance, torch.where(system, suppress, 1.0)).to(scores.dtype)  # [B, k]
    keys = rows[:, :, None] & (image | system)[:, None, :]  # [B, q, k]
    edit = keys[:, None] & (attended if attended.dim() == 4 else attended[:, None])  # [B, H or 1, q, k]
    return scores * torch.where(edit, factor[:, None, None, :], 1.0)  # times 1 elsewhere: exact


@dataclass(eq=False)
class VisualAmplification(LayerHook):
    """The layer hook of VAF (one instance shared by the edited layers).

    Attributes:
        enhance: factor of the image tokens' logits.
        suppress: factor of the system prompt's logits.
        prompts: the prompt's keys per generation stream.
    """

    enhance: float
    suppress: float
    prompts: PromptKeys
    modifies: bool = True

    def wants_probabilities(self, is_prefill: bool) -> bool:
        return self.enhance != 1 or self.suppress != 1

    def adjust_scores(self, call: AttentionCall) -> Tensor:
        image, system = self.prompts.keys(call)
        batch, _, queries, keys = call.scores.shape
        if call.is_prefill:  # the rows after the sample's last image token
            position = torch.arange(keys, device=image.device)
            last = torch.where(image.any(-1), (position * image).amax(-1), keys)
            rows = position[None, :] > last[:, None]
        else:  # every new token's row
            rows = torch.ones(batch, queries, dtype=torch.bool, device=image.device)
        return amplify_visual_logits(call.scores, rows, image, system, call.attended_by_head, self.enhance,
                                     self.suppress)


def _check_factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"vaf's {name} must be a positive number (1 = unchanged), got {value!r}.")
    return float(value)


@contextlib.contextmanager
def amplify_visual_attention(
    model: nn.Module,
    enhance: float = 1.15,
    suppress: float = 0.95,
    depth: Sequence[float] = DEPTH,
    layers: Sequence[int] | None = None,
) -> Iterator[VisualAmplification]:
    """Visual Amplification Fusion: scale the text queries' logits of image (up) and system-prompt (down) keys.

    Example:
        >>> with amplify_visual_attention(model) as vaf:  # doctest: +SKIP
        ...     out = model.generate(**inputs, max_new_tokens=64)

    Args:
        model: a supported vision-language model.
        enhance: factor of the image tokens' logits (released 1.15).
        suppress: factor of the system prompt's logits (released 0.95).
        depth: ``(start, end)`` fractions of the language model's depth (released layers 9..14 of 32:
            ``(9/32, 15/32)``); the rule is :func:`eahlib.models.layers_at_depth`'s.
        layers: decoder-layer indices instead of ``depth``.

    Yields:
        The :class:`VisualAmplification` hook.
    """
    enhance, suppress = _check_factor("enhance", enhance), _check_factor("suppress", suppress)
    edited = choose_layers(model, depth, layers)
    with track_prompt_keys(model, edited) as prompts:
        hook = VisualAmplification(enhance, suppress, prompts)
        with layer_hooks(model, {layer: hook for layer in edited}):
            yield hook


@contextlib.contextmanager
def vaf(model: nn.Module, **params: Any) -> Iterator[NoRecord]:
    """VAF (ClearSight, CVPR 2025) around any decoder; see :func:`amplify_visual_attention`."""
    with amplify_visual_attention(model, **params):
        yield NoRecord()


register(Component(
    "vaf", "intervention", vaf,
    {"enhance": 1.15, "suppress": 0.95, "depth": list(DEPTH), "layers": None},
    "Yin et al., ClearSight: Visual Signal Enhancement for Object Hallucination Mitigation in Multimodal Large "
    "Language Models, CVPR 2025",
    description="VAF: in the middle layers (depth 9/32-15/32: released layers 9-14 of 32), the pre-softmax logits "
                "of the text after the image (and of each new token) on image tokens times enhance, on the system "
                "prompt (the tokens before the image) times suppress",
))
