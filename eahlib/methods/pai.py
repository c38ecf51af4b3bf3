"""PAI (Liu et al., "Paying More Attention to Image: A Training-Free Method for Alleviating
Hallucination in LVLMs", ECCV 2024): boost image attention, then guide against the text alone.

1. Attention: in language-model layers ``[start_layer, end_layer)``, before the softmax, the
   last query row's logits ``a`` of the image-token keys become ``a + alpha * |a|``.
2. Guidance: with ``s = log p(y | v, x)`` and ``u = log p(y | x)`` (the prompt without its image
   tokens, no pixels, its own KV cache), the next token is chosen from
   ``gamma * (s - u) + u`` over the tokens with ``p(y | v, x) >= beta * max p``.

Defaults: the evaluation commands of LALBJ/PAI's ``README.md`` (LLaVA-1.5: ``--use-attn --alpha
0.2 --use-cfg --gamma 1.1 --start-layer 2 --end-layer 32``, greedy) and the cutoff ``0.1`` fixed in
``CFG.py``: ``alpha=0.2``, layers 2-32 (``end_layer=None``: to the last layer), ``gamma=1.1``,
``beta=0.1``, ``boost_guided_prefill=False``. The eval scripts (``chair_eval.py``, ``pope_eval.py``,
``pope_chat_eval.py``) default ``--gamma`` to 2; eahlib takes the README's 1.1, the value of the
commands it gives for the published evaluation.

What the released code (``attention.py``, ``CFG.py``, ``model_loader.py`` and the eval scripts)
does, and this module follows:

- the boost is applied after the causal mask is added, to row ``-1`` of the logits only: at
  prefill that is the prompt's last position (the other rows are untouched), at every decoding
  step the single new query; image keys are a fixed span (here: the image tokens found in the
  prompt, remembered for the decoding steps);
- under guidance the prefill is not boosted: before each ``generate`` the eval scripts call
  ``llama_modify(..., args.use_cfg, ...)``, so with ``--use-cfg`` every boosted layer starts with
  ``use_cfg`` set, and ``attention.py`` boosts only when ``use_attn and not use_cfg``. The prefill,
  which chooses the first token (POPE's whole answer), runs unboosted; ``CFGLogits`` (``CFG.py``)
  sets the flag for its text-only pass and clears it after, so every later step is boosted.
  ``boost_guided_prefill=True`` boosts the prefill too: the method as the paper describes it (the
  boost at every generated token). Without guidance (released: no ``--use-cfg``; here ``gamma ==
  1``, which skips the text-only pass) the prefill is boosted whatever ``boost_guided_prefill``
  says. The released ``--use-cfg --gamma 1`` is not reproduced: ``CFGLogits`` returns before it
  clears the flag, so no forward pass is ever boosted (here: ``alpha=0``);
- the boost is switched off while the text-only pass runs (``use_cfg``);
- the guidance is on ``log_softmax`` of both streams, the cutoff ``log 0.1 + max s`` on ``s``;
  ``gamma == 1`` returns ``s`` and skips the text-only pass;
- the text-only prompt is ``<bos>`` + the text before the image + the text after it.

Differences: image tokens are read from each prompt (released: a hard-coded span shared by
the batch); the text-only stream is built per sample and left-padded, so samples stay
independent; the prefill's boost under guidance is a choice (``boost_guided_prefill``; released:
never), and the released ``--use-cfg --gamma 1`` run without any boost is not reproduced (above).
The text-only pass needs a model whose forward accepts text without pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor

from eahlib.attention import AttentionCall, LayerHook, PromptKeys, layer_hooks, track_prompt_keys
from eahlib.methods.contrastive import FollowerStream, check_fraction, greedy_with, implausible
from eahlib.methods.registry import Component, register
from eahlib.models import attention_layers, decoder_layers, image_token_mask


def boost_last_row(scores: Tensor, image_keys: Tensor, alpha: float) -> Tensor:
    """PAI's attention boost: the last query row's image-key logits ``a`` become ``a + alpha * |a|``.

    Args:
        scores: ``[B, H, q, k]`` pre-softmax logits (mask added).
        image_keys: ``[B, k]`` bool, the image-token keys of each sample.
        alpha: boost strength.

    Returns:
        ``[B, H, q, k]``; rows other than the last are unchanged.
    """
    last = scores[:, :, -1, :]
    boosted = torch.where(image_keys[:, None, :], last + alpha * last.abs(), last)
    return torch.cat([scores[:, :, :-1, :], boosted.unsqueeze(2)], dim=2)


@dataclass(eq=False)
class ImageAttentionBoost(LayerHook):
    """The layer hook of PAI's attention boost (one instance shared by the boosted layers).

    The prompt's image keys come from :class:`eahlib.attention.PromptKeys`: read from the prompt at each stream's
    prefill and aligned with the keys of every later call (a sliding-window layer's decoding step sees only the
    last tokens). Only the keys the last row attends are boosted: a masked logit stays masked. The prefill's last
    row is boosted only if ``boost_prefill``. ``suspended`` switches the hook off (the text-only pass).

    Attributes:
        alpha: boost strength.
        prompts: the prompt keys of each generation stream.
        boost_prefill: boost the prefill's last row too (else only the decoding steps).
        suspended: leave the attention untouched.
    """

    alpha: float
    prompts: PromptKeys
    boost_prefill: bool = True
    suspended: bool = False
    modifies: bool = True

    def wants_probabilities(self, is_prefill: bool) -> bool:
        return not self.suspended

    def adjust_scores(self, call: AttentionCall) -> Tensor:
        image, _ = self.prompts.keys(call)
        if call.is_prefill and not self.boost_prefill:
            return call.scores
        return boost_last_row(call.scores, image & call.attended[:, -1], self.alpha)

    @contextlib.contextmanager
    def suspend(self) -> Iterator[None]:
        """Leave the attention untouched inside the block."""
        self.suspended = True
        try:
            yield
        finally:
            self.suspended = False


@contextlib.contextmanager
def boost_image_attention(
    model: nn.Module, alpha: float, start_layer: int, end_layer: int | None, boost_prefill: bool = True
) -> Iterator[ImageAttentionBoost]:
    """Install PAI's attention boost on the attention layers in ``[start_layer, end_layer)`` for the block
    (at the prefill too if ``boost_prefill``, else at the decoding steps only)."""
    n_layers = len(decoder_layers(model))
    end = n_layers if end_layer is None else end_layer
    if not 0 <= start_layer < end <= n_layers:
        raise ValueError(
            f"PAI needs 0 <= start_layer < end_layer <= {n_layers} (the language model has {n_layers} layers), "
            f"got start_layer={start_layer}, end_layer={end_layer}."
        )
    layers = [layer for layer in attention_layers(model) if start_layer <= layer < end]
    if not layers:
        raise ValueError(f"PAI's layers [{start_layer}, {end}) hold no attention layer; the language model's attention "
                         f"layers are {attention_layers(model)}.")
    with track_prompt_keys(model, layers) as prompts:
        hook = ImageAttentionBoost(alpha, prompts, boost_prefill)
        with layer_hooks(model, {layer: hook for layer in layers}):
            yield hook


def text_only_prompt(model: nn.Module, inputs: Mapping[str, Tensor], pad_token_id: int) -> dict[str, Tensor]:
    """Each prompt without its image tokens (and without image inputs), left-padded again.

    Args:
        model: the vision-language model (image-token ids).
        inputs: the left-padded batch with ``input_ids`` and ``attention_mask`` ``[B, N]``.
        pad_token_id: the padding id.

    Returns:
        ``{"input_ids", "attention_mask"}``, ``[B, N']``.
    """
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    keep = mask & ~image_token_mask(model, ids)
    lengths = keep.sum(-1)
    width = int(lengths.max())
    position = torch.arange(width, device=ids.device)
    text_mask = position >= width - lengths[:, None]
    text_ids = torch.full((ids.shape[0], width), pad_token_id, dtype=ids.dtype, device=ids.device)
    text_ids[text_mask] = ids[keep]
    return {"input_ids": text_ids, "attention_mask": text_mask.to(inputs["attention_mask"].dtype)}


class TextGuidance(LogitsProcessor):
    """PAI's guidance: ``gamma * (s - u) + u`` on the tokens with ``p >= beta * max p``.

    Args:
        stream: the text-only stream (``u``), run with the attention boost suspended.
        boost: the attention boost to suspend.
        gamma: guidance scale (1 = no guidance).
        beta: plausibility cutoff.
    """

    def __init__(self, stream: FollowerStream, boost: ImageAttentionBoost, gamma: float, beta: float) -> None:
        self.stream, self.boost, self.gamma, self.beta = stream, boost, gamma, beta

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        with self.boost.suspend():
            text = self.stream.next_logits(input_ids).to(scores.device)
        conditional, unconditional = scores.log_softmax(-1), text.log_softmax(-1)
        guided = self.gamma * (conditional - unconditional) + unconditional
        return guided.masked_fill(implausible(conditional, self.beta), -float("inf"))


def pai(
    model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int,
    alpha: float, gamma: float, beta: float, start_layer: int, end_layer: int | None, boost_guided_prefill: bool,
) -> Tensor:
    """Greedy PAI; returns the new tokens ``[B, T]``.

    Args:
        model: the vision-language model.
        inputs: the processor's left-padded batch.
        max_new_tokens: generation length limit.
        alpha: attention boost (published 0.2; 0 = off).
        gamma: guidance scale (published 1.1; 1 = off, no text-only pass).
        beta: plausibility cutoff of the guidance (published 0.1).
        start_layer: first boosted layer, 0-based (published 2).
        end_layer: end of the boosted layers, exclusive (published 32 = all of LLaVA-1.5; None = all).
        boost_guided_prefill: under guidance (``gamma != 1``), boost the prefill (the first token)
            too, as the paper describes; ``False`` as the released scripts run it (``--use-cfg``
            leaves the prefill unboosted). Without guidance the prefill is always boosted.
    """
    check_fraction("pai's beta", beta)
    if not isinstance(boost_guided_prefill, bool):
        raise ValueError(f"pai's boost_guided_prefill must be true or false, got {boost_guided_prefill!r}.")
    boost_prefill = gamma == 1 or boost_guided_prefill
    with boost_image_attention(model, alpha, start_layer, end_layer, boost_prefill) as boost:
        if gamma == 1:
            return greedy_with(model, inputs, max_new_tokens, [])
        pad = model.generation_config.pad_token_id
        text = text_only_prompt(model, inputs, 0 if pad is None else int(pad))
        stream = FollowerStream(model, text, int(inputs["input_ids"].shape[1]))
        return greedy_with(model, inputs, max_new_tokens, [TextGuidance(stream, boost, gamma, beta)])


register(Component(
    "pai", "decoder", pai,
    {"alpha": 0.2, "gamma": 1.1, "beta": 0.1, "start_layer": 2, "end_layer": None, "boost_guided_prefill": False},
    "Liu et al., Paying More Attention to Image: A Training-Free Method for Alleviating Hallucination in LVLMs, "
    "ECCV 2024",
    description="PAI: boost attention to image tokens by alpha in layers [start_layer, end_layer), then guide "
                "the logits away from the text-only prompt (gamma), with a plausibility cutoff (beta); under "
                "guidance the prefill (first token) is boosted only if boost_guided_prefill (the paper; false: "
                "as the released scripts run)",
))
