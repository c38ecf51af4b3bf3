"""Shared plumbing of the contrastive decoders (VCD, PAI's guidance, DoLa).

Each contrastive decoder is greedy ``model.generate`` with one extra ``LogitsProcessor``. The
processor sees the main stream's next-token logits ``[B, V]`` and combines them with a
second distribution: an early-exit head of the same forward (DoLa), or a :class:`FollowerStream`,
a second forward of the same model on other inputs (noised image, text only) with its own
KV cache, fed the tokens the main stream chose. Custom processors run after the processors
``generate`` builds from the generation config (e.g. ``repetition_penalty``) and before the
sampling warpers.

Only greedy choice is supported: a follower's cache holds one row per sample, so beam search
(rows re-ordered every step) is refused with a clear error.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, LogitsProcessorList

from eahlib.attention import active_hooks
from eahlib.interventions.eah import EnhancedHeads


def implausible(scores: Tensor, beta: float) -> Tensor:
    """The adaptive plausibility constraint: tokens with ``p < beta * max p``.

    Args:
        scores: ``[B, V]`` logits or log-probabilities (the test is invariant to a per-row shift).
        beta: relative cutoff in ``(0, 1]``.

    Returns:
        ``[B, V]`` bool, True for the tokens to drop (never the most likely one).
    """
    return scores < scores.amax(-1, keepdim=True) + math.log(beta)


def check_fraction(name: str, value: float) -> None:
    """Raise unless ``0 < value <= 1`` (a relative cutoff such as VCD's beta)."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}.")


def _refuse_unsupported(model: nn.Module) -> None:
    pixels = inspect.signature(model.forward).parameters.get("pixel_values")
    if pixels is not None and pixels.default is inspect.Parameter.empty:
        raise NotImplementedError(
            f"{type(model).__name__}'s forward requires pixel_values at every step (its generate runs the language "
            "model on embeddings), so a second stream cannot follow it; contrastive decoders with a second stream "
            "support models such as LLaVA, LLaVA-NeXT, Qwen2-VL and Qwen2.5-VL."
        )


def _refuse_state_shared_with_main_stream(model: nn.Module) -> None:
    for hooks in active_hooks(model).values():
        if any(isinstance(h, EnhancedHeads) and h.decode == "reuse" for h in hooks):
            raise ValueError(
                "eah with decode='reuse' cannot run with a contrastive decoder: the second stream's prefill would "
                "replace the head chosen for the main stream. Use eah's decode='off' (as released)."
            )


class FollowerStream:
    """A second forward stream of the same model that follows the main stream's tokens.

    It runs its own prompt (e.g. a noised image, or the prompt without image tokens) through
    ``prepare_inputs_for_generation`` like ``generate`` does (positions from its own attention
    mask, family-specific inputs), keeps its own KV cache, and at every later step consumes
    the token the main stream just chose. Its rows follow the main stream's rows one to one,
    so it serves greedy (or sampled) choice, not beam search.

    Args:
        model: the vision-language model.
        prompt: the stream's prompt inputs; ``input_ids`` ``[B, N']`` left-padded, with its
            ``attention_mask`` and any image inputs.
        main_prompt_length: ``N``, the main stream's prompt length (its generated tokens start there).
    """

    def __init__(self, model: nn.Module, prompt: Mapping[str, Tensor], main_prompt_length: int) -> None:
        _refuse_unsupported(model)
        _refuse_state_shared_with_main_stream(model)
        self.model = model
        self.main_prompt_length = main_prompt_length
        self.input_ids = prompt["input_ids"]
        self.kwargs: dict[str, Any] = {k: v for k, v in prompt.items() if k != "input_ids"} | {"use_cache": True}
        if "position_ids" in inspect.signature(model.forward).parameters:
            self.kwargs["position_ids"] = model._prepare_position_ids_for_generation(self.input_ids, self.kwargs)
        if model._supports_logits_to_keep():
            self.kwargs["logits_to_keep"] = 1  # as generate: no [B, N', V] logits at prefill
        self.steps = 0

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def next_logits(self, sequences: Tensor) -> Tensor:
        """Advance by the main stream's newest token and return this stream's next-token logits.

        Args:
            sequences: ``[B, N + t]`` the main stream's prompt and its ``t`` generated tokens.

        Returns:
            ``[B, V]`` float32 logits.
        """
        generated = sequences.shape[1] - self.main_prompt_length
        if sequences.shape[0] != self.batch_size:
            raise ValueError(
                f"The contrastive stream holds {self.batch_size} rows but generate passed {sequences.shape[0]}: "
                "contrastive decoders support greedy decoding only (no beam search, no num_return_sequences)."
            )
        if generated != self.steps:
            raise RuntimeError(
                f"The contrastive stream is out of step: it has run {self.steps} steps but the main stream has "
                f"generated {generated} tokens. Use a fresh processor for every generate call."
            )
        first = self.steps == 0
        if not first:
            self.input_ids = torch.cat([self.input_ids, sequences[:, -1:].to(self.input_ids.device)], dim=-1)
        with torch.no_grad():
            model_inputs = self.model.prepare_inputs_for_generation(
                self.input_ids, next_sequence_length=None if first else 1, is_first_iteration=first, **self.kwargs
            )
            outputs = self.model(**model_inputs, return_dict=True)
        self.kwargs = self.model._update_model_kwargs_for_generation(outputs, self.kwargs)
        self.steps += 1
        return outputs.logits[:, -1].float()


def greedy_with(
    model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int, processors: Sequence[LogitsProcessor]
) -> Tensor:
    """Greedy ``generate`` with extra logits processors; returns the new tokens ``[B, T]``."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             logits_processor=LogitsProcessorList(processors))
    return out[:, inputs["input_ids"].shape[1]:]
