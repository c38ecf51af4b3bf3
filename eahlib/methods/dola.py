"""DoLa (Chuang et al., "DoLa: Decoding by Contrasting Layers Improves Factuality in Large Language
Models", ICLR 2024): contrast the final layer with a dynamically chosen premature layer.

At every step, for each candidate premature layer ``j`` the early-exit logits are
``lm_head(h_j)`` at the last position, ``h_j`` the input of decoder layer ``j`` (``j = 0``: the
embeddings). The premature layer is the candidate whose distribution is farthest from the final
one (Jensen-Shannon divergence, as the published code computes it: the mean over the vocabulary
of ``KL(m || p_final) + KL(m || p_j)`` over two, ``m`` their mixture). The next-token scores are
``log p_final - log p_j`` over the tokens with ``p_final >= relative_top * max p_final`` (the
others: ``-inf``), then a repetition penalty.

Semantics of transformers 4.x ``generate(dola_layers=...)`` (now the hub recipe
``transformers-community/dola``), which this module mirrors: candidates ``"low"`` =
``range(start, N // 2, 2)`` and ``"high"`` = ``range(N // 2, N, 2)`` for ``N <= 40`` layers
(``range(start, 20, 2)`` / ``range(N - 20, N, 2)`` above), ``start`` 0, or 2 when the LM head is
tied to the embeddings (1 for a 2-layer model; ``[start]`` when ``start == N // 2``); a list
gives the layers explicitly; no final norm before the early-exit head; relative top 0.1
(base logits of filtered tokens set to ``-1e-3``); repetition penalty 1.2 recommended, applied
after the contrast. Deliberate difference: the premature layer is chosen per sample (the
recipe averages the divergence over the batch, so a sample would depend on its batch-mates;
for a batch of one both agree).

Why in-house and not ``generate(custom_generate="transformers-community/dola")``: the recipe
is downloaded from the Hub and executed (``trust_remote_code=True``), which an offline,
reproducible benchmark cannot rely on, and its batch-mean layer choice breaks the harness's
rule that a sample's output does not depend on its batch. One code path keeps the results
comparable across machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor

from eahlib.methods.contrastive import check_fraction, greedy_with, implausible
from eahlib.methods.registry import Component, register
from eahlib.models import decoder_layers, output_embeddings

BASE_FILTER_VALUE = -1e-3
"""The published value given to the premature layer's filtered tokens (they are ``-inf`` anyway)."""


def candidate_layers(n_layers: int, tied_head: bool, layers: str | Sequence[int]) -> list[int]:
    """The candidate premature layers, as transformers 4.x's ``dola_layers``.

    Args:
        n_layers: ``N``, decoder layers of the language model.
        tied_head: the LM head shares the input embeddings (the embedding layer is then skipped).
        layers: ``"low"``, ``"high"`` or explicit layer indices in ``[0, N)`` (0 = embeddings).

    Returns:
        Sorted candidate layers.
    """
    if isinstance(layers, str):
        start = (2 if n_layers > 2 else 1 if n_layers == 2 else 0) if tied_head else 0
        half = n_layers // 2
        if layers == "low":
            if start == half:
                return [start]
            return list(range(start, half, 2) if n_layers <= 40 else range(start, 20, 2))
        if layers == "high":
            return list(range(half, n_layers, 2) if n_layers <= 40 else range(n_layers - 20, n_layers, 2))
        raise ValueError(f"dola's layers must be 'low', 'high' or a list of layer indices, got {layers!r}.")
    chosen = sorted({int(layer) for layer in layers})
    if not chosen or chosen[0] < 0 or chosen[-1] >= n_layers:
        raise ValueError(f"dola's layers must be indices in [0, {n_layers}) (the final layer is {n_layers}), got {layers!r}.")
    return chosen


def jensen_shannon(final_log_probs: Tensor, premature_log_probs: Tensor) -> Tensor:
    """The published code's divergence of each premature distribution from the final one.

    Args:
        final_log_probs: ``[B, V]``.
        premature_log_probs: ``[L, B, V]``.

    Returns:
        ``[L, B]``: ``mean_V(KL(m || p_final) + KL(m || p_j)) / 2``, ``m`` the mixture.
    """
    mixture = 0.5 * (final_log_probs.exp() + premature_log_probs.exp())
    entropy_term = torch.xlogy(mixture, mixture)
    to_final = (entropy_term - mixture * final_log_probs).mean(-1)
    to_premature = (entropy_term - mixture * premature_log_probs).mean(-1)
    return 0.5 * (to_final + to_premature)


def contrast_layers(final_logits: Tensor, premature_logits: Tensor, relative_top: float) -> tuple[Tensor, Tensor]:
    """DoLa's next-token scores from the final and the candidate premature logits.

    Args:
        final_logits: ``[B, V]``.
        premature_logits: ``[L, B, V]`` one row per candidate layer.
        relative_top: plausibility cutoff on the final distribution.

    Returns:
        ``([B, V] scores, [B] index of the chosen candidate per sample)``.
    """
    final = final_logits.float().log_softmax(-1)
    premature = premature_logits.float().log_softmax(-1)
    chosen = jensen_shannon(final, premature).argmax(0)
    base = premature[chosen, torch.arange(final.shape[0], device=final.device)]
    dropped = implausible(final, relative_top)
    scores = final.masked_fill(dropped, -float("inf")) - base.masked_fill(dropped, BASE_FILTER_VALUE)
    return scores, chosen


class LayerContrast(LogitsProcessor):
    """Replaces the final logits by DoLa's layer contrast; reads the candidates' hidden states
    that forward pre-hooks keep from the step's forward pass.

    Attributes:
        chosen_layers: per step, ``[B]`` the premature layer chosen for each sample.
    """

    def __init__(self, lm_head: nn.Module, layers: list[int], relative_top: float) -> None:
        self.lm_head, self.layers, self.relative_top = lm_head, layers, relative_top
        self.hidden: dict[int, Tensor] = {}
        self.chosen_layers: list[Tensor] = []

    def keep_hidden(self, layer: int) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        """A forward pre-hook for decoder layer ``layer`` keeping its input at the last position."""

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            self.hidden[layer] = hidden[:, -1].detach()

        return hook

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        premature = torch.stack([self.lm_head(self.hidden[layer]).to(scores.device) for layer in self.layers])
        contrast, chosen = contrast_layers(scores, premature, self.relative_top)
        self.chosen_layers.append(torch.tensor(self.layers, device=chosen.device)[chosen].cpu())
        return contrast


@contextlib.contextmanager
def layer_contrast(model: nn.Module, layers: str | Sequence[int], relative_top: float) -> Iterator[LayerContrast]:
    """A :class:`LayerContrast` for ``model`` with its hidden-state hooks installed for the block."""
    check_fraction("dola's relative_top", relative_top)
    head, blocks = output_embeddings(model), decoder_layers(model)
    tied = head.weight is model.get_input_embeddings().weight
    processor = LayerContrast(head, candidate_layers(len(blocks), tied, layers), relative_top)
    handles = [blocks[layer].register_forward_pre_hook(processor.keep_hidden(layer), with_kwargs=True)
               for layer in processor.layers]
    try:
        yield processor
    finally:
        for handle in handles:
            handle.remove()


def dola(
    model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int,
    layers: str | list[int], relative_top: float, repetition_penalty: float,
) -> Tensor:
    """Greedy DoLa; returns the new tokens ``[B, T]``.

    Args:
        model: the vision-language model.
        inputs: the processor's left-padded batch.
        max_new_tokens: generation length limit.
        layers: candidate premature layers: ``"low"``, ``"high"`` or indices (0 = embeddings).
        relative_top: plausibility cutoff (published 0.1).
        repetition_penalty: applied after the contrast (1.2 recommended; 1 = off).
    """
    if repetition_penalty <= 0:
        raise ValueError(f"dola's repetition_penalty must be > 0, got {repetition_penalty!r}.")
    with layer_contrast(model, layers, relative_top) as contrast:
        penalty = [RepetitionPenaltyLogitsProcessor(repetition_penalty)] if repetition_penalty != 1 else []
        return greedy_with(model, inputs, max_new_tokens, [contrast, *penalty])


register(Component(
    "dola", "decoder", dola, {"layers": "low", "relative_top": 0.1, "repetition_penalty": 1.2},
    "Chuang et al., DoLa: Decoding by Contrasting Layers Improves Factuality in Large Language Models, ICLR 2024",
    description="DoLa: contrast the final layer with the premature layer of largest Jensen-Shannon divergence, "
                "with a relative-top mask and a repetition penalty",
))
