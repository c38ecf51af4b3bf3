"""OPERA (Huang et al., "OPERA: Alleviating Hallucination in Multi-Modal Large Language Models via
Over-Trust Penalty and Retrospection-Allocation", CVPR 2024) as a beam-search decoder.

At every beam-search step each beam keeps its ``num_attn_candidates`` most likely next tokens
(the candidates, ``Y``). Every candidate is fed to the model once, and the last layer's attention
of the candidate's query row is read: the maximum over heads, renormalised to sum 1. Together
with the rows of the tokens generated so far it forms the *local window* ``a[i, j]`` of the
response (rows: queries, columns: keys, both response positions, ``i >= j``).

1. **Over-trust penalty.** The score of column ``j`` (the "knowledge aggregation pattern" on
   response token ``j``) is ``phi_j = 1e-7 * prod_{i >= j} (sigma * a[i, j])``, with ``sigma`` the
   ``scale_factor``; the penalty of a candidate is ``max_j phi_j``, and its location ``c`` the
   argmax. The next token is chosen from ``log_softmax`` over the candidates of
   ``logit - penalty_weights * penalty`` (every other token gets the logit ``-999``), added to
   the beam scores as in plain beam search. While the response (with the candidate) has at most
   ``warmup`` tokens, the penalty is instead ``-(attention of the candidate on the image tokens)``.
2. **Retrospection-allocation.** Each step, every beam contributes the most frequent location
   over its candidates; the step's location is the most frequent of those. When, for every beam
   slot, more than ``threshold`` of the steps so far had that location, and the location is not
   among the first ``warmup`` response tokens, decoding rolls back to the token right after it:
   the beam search returns to its state before that token was chosen and chooses again among
   all tokens, except the (beam, token) pairs chosen there before. Each position takes at most
   ``max_rollbacks`` rollbacks (then the one before it is tried), and a rollback goes back at
   most ``window_size`` tokens.

Published defaults (README and ``chair_eval.py`` of shikiw/OPERA): 5 beams, ``scale_factor=50``,
``threshold=15``, ``num_attn_candidates=5``, ``penalty_weights=1``; released constants:
``window_size=512``, at most ``num_attn_candidates`` (5) rollbacks per position, ``warmup=10``,
the factor ``1e-7`` and the fill ``-999``.

How it runs here: ``model.generate(..., custom_generate=<this decoder's loop>)``, so transformers
prepares inputs, cache, logits processors and stopping criteria exactly as for ``beam``, and the
loop reuses transformers' own beam-search bookkeeping. The attention comes from eahlib's
attention interface: one observer :class:`~eahlib.attention.LayerHook` on the last layer, which
computes explicit probabilities only for the one-token forwards (each step's token and the
candidates); the prefill, every other layer and every other call stay SDPA, and only one row per
beam is kept. Candidate forwards extend the KV cache, which is cropped back after each one.

Differences from the released code (a patched transformers 4.29 ``opera_beam_search``):

- each sample of a batch is decoded on its own (its padding removed), so it never depends on its
  batch mates (released: batch size 1; with more, the rollback location is a mode over the batch);
- image tokens are found by id, anywhere in the prompt (released: one contiguous span);
- attention in float32 and the column scores in float64 log space (released: float16 attention,
  scores stored in float16, which saturate to ``inf`` above 65504; any penalty above ~1000
  already puts a candidate below the ``-999`` of the other tokens, so both exclude it);
- a rollback recomputes only the response prefix on top of the prompt's cached keys and values
  (released: reruns the whole prompt, image included);
- the rows of the window are kept per beam lineage; released: the full ``L x L`` attention of the
  last layer (and every layer's attention through ``output_attentions``) at every step;
- rejected tokens of positions after a rollback point are forgotten (released: only those of the
  next position, an indexing slip); ``window_size`` also bounds the local window (released: the
  whole response, at most ``max_new_tokens=512`` tokens there, so the same);
- the per-position rollback limit is its own parameter ``max_rollbacks`` (released: equal to
  ``num_attn_candidates``; set both to reproduce its ``num_attn_candidates=1`` variant);
- beam bookkeeping (length penalty, early stopping) is current transformers' beam search, the same
  as the ``beam`` decoder; ``num_beams=1`` runs (the released code refuses it).

Limits, with a clear error: the KV cache must be a dynamic full-attention cache (sliding-window
or linear-attention layers cannot be cropped back), and the language model must dispatch its
attention through transformers' ``AttentionInterface``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache, DynamicLayer

from eahlib.attention import AttentionCall, LayerHook, active_hooks, layer_hooks
from eahlib.interventions.vhr import active_reinforcement
from eahlib.methods.registry import Component, register
from eahlib.models import decoder_layers, image_token_mask

SCORE_FACTOR = 1e-7
"""The released constant in front of the column product."""
FILL = -999.0
"""The released logit given to every token that is not a candidate."""
SEQUENCE_KEYS = ("attention_mask", "position_ids", "token_type_ids", "mm_token_type_ids", "moe_mm_token_type_ids")
"""Generation kwargs that grow by one entry per token (transformers' ``_update_model_kwargs_for_generation``)."""
PACKED_INPUTS = {"pixel_values": ("image_grid_thw", "image_token_id"),
                 "pixel_values_videos": ("video_grid_thw", "video_token_id")}
"""Vision inputs packed over the batch (Qwen2-VL style): patch rows per image from a ``*_grid_thw`` row."""


@dataclass(frozen=True)
class OperaSettings:
    """OPERA's parameters (see the module docstring); defaults as published and released."""

    num_beams: int = 5
    scale_factor: float = 50.0
    threshold: int | None = 15
    num_attn_candidates: int = 5
    penalty_weights: float = 1.0
    window_size: int = 512
    max_rollbacks: int = 5
    warmup: int = 10

    def __post_init__(self) -> None:
        positive = {"num_beams": self.num_beams, "num_attn_candidates": self.num_attn_candidates,
                    "window_size": self.window_size, "scale_factor": self.scale_factor}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"opera's {name} must be > 0, got {value!r}.")
        for name in ("max_rollbacks", "warmup", "penalty_weights"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"opera's {name} must be >= 0, got {getattr(self, name)!r}.")
        if self.threshold is not None and self.threshold < 0:
            raise ValueError(f"opera's threshold must be >= 0 or None (no retrospection), got {self.threshold!r}.")


# ---------------------------------------------------------------------------------------------
# The formulas, as pure functions on small tensors.


def candidate_log_scores(previous: Tensor, candidates: Tensor, scale_factor: float) -> Tensor:
    """Log column scores ``log(1e-7 * prod_{i >= j} sigma * a[i, j])`` of each candidate's window.

    Args:
        previous: ``[K, s, s]`` the rows of the ``s`` response tokens so far of each beam
            (row ``i`` = query ``i``, row-normalised attention over the response; ``j > i`` unused).
        candidates: ``[K, C, s + 1]`` each candidate's row over the response, its own column last.
        scale_factor: ``sigma``.

    Returns:
        ``[K, C, s + 1]`` float64; ``-inf`` where a factor is 0.
    """
    s = previous.shape[-1]
    lower = torch.ones(s, s, dtype=torch.bool, device=previous.device).tril()
    with torch.no_grad():
        logs = torch.log(scale_factor * previous.double()).masked_fill(~lower, 0.0).sum(-2)
        logs = nn.functional.pad(logs, (0, 1))  # the candidate's own column has only its own row
        return math.log(SCORE_FACTOR) + logs[:, None, :] + torch.log(scale_factor * candidates.double())


def over_trust_penalty(log_scores: Tensor, image_attention: Tensor, warmup: int) -> tuple[Tensor, Tensor]:
    """Each candidate's penalty and the location of its strongest aggregation pattern.

    Args:
        log_scores: ``[K, C, w]`` from :func:`candidate_log_scores` (``w`` response tokens with the candidate).
        image_attention: ``[K, C]`` each candidate's (row-normalised) attention on the image tokens.
        warmup: while ``w <= warmup`` the penalty is ``-image_attention``.

    Returns:
        ``([K, C] float32 penalty, [K, C] int64 location)``; the location is the first argmax.
    """
    location = log_scores.argmax(-1)
    if log_scores.shape[-1] <= warmup:
        return -image_attention.float(), location
    return log_scores.gather(-1, location.unsqueeze(-1)).squeeze(-1).exp().float(), location


def penalised_log_probs(logits: Tensor, candidates: Tensor, penalty: Tensor, penalty_weights: float) -> Tensor:
    """Next-token log-probabilities of a penalised step.

    Args:
        logits: ``[K, V]``.
        candidates: ``[K, C]`` token ids.
        penalty: ``[K, C]``.
        penalty_weights: ``alpha``.

    Returns:
        ``[K, V]``: ``log_softmax`` of ``logit - alpha * penalty`` on the candidates and ``-999`` elsewhere.
    """
    kept = logits.gather(-1, candidates)
    if penalty_weights:  # (0 * inf would be nan)
        kept = kept - penalty_weights * penalty
    return torch.full_like(logits, FILL).scatter(-1, candidates, kept).log_softmax(-1)


def rejecting_log_probs(logits: Tensor, rejected: Sequence[tuple[int, int]]) -> Tensor:
    """Log-probabilities of a rollback step: all tokens, the rejected ``(beam, token)`` pairs lowered
    to their row's minimum (the released code shifts the row's minimum to -999 and sets them to -999)."""
    logits = logits.clone()
    for beam, token in rejected:
        logits[beam, token] = logits[beam].min()
    return logits.log_softmax(-1)


def most_frequent(values: Tensor) -> Tensor:
    """The most frequent value along the last dimension (the smallest one on ties)."""
    counts = (values.unsqueeze(-1) == values.unsqueeze(-2)).sum(-1)
    key = counts * (int(values.max()) - int(values.min()) + 1) - (values - values.min())
    return values.gather(-1, key.argmax(-1, keepdim=True)).squeeze(-1)


def rollback_location(locations: Tensor) -> int:
    """The step's location: the most frequent of each beam's most frequent candidate location."""
    return int(most_frequent(most_frequent(locations)))


def retrospection_triggered(history: Tensor, location: int, threshold: int) -> bool:
    """``history`` ``[K, steps]``: every beam slot saw ``location`` more than ``threshold`` times."""
    return bool(((history == location).sum(-1) > threshold).all())


def rollback_position(
    location: int, response_length: int, rollbacks: dict[int, int], settings: OperaSettings
) -> int | None:
    """Where a triggered rollback goes (the position whose token is chosen again), or ``None``.

    Args:
        location: the step's aggregation location (a response position).
        response_length: response tokens in the window, the candidate included.
        rollbacks: rollbacks so far per position; updated.
        settings: ``warmup``, ``max_rollbacks``, ``window_size``.
    """
    if location < settings.warmup:
        return None
    position = location + 1
    if rollbacks.get(position, 0) >= settings.max_rollbacks:
        position -= 1
        if rollbacks.get(position, 0) >= settings.max_rollbacks:
            return None
    rollbacks[position] = rollbacks.get(position, 0) + 1
    if response_length - position > settings.window_size + 1:
        position = max(1, response_length - settings.window_size - 1)
    return position


# ---------------------------------------------------------------------------------------------
# Attention: one observer on the last layer.


@dataclass(eq=False)
class LastLayerRows(LayerHook):
    """Observer hook on the last layer: the newest query row, max over heads, renormalised.

    Explicit probabilities are computed only while :meth:`record` is active.

    Attributes:
        row: ``[rows, keys]`` float32 of the last recorded call.
        calls: recorded calls so far.
    """

    recording: bool = False
    row: Tensor | None = None
    calls: int = 0

    def wants_probabilities(self, is_prefill: bool) -> bool:
        return self.recording

    def __call__(self, call: AttentionCall) -> Tensor:
        assert call.probs is not None
        top = call.probs[:, :, -1].amax(1)
        self.row = top / top.sum(-1, keepdim=True)
        self.calls += 1
        return call.probs

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        """Compute and keep the row of the forward calls inside the block."""
        self.recording, self.row = True, None
        try:
            yield
        finally:
            self.recording = False


@contextlib.contextmanager
def watch_last_layer(model: nn.Module) -> Iterator[LastLayerRows]:
    """Install a :class:`LastLayerRows` observer on the language model's last layer for the block."""
    hook = LastLayerRows()
    with layer_hooks(model, {len(decoder_layers(model)) - 1: hook}):
        yield hook


# ---------------------------------------------------------------------------------------------
# The decoding loop (a ``custom_generate`` callable of ``model.generate``).


@dataclass
class OperaTrace:
    """What the decoder did for one sample, step by step (for tests and analyses).

    Attributes:
        steps: the response length ``s`` at each penalised step.
        sequences: ``[K, s]`` the running beams' response tokens at each penalised step.
        candidates, penalties, locations: ``[K, C]`` per penalised step.
        rollbacks: ``(s, position, rejected [(beam, token), ...])`` per rollback.
    """

    steps: list[int] = field(default_factory=list)
    sequences: list[Tensor] = field(default_factory=list)
    candidates: list[Tensor] = field(default_factory=list)
    penalties: list[Tensor] = field(default_factory=list)
    locations: list[Tensor] = field(default_factory=list)
    rollbacks: list[tuple[int, int, list[tuple[int, int]]]] = field(default_factory=list)


@dataclass
class _Run:
    model: nn.Module
    watcher: LastLayerRows
    settings: OperaSettings
    trace: OperaTrace | None


@dataclass
class _BeamState:
    """transformers' beam-search tensors before a step's choice (never modified in place)."""

    running_sequences: Tensor
    running_beam_scores: Tensor
    sequences: Tensor
    beam_scores: Tensor
    is_sent_finished: Tensor
    is_early_stop_heuristic_unsatisfied: Tensor
    next_token_hits_stopping_criteria: Tensor
    running_beam_indices: Tensor
    beam_indices: Tensor


def _extend_window(window: Tensor, row: Tensor) -> Tensor:
    """Add a column (zeros: earlier queries cannot see the new token) and the new row."""
    return torch.cat([nn.functional.pad(window, (0, 1)), row.unsqueeze(1)], dim=1)


def lineage_window(rows: Sequence[Tensor], parents: Sequence[Tensor]) -> Tensor:
    """The window of the beams of step ``len(rows)``, from the rows as recorded and the beam choices.

    Args:
        rows: ``rows[j]`` ``[K, j + 1]``: the row of response position ``j`` of each beam slot of step ``j + 1``.
        parents: ``parents[j]`` ``[K]``: the slot at step ``j`` each beam of step ``j + 1`` continues.

    Returns:
        ``[K, s, s]``: row ``j`` of beam ``k`` is the row of position ``j`` of ``k``'s ancestor at step ``j + 1``.
    """
    window = torch.zeros(parents[0].shape[0] if parents else 0, 0, 0)
    for row, parent in zip(rows, parents):
        window = _extend_window(window.to(row.device)[parent], row)
    return window


def _rollable_cache(model_kwargs: Mapping[str, Any]) -> Any:
    cache = model_kwargs.get("cache", model_kwargs.get("past_key_values"))
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or layers is None or any(type(layer) is not DynamicLayer for layer in layers):
        raise NotImplementedError(
            f"OPERA crops the KV cache back after each candidate and at each rollback; this model's cache "
            f"({type(cache).__name__} with {sorted({type(layer).__name__ for layer in layers or []})}) cannot be cropped "
            "exactly (sliding-window, linear-attention or static layers). It needs a DynamicCache of full-attention layers."
        )
    return cache


def _crop(cache: Any, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _truncate(model_kwargs: dict[str, Any], length: int) -> dict[str, Any]:
    out = dict(model_kwargs)
    for key in SEQUENCE_KEYS:
        if isinstance(out.get(key), Tensor):
            out[key] = out[key][..., :length]
    return out


def _opera_search(
    model: nn.Module,
    input_ids: Tensor,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool = False,
    *,
    opera: _Run,
    **model_kwargs: Any,
) -> Tensor:
    """OPERA beam search for one sample (``num_beams`` rows), in ``generate``'s decoding-method interface."""
    if synced_gpus:
        raise NotImplementedError("opera does not support synced_gpus (DeepSpeed ZeRO-3 / FSDP generation).")
    if generation_config.return_dict_in_generate:
        raise NotImplementedError("opera returns sequences only (return_dict_in_generate=False).")
    settings, watcher, trace = opera.settings, opera.watcher, opera.trace
    num_beams, prompt_length = generation_config.num_beams, input_ids.shape[1]
    if input_ids.shape[0] != num_beams:
        raise ValueError(f"opera decodes one sample per call, got {input_ids.shape[0] // num_beams} samples.")
    pad, eos = generation_config._pad_token_tensor, generation_config._eos_token_tensor
    max_length, n_candidates = generation_config.max_length, settings.num_attn_candidates
    beams_to_keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * num_beams
    top_num_beam_mask = torch.arange(beams_to_keep, device=input_ids.device) < num_beams
    fill_value = pad or eos[0] if eos is not None else -1  # as transformers' beam search
    device = input_ids.device

    running = torch.full((1, num_beams, max_length), fill_value, dtype=torch.int64, device=device)
    running[:, :, :prompt_length] = input_ids.unsqueeze(0)
    scores = torch.zeros((1, num_beams), dtype=torch.float, device=device)
    scores[:, 1:] = -1e9
    indices = torch.full((1, num_beams, max_length - prompt_length), -1, dtype=torch.int32, device=device)
    state = _BeamState(
        running, scores, running.clone(), torch.full((1, num_beams), -1e9, device=device),
        torch.zeros((1, num_beams), dtype=torch.bool, device=device), torch.ones((1, 1), dtype=torch.bool, device=device),
        torch.zeros((1, num_beams), dtype=torch.bool, device=device), indices, indices.clone(),
    )
    image_keys = image_token_mask(opera.model, input_ids).float()

    outputs = model._prefill(input_ids, generation_config, model_kwargs,
                             is_first_iteration=not generation_config.is_assistant)
    model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs)
    cache = _rollable_cache(model_kwargs)
    cur_len = prompt_length
    window = torch.zeros(num_beams, 0, 0, device=device)  # rows of the running beams' response tokens
    rows: list[Tensor] = []  # rows[j]: [K, j + 1], the row of position j, by beam slot of step j + 1
    parents: list[Tensor] = []  # parents[j]: [K], the slot at step j of each beam of step j + 1
    snapshots: list[_BeamState] = []  # snapshots[s]: the state before choosing token s
    history: list[Tensor] = []  # per step, [K] the most frequent location of each beam slot
    rollbacks: dict[int, int] = {}
    rejected: dict[int, list[tuple[int, int]]] = {}
    finished = False
    while not finished:
        s = cur_len - prompt_length
        logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32, device=device)
        del outputs
        flat = state.running_sequences[0, :, :cur_len]
        snapshots.append(state)
        top_tokens = logits.topk(n_candidates, dim=-1).indices
        candidate_rows, image_attention = [], []
        for c in range(n_candidates):
            candidate = torch.cat([flat, top_tokens[:, c:c + 1]], dim=-1)
            inputs = model.prepare_inputs_for_generation(candidate, next_sequence_length=1, **model_kwargs)
            with watcher.record():
                model(**inputs, return_dict=True)
            _crop(cache, cur_len)
            row = watcher.row
            candidate_rows.append(row[:, prompt_length:])
            image_attention.append((row[:, :prompt_length] * image_keys).sum(-1))
        log_scores = candidate_log_scores(window, torch.stack(candidate_rows, 1), settings.scale_factor)
        if s + 1 > settings.window_size:  # the local window: the last window_size response tokens
            log_scores[..., : s + 1 - settings.window_size] = -math.inf
        penalty, location = over_trust_penalty(log_scores, torch.stack(image_attention, 1), settings.warmup)
        history.append(most_frequent(location))
        if trace is not None:
            trace.steps.append(s)
            trace.sequences.append(flat[:, prompt_length:].cpu())
            trace.candidates.append(top_tokens.cpu())
            trace.penalties.append(penalty.cpu())
            trace.locations.append(location.cpu())

        position = None
        if settings.threshold is not None:
            step_location = rollback_location(location)
            if retrospection_triggered(torch.stack(history, -1), step_location, settings.threshold):
                position = rollback_position(step_location, s + 1, rollbacks, settings)
                if position is not None and not 1 <= position <= s - 1:
                    position = None
        if position is None:
            log_probs = penalised_log_probs(logits, top_tokens, penalty, settings.penalty_weights)
        else:
            # Retrospection: back to the state before token `position` was chosen, and choose again.
            chosen = [(int(b), int(t)) for b, t in zip(parents[position], snapshots[position + 1].running_sequences[
                0, :, prompt_length + position])]
            rejected = {p: pairs for p, pairs in rejected.items() if p <= position}
            rejected[position] = rejected.get(position, []) + chosen
            if trace is not None:
                trace.rollbacks.append((s, position, list(rejected[position])))
            state, snapshots = snapshots[position], snapshots[:position + 1]
            history, rows, parents = history[:position + 1], rows[:position], parents[:position]
            window = lineage_window(rows, parents).to(device) if rows else torch.zeros(num_beams, 0, 0, device=device)
            cur_len = prompt_length + position
            _crop(cache, prompt_length)
            model_kwargs = _truncate(model_kwargs, cur_len)
            prefix = state.running_sequences[0, :, :cur_len]
            inputs = model.prepare_inputs_for_generation(prefix, next_sequence_length=position, **model_kwargs)
            outputs = model(**inputs, return_dict=True)
            model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs)
            logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32, device=device)
            del outputs
            log_probs = rejecting_log_probs(logits, rejected[position])
            flat = prefix

        log_probs = logits_processor(flat, log_probs)
        state, beam_idx = _choose(model, state, log_probs, cur_len, prompt_length, num_beams, beams_to_keep,
                                  top_num_beam_mask, stopping_criteria, generation_config)
        parents.append(beam_idx)
        window = window[beam_idx]
        cache.reorder_cache(beam_idx)
        cur_len += 1
        finished = not model._beam_search_has_unfinished_sequences(
            state.is_early_stop_heuristic_unsatisfied, state.is_sent_finished,
            state.next_token_hits_stopping_criteria, generation_config.early_stopping,
        )
        if not finished:
            flat = state.running_sequences[0, :, :cur_len]
            inputs = model.prepare_inputs_for_generation(flat, next_sequence_length=1, **model_kwargs)
            with watcher.record():
                outputs = model(**inputs, return_dict=True)
            model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs)
            rows.append(watcher.row[:, prompt_length:])
            window = _extend_window(window, rows[-1])

    returned = generation_config.num_return_sequences
    sequences = state.sequences[0, :returned]
    generated = int((state.beam_indices[0, :returned] + 1).bool().sum(-1).max())
    return sequences[:, :prompt_length + generated]


def _choose(
    model: nn.Module, state: _BeamState, log_probs: Tensor, cur_len: int, prompt_length: int, num_beams: int,
    beams_to_keep: int, top_num_beam_mask: Tensor, stopping_criteria: Any, generation_config: Any,
) -> tuple[_BeamState, Tensor]:
    """One step of transformers' beam search (its own helpers) from ``[K, V]`` processed log-probs."""
    accumulated = (log_probs.unsqueeze(0) + state.running_beam_scores[:, :, None]).reshape(1, -1)
    topk_log_probs, topk_sequences, topk_indices = model._get_top_k_continuations(
        accumulated_log_probs=accumulated, running_sequences=state.running_sequences,
        running_beam_indices=state.running_beam_indices, cur_len=cur_len, decoder_prompt_len=prompt_length,
        do_sample=False, beams_to_keep=beams_to_keep, num_beams=num_beams, batch_size=1,
    )
    hits = stopping_criteria(topk_sequences[0, :, :cur_len + 1], None).reshape(1, beams_to_keep)
    running, running_scores, running_indices = model._get_running_beams_for_next_iteration(
        topk_log_probs=topk_log_probs, topk_running_sequences=topk_sequences,
        topk_running_beam_indices=topk_indices, next_token_hits_stopping_criteria=hits, num_beams=num_beams,
    )
    sequences, beam_scores, beam_indices, is_sent_finished = model._update_finished_beams(
        sequences=state.sequences, topk_running_sequences=topk_sequences, beam_scores=state.beam_scores,
        topk_log_probs=topk_log_probs, beam_indices=state.beam_indices, topk_running_beam_indices=topk_indices,
        is_early_stop_heuristic_unsatisfied=state.is_early_stop_heuristic_unsatisfied,
        is_sent_finished=state.is_sent_finished, next_token_hits_stopping_criteria=hits,
        top_num_beam_mask=top_num_beam_mask, num_beams=num_beams, cur_len=cur_len, decoder_prompt_len=prompt_length,
        length_penalty=generation_config.length_penalty, early_stopping=generation_config.early_stopping,
    )
    unsatisfied = model._check_early_stop_heuristic(
        is_early_stop_heuristic_unsatisfied=state.is_early_stop_heuristic_unsatisfied,
        running_beam_scores=running_scores, beam_scores=beam_scores, is_sent_finished=is_sent_finished,
        cur_len=cur_len + 1, max_length=generation_config.max_length, decoder_prompt_len=prompt_length,
        early_stopping=generation_config.early_stopping, length_penalty=generation_config.length_penalty,
    )
    beam_idx = running_indices[0, :, cur_len - prompt_length].long()
    return _BeamState(running, running_scores, sequences, beam_scores, is_sent_finished, unsatisfied, hits,
                      running_indices, beam_indices), beam_idx


# ---------------------------------------------------------------------------------------------
# Batches: each sample alone.


def split_batch(model: nn.Module, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One input dict per sample, its left padding removed.

    ``input_ids`` and the inputs aligned with it (attention mask, token types) lose the padding
    columns; tensors with a leading batch dimension are sliced; vision inputs packed over the batch
    (``pixel_values`` with ``image_grid_thw``, Qwen2-VL style) are cut per image, the images
    assigned to samples in order by their visual-token counts.
    """
    ids = inputs["input_ids"]
    batch, width = ids.shape
    mask = inputs.get("attention_mask")
    real = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    packed = {key: _unpack(model, inputs, key, grid, token_attr)
              for key, (grid, token_attr) in PACKED_INPUTS.items() if key in inputs and grid in inputs}
    grids = {PACKED_INPUTS[key][0] for key in packed}
    samples = []
    for i in range(batch):
        sample: dict[str, Any] = {}
        for key, value in inputs.items():
            if key in packed:
                sample[key], grid = packed[key][i]
                sample[PACKED_INPUTS[key][0]] = grid
            elif key in grids:
                continue
            elif not isinstance(value, Tensor) or value.dim() == 0:
                sample[key] = value
            elif key in ("input_ids", *SEQUENCE_KEYS) and tuple(value.shape[:2]) == (batch, width):
                sample[key] = value[i:i + 1, real[i]]
            elif value.shape[0] == batch:
                sample[key] = value[i:i + 1]
            else:
                raise ValueError(
                    f"opera decodes each sample alone but cannot split the input {key!r} of shape "
                    f"{list(value.shape)} by sample (batch {batch})."
                )
        samples.append(sample)
    return samples


def _unpack(model: nn.Module, inputs: Mapping[str, Any], key: str, grid_key: str, token_attr: str) -> list[tuple[Tensor, Tensor]]:
    grid, pixels = inputs[grid_key], inputs[key]
    token = getattr(model.config, token_attr, None)
    merge = getattr(getattr(model.config, "vision_config", None), "spatial_merge_size", 1)
    if token is None:
        raise ValueError(f"opera cannot split {key!r} by sample: the config has no {token_attr}.")
    wanted = (inputs["input_ids"] == token).sum(-1).tolist()
    per_image = (grid.prod(-1) // merge**2).tolist()
    rows = grid.prod(-1).tolist()
    out, image, offset = [], 0, 0
    for count in wanted:
        first, pixel_first = image, offset
        while count > 0 and image < len(per_image):
            count -= per_image[image]
            offset += rows[image]
            image += 1
        if count != 0:
            raise ValueError(f"opera cannot split {key!r} by sample: the visual-token counts do not match {grid_key}.")
        out.append((pixels[pixel_first:offset], grid[first:image]))
    return out


def opera_generate(
    model: nn.Module,
    inputs: Mapping[str, Any],
    max_new_tokens: int,
    settings: OperaSettings | None = None,
    traces: list[OperaTrace] | None = None,
) -> Tensor:
    """OPERA on a left-padded batch; returns the new tokens ``[B, T]`` (padded with the pad id).

    Args:
        model: the vision-language model.
        inputs: the processor's left-padded batch.
        max_new_tokens: generation length limit.
        settings: OPERA's parameters (default: published).
        traces: if given, one :class:`OperaTrace` per sample is appended.
    """
    settings = settings or OperaSettings()
    recorders = list({id(h): h for hooks in active_hooks(model).values() for h in hooks}.values())  # per-prefill records
    before = [h.prefill_count() for h in recorders]
    vhr = active_reinforcement(model)  # VHR's records live on its output-projection hooks, not on a LayerHook
    vhr_before = len(vhr.reinforced) if vhr is not None else 0
    new_tokens = []
    with watch_last_layer(model) as watcher, torch.no_grad():
        for sample in split_batch(model, inputs):
            trace = OperaTrace() if traces is not None else None
            search = partial(_opera_search, opera=_Run(model, watcher, settings, trace))
            out = model.generate(**sample, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=settings.num_beams, custom_generate=search)
            new_tokens.append(out[0, sample["input_ids"].shape[1]:])
            if trace is not None:
                traces.append(trace)
    for hook, start in zip(recorders, before):  # the per-sample prefills of one batch become one record
        hook.merge_prefills(start)
    if vhr is not None:
        vhr.merge_prefills(vhr_before)
    config = model.generation_config
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else eos if eos is not None else 0
    return nn.utils.rnn.pad_sequence(new_tokens, batch_first=True, padding_value=int(pad))


def opera(model: nn.Module, inputs: Mapping[str, Any], max_new_tokens: int, **params: Any) -> Tensor:
    """OPERA decoding (the ``opera`` component); ``params`` are the fields of :class:`OperaSettings`."""
    return opera_generate(model, inputs, max_new_tokens, OperaSettings(**params))


register(Component(
    "opera", "decoder", opera, {f.name: f.default for f in fields(OperaSettings)},
    "Huang et al., OPERA: Alleviating Hallucination in Multi-Modal Large Language Models via Over-Trust Penalty "
    "and Retrospection-Allocation, CVPR 2024",
    description="OPERA: beam search whose candidates are penalised for over-trusting one response token in the "
                "last layer's attention, with rollback when the same token keeps drawing it (threshold=None: no "
                "rollback)",
))
