"""Heads-guided attention by value: the cached generation under the intervention equals generation without cache
under attention written here, the released formula (after the mask and the clamp, each forward's last row: on the
image keys ``+ alpha * mean over heads of |logit|``), in padded batches, with GQA, at every decoding step, under
beam search, sampling and the contrastive decoders, and on every family."""

from __future__ import annotations

import math

import pytest
import torch

from eahlib import image_token_mask
from eahlib.interventions.heads_guided import DEPTH, HeadsGuidedAttention, guide_attention_by_heads, guide_by_heads
from eahlib.methods import resolve_method
from eahlib.methods.vcd import diffusion_noise
from eahlib.models import attention_layers, layers_at_depth, text_config
from eahlib.testing import BOS, IMAGE, TINY_MODELS, tiny_llava
from eahlib.testing.families import TINY_FAMILIES
from tests.conftest import PROMPTS
from tests.logit_reference import (
    FAMILY_PROMPTS,
    STEPS,
    TOLERANCE,
    FullSequence,
    assert_a_padded_sample_equals_it_alone,
    assert_beam_and_sampling_equal_the_reference_without_cache,
    assert_composes_with_every_decoder,
    assert_each_sample_equals_its_full_forwards,
    assert_every_family_equals_its_reference,
    assert_new_tokens_in_one_call_equal_one_at_a_time,
    assert_opera_without_penalty_and_rollback_is_beam_search,
    assert_restored_when_the_body_raises,
    assert_runs_in_the_runner,
    cached_run,
    eager_output,
    reference_attention,
    repeat_heads,
    sharpened,
    uncached_logits,
)
from tests.test_method_values import implausible, last_logits, run, text_only
from tests.test_vaf import deep

ALPHA = 2.0
"""A strength whose effect on the tiny models is far above the tolerance."""


# ------------------------------------------------------------------------------------------ layers


def test_published_layers_on_32_layers_and_the_rule_at_other_depths() -> None:
    guide_range = [int(x) for x in "5,18".split(",")]  # chair_eval.py:73-74
    guide_range[1] += 1
    released = list(range(guide_range[0], guide_range[1]))  # modify_attention.py:114
    assert layers_at_depth(deep(tiny_llava, 32), DEPTH) == released == list(range(5, 19))
    assert resolve_method("heads_guided").settings()["heads_guided"] == {
        "alpha": 0.5, "aggregation": "mean", "depth": [5 / 32, 19 / 32], "layers": None}
    assert layers_at_depth(deep(tiny_llava, 30), DEPTH) == list(range(5, 18))  # the SmolLM2 organism's depth
    assert layers_at_depth(deep(tiny_llava, 2), DEPTH) == [0]


# ------------------------------------------------------------------------------ the released formula


def released_guidance(sequence: FullSequence, layers: list[int], alpha: float, prompt_length: int,
                      rows: str = "each_new", heads: str = "mean"):
    """``llama_new_forward`` on a whole sequence: logits ``QK^T / sqrt(d)``, plus the mask, clamped to the minimum;
    then in ``layers`` the rows that were each forward's last (the prompt's last, then each generated token's;
    ``rows="last"``: the sequence's last row only, ``"all"``: every row) gain on the image block
    ``alpha * |l|.mean(heads)`` (``heads="each"``: each head its own ``|l|``), then the softmax."""

    def guided_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        weights = torch.matmul(query, repeat_heads(key, module).transpose(2, 3)) * scaling
        weights = weights + attention_mask  # modify_attention.py:72-75
        weights = torch.max(weights, torch.tensor(torch.finfo(weights.dtype).min))
        if module.layer_idx in layers:
            chosen = {"each_new": range(prompt_length - 1, weights.shape[2]), "last": [weights.shape[2] - 1],
                      "all": range(weights.shape[2])}[rows]
            for b in range(weights.shape[0]):
                start, end = sequence.image_span(b)
                for row in chosen:  # modify_attention.py:84-87
                    block = weights[b, :, row, start:end]
                    magnitude = block.abs().mean(dim=0, keepdim=True) if heads == "mean" else block.abs()
                    weights[b, :, row, start:end] = block + alpha * magnitude
        return eager_output(module, weights, value)

    return guided_attention


def released_logits(model, inputs, tokens, layers, alpha: float = ALPHA, **variant) -> torch.Tensor:
    sequence = FullSequence(model)
    try:
        with reference_attention(model, released_guidance(sequence, layers, alpha, inputs["input_ids"].shape[1],
                                                          **variant)):
            return uncached_logits(model, inputs, tokens)
    finally:
        sequence.handle.remove()


@pytest.mark.parametrize("name", ["llava", "qwen2_vl"], ids=["llava", "qwen2_vl_gqa"])
def test_each_step_equals_the_released_guidance_of_the_last_row(name: str) -> None:
    """Left-padded prompts of three lengths; layer 0 guided (its rows feed layer 1), layer 1 not; the prompt's last
    row at the prefill and each new token's row at its step; GQA: the mean runs over the query heads."""
    model, make_inputs = sharpened(TINY_MODELS[name])
    inputs = make_inputs(PROMPTS)
    with guide_attention_by_heads(model, alpha=ALPHA, layers=[0]):
        tokens, logits = cached_run(model, inputs)
    expected = released_logits(model, inputs, tokens, [0])
    torch.testing.assert_close(logits, expected, **TOLERANCE)
    for other in (released_logits(model, inputs, tokens, [0, 1]),  # the layers matter
                  released_logits(model, inputs, tokens, [0], rows="all"),  # only each forward's last row
                  released_logits(model, inputs, tokens, [0], heads="each"),  # one term shared by the heads
                  uncached_logits(model, inputs, tokens)):  # stock
        assert not torch.allclose(other, expected, **TOLERANCE)
    latest_only = released_logits(model, inputs, tokens, [0], rows="last")  # the earlier steps' rows stay guided
    assert not torch.allclose(latest_only[1:], expected[1:], **TOLERANCE)


def test_the_guidance_on_hand_made_logits() -> None:
    """Visible image keys gain ``alpha`` times their mean magnitude over heads; hidden keys and other keys keep
    their logits, and a hidden key's magnitude never enters the mean."""
    generator = torch.Generator().manual_seed(0)
    minimum = torch.finfo(torch.float32).min
    visible = torch.tensor([[[1, 1, 1, 0, 1]], [[0, 1, 1, 1, 1]]], dtype=torch.bool)  # [B, 1, k]
    scores = torch.where(visible[:, None], torch.randn(2, 3, 1, 5, generator=generator) * 3, minimum)
    image = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 1, 0]], dtype=torch.bool)
    guided = guide_by_heads(scores, image, visible, 0.5)
    expected = scores.clone()
    for b in range(2):
        for j in range(5):
            if image[b, j] and visible[b, 0, j]:
                expected[b, :, 0, j] += 0.5 * sum(abs(float(scores[b, h, 0, j])) for h in range(3)) / 3
    torch.testing.assert_close(guided, expected, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(guided.softmax(-1)).all() and not torch.equal(guided, scores)


def test_a_head_that_masks_an_image_key_keeps_it_masked_and_out_of_the_mean() -> None:
    """A block-sparse layer's heads each keep their own keys: an image key one head masked (its logit the float32
    minimum) gains in the other heads the mean magnitude over them alone, and stays masked in that head (the released
    mean over every head would take the minimum's magnitude and overflow)."""
    minimum = torch.finfo(torch.float32).min
    scores = torch.tensor([[[[1.0, -2.0, 3.0]], [[-1.0, 4.0, minimum]], [[2.0, minimum, 5.0]]]])  # [1, 3, 1, 3]
    attended = scores > minimum / 2
    image = torch.tensor([[True, True, False]])
    guided = guide_by_heads(scores, image, attended, 0.5)
    expected = torch.tensor([[[[1.0 + 0.5 * 4 / 3, -2.0 + 0.5 * 3, 3.0]], [[-1.0 + 0.5 * 4 / 3, 4.0 + 0.5 * 3, minimum]],
                              [[2.0 + 0.5 * 4 / 3, minimum, 5.0]]]])
    torch.testing.assert_close(guided, expected, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(guided.softmax(-1)).all()


def test_a_sample_in_a_padded_batch_equals_it_alone() -> None:
    assert_a_padded_sample_equals_it_alone(lambda model: guide_attention_by_heads(model, alpha=ALPHA, layers=[0, 1]))


# --------------------------------------------------------------------------------- every family


def guidance_of_the_sequence(model, alpha: float, prompt_length: int):
    """Heads-guided attention read off the sequence's own ids: each row from the prompt's last on, on the image keys
    it sees, plus ``alpha`` times the mean of their magnitude over the heads whose logit is not masked (a
    block-sparse layer's heads each keep their own keys; a masked logit holds about the float32 minimum)."""
    def edit(call, ids, real):
        scores = call.scores.clone()
        queries, keys = scores.shape[-2:]
        first_query = ids.shape[1] - queries  # the call's queries are the sequence's last tokens, its keys too
        image = (image_token_mask(model, ids) & real)[:, -keys:]
        for b in range(scores.shape[0]):
            for row in range(max(prompt_length - 1 - first_query, 0), queries):
                chosen = image[b] & call.visible[b, row]
                block = scores[b, :, row, chosen]  # [H, keys]
                unmasked = block > torch.finfo(block.dtype).min / 2
                mean = (block.abs() * unmasked).sum(0) / unmasked.sum(0).clamp(min=1)
                scores[b, :, row, chosen] = torch.where(unmasked, block + alpha * mean, block)
        return scores

    return edit


def guidance_checked(model, make_inputs, prompts, layers, steps: int = STEPS) -> None:
    assert_each_sample_equals_its_full_forwards(
        model, make_inputs, prompts, lambda: guide_attention_by_heads(model, alpha=ALPHA, layers=layers), layers,
        lambda prompt_length: guidance_of_the_sequence(model, ALPHA, prompt_length), steps)


@pytest.mark.parametrize("name", sorted(TINY_FAMILIES))
def test_every_family_each_step_equals_the_guidance_of_a_full_forward(name: str) -> None:
    """Each sample's full forwards; a family whose stock model is not its full forwards (the reason checked), the
    cached run of the batch with the guidance written here."""
    model, make_inputs = sharpened(TINY_FAMILIES[name])
    layers = attention_layers(model)
    assert_every_family_equals_its_reference(
        name, model, make_inputs, lambda: guide_attention_by_heads(model, alpha=ALPHA, layers=layers), layers,
        lambda prompt_length: guidance_of_the_sequence(model, ALPHA, prompt_length))


def test_a_sliding_window_layer_guides_only_the_image_keys_it_still_sees() -> None:
    """Gemma 3's second layer sees the last 8 tokens: at each step some image tokens are in view (at other cache
    positions than in the prompt), the others hidden (their logits must stay masked, out of the mean)."""
    model, make_inputs = sharpened(TINY_FAMILIES["gemma3"])
    assert text_config(model).layer_types[1] == "sliding_attention"
    guidance_checked(model, make_inputs, [[BOS, 5, 6, 7, 8, IMAGE, 9], [BOS, 10, IMAGE]], [1], steps=4)


@pytest.mark.parametrize("name", sorted(TINY_FAMILIES))
def test_alpha_zero_is_the_stock_model_bit_for_bit(name: str) -> None:
    model, make_inputs = sharpened(TINY_FAMILIES[name])
    inputs = make_inputs(FAMILY_PROMPTS)
    stock_tokens, stock = cached_run(model, inputs)
    with guide_attention_by_heads(model, alpha=0.0, layers=attention_layers(model)):
        tokens, logits = cached_run(model, inputs)
    assert torch.equal(tokens, stock_tokens) and torch.equal(logits, stock)


# ------------------------------------------------------------------------------------- decoders


def test_beam_search_and_sampling_equal_the_released_formula_without_cache() -> None:
    """Beam search and seeded sampling: the same sequences and, at every step, the same logits of every row as
    without cache under the released formula."""
    assert_beam_and_sampling_equal_the_reference_without_cache(
        lambda model: guide_attention_by_heads(model, alpha=ALPHA, layers=[0, 1]),
        lambda sequence, inputs: released_guidance(sequence, [0, 1], ALPHA, inputs["input_ids"].shape[1]))


def test_vcd_contrasts_two_streams_each_guided() -> None:
    """``(1 + a) l - a l'`` on the plausible tokens, ``l`` and ``l'`` each from its own stream under the guidance."""
    model, make_inputs = sharpened(tiny_llava)
    inputs = make_inputs(PROMPTS)
    alpha, beta, seed = 1.0, 0.1, 3
    params = {"heads_guided": {"alpha": ALPHA, "layers": [0]}, "vcd": {"alpha": alpha, "beta": beta, "seed": seed}}
    tokens, scores = run(model, inputs, "heads_guided+vcd", params, STEPS)
    noised = {**inputs, "pixel_values": diffusion_noise(inputs["pixel_values"], 500, seed, batch_size=3)}
    image, noise = (released_logits(model, batch, tokens, [0]) for batch in (inputs, noised))
    for step in range(STEPS):
        dropped = implausible(image[step], beta)
        expected = ((1 + alpha) * image[step] - alpha * noise[step]).masked_fill(dropped, -math.inf)
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)


def test_pai_guides_against_its_text_only_stream_while_the_image_stream_is_guided() -> None:
    """The text-only stream (another prompt length, no image: left unchanged) runs between the image stream's steps;
    the image stream keeps its own prompt's image keys. Scores ``gamma s - (gamma - 1) u`` on the plausible tokens."""
    model, make_inputs = sharpened(tiny_llava)
    inputs = make_inputs(PROMPTS)
    gamma, beta = 1.1, 0.1
    params = {"heads_guided": {"alpha": ALPHA, "layers": [0]},
              "pai": {"alpha": 0.0, "gamma": gamma, "beta": beta, "start_layer": 0}}
    tokens, scores = run(model, inputs, "heads_guided+pai", params, STEPS)
    image = released_logits(model, inputs, tokens, [0]).log_softmax(-1)
    for step in range(STEPS):
        u = last_logits(model, text_only(inputs, tokens[:, :step])).log_softmax(-1)
        expected = (gamma * image[step] - (gamma - 1) * u).masked_fill(implausible(image[step], beta), -math.inf)
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)


def test_composes_with_every_decoder_and_leaves_nothing_behind() -> None:
    assert_composes_with_every_decoder("heads_guided", {"alpha": ALPHA, "layers": [0, 1]}, HeadsGuidedAttention,
                                       ("greedy", "vcd", "pai", "opera"))


def test_new_tokens_in_one_call_are_guided_as_one_token_steps() -> None:
    assert_new_tokens_in_one_call_equal_one_at_a_time(lambda model: guide_attention_by_heads(model, alpha=ALPHA,
                                                                                             layers=[0, 1]))


def test_opera_without_penalty_and_rollback_is_beam_search_under_the_guidance() -> None:
    assert_opera_without_penalty_and_rollback_is_beam_search("heads_guided", {"alpha": 8.0, "layers": [0, 1]},
                                                             PROMPTS[2])


def test_runs_in_the_runner_with_its_published_defaults(tmp_path) -> None:
    assert_runs_in_the_runner("heads_guided+sample", tmp_path)


# ----------------------------------------------------------------------------------- bad input


def test_the_model_is_restored_when_the_body_raises() -> None:
    assert_restored_when_the_body_raises(lambda model: guide_attention_by_heads(model, layers=[0, 1]))


def test_bad_settings_raise_clear_errors() -> None:
    model, _ = tiny_llava(0)
    for bad, message in [({"alpha": -0.5}, "alpha must be a number >= 0"),
                         ({"alpha": "0.5"}, "alpha must be a number >= 0"),
                         ({"aggregation": "max"}, r"aggregation must be one of \('mean',\)"),
                         ({"depth": (0.2, 1.5)}, "0 <= start < end <= 1"),
                         ({"layers": [-3]}, "out of range")]:
        with pytest.raises((ValueError, IndexError), match=message), guide_attention_by_heads(model, **bad):
            pass
    with pytest.raises(ValueError, match="Unknown parameter"):
        resolve_method("heads_guided", {"heads_guided": {"guide_range": "5,18"}})
