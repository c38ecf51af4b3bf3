"""VAF (ClearSight) by value: the cached generation under the intervention equals generation without cache under
attention written here, the released formula on the raw logits (``QK^T / sqrt(d)`` scaled, then the mask), in
padded batches, with GQA, at every decoding step, under beam search, sampling and the contrastive decoders, and on
every family."""

from __future__ import annotations

import copy
import math
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import eahlib as eah
from eahlib.attention import AttentionCall, LayerHook, active_hooks, layer_hooks, track_prompt_keys
from eahlib.interventions.vaf import DEPTH, VisualAmplification, amplify_visual_attention, amplify_visual_logits
from eahlib.methods import resolve_method
from eahlib.methods.vcd import diffusion_noise
from eahlib.models import attention_layers, attention_module, layers_at_depth, text_config
from eahlib.testing import BOS, IMAGE, IMAGE_TOKEN, TINY_MODELS, tiny_llava, tiny_llava_pipeline
from eahlib.testing.families import TINY_FAMILIES, tiny_minimax_m3_vl
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
    focused,
    reference_attention,
    repeat_heads,
    sharpened,
    uncached_logits,
)
from tests.test_method_values import implausible, last_logits, run, text_only

STRONG = {"enhance": 2.0, "suppress": 0.5}
"""Factors whose effect on the tiny models is far above the tolerance."""


def deep(builder, layers: int) -> nn.Module:
    """The tiny model of ``builder`` with ``layers`` language-model layers."""
    model, _ = builder(0)
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = layers
    if getattr(config.text_config, "layer_types", None) is not None:
        config.text_config.layer_types = (config.text_config.layer_types * layers)[:layers]
    return type(model)(config).eval()


# ------------------------------------------------------------------------------------------ layers


def test_published_layers_on_32_layers_and_the_rule_at_other_depths() -> None:
    released = [i for i in range(32) if i > 8 and i < 15]  # infer_pope.py:54
    assert layers_at_depth(deep(tiny_llava, 32), DEPTH) == released
    assert resolve_method("vaf").settings()["vaf"] == {"enhance": 1.15, "suppress": 0.95, "depth": [9 / 32, 15 / 32],
                                                      "layers": None}
    assert layers_at_depth(deep(tiny_llava, 30), DEPTH) == [8, 9, 10, 11, 12, 13]  # the SmolLM2 organism's depth
    assert layers_at_depth(deep(tiny_llava, 40), DEPTH) == [11, 12, 13, 14, 15, 16, 17, 18]
    two = deep(tiny_llava, 2)  # middles at 1/4 and 3/4
    assert layers_at_depth(two, DEPTH) == [0]  # no middle inside: the layer nearest the slice's middle
    assert layers_at_depth(two, (0.6, 0.7)) == [1] and layers_at_depth(two, (0.0, 0.2)) == [0]
    assert layers_at_depth(two, (0.25, 0.75)) == [0] and layers_at_depth(two, (0.0, 1.0)) == [0, 1]


def test_depth_counts_attention_layers_only_on_a_hybrid_model() -> None:
    model = deep(TINY_FAMILIES["lfm2_vl"], 8)  # conv, attention, conv, attention, ...
    assert attention_layers(model) == [1, 3, 5, 7]
    assert layers_at_depth(model, (0.25, 0.75)) == [3, 5]
    assert layers_at_depth(model, DEPTH) == [3]
    with amplify_visual_attention(model) as hook:
        assert list(active_hooks(model)) == [3] and active_hooks(model)[3] == [hook]


# ------------------------------------------------------------------------------ the released formula


def released_vaf(sequence: FullSequence, layers: list[int], enhance: float, suppress: float,
                 first_row: str = "after_image", last_row: int | None = None):
    """``AttnAdapter.forward`` on a whole sequence: logits ``QK^T / sqrt(d)``, then rows ``[end, last_row)`` (the
    rows after the image block ``[start, end)``; ``first_row="all"``: from row 0) times ``enhance`` on the image
    block and ``suppress`` on the tokens before it (from the first real token), then the mask, then the softmax."""

    def vaf_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        weights = torch.matmul(query, repeat_heads(key, module).transpose(2, 3)) * scaling
        if module.layer_idx in layers:
            for b in range(weights.shape[0]):
                start, end = sequence.image_span(b)
                rows = slice(end if first_row == "after_image" else 0, last_row)
                weights[b, :, rows, start:end] *= enhance
                weights[b, :, rows, sequence.first_real(b):start] *= suppress
        return eager_output(module, weights + attention_mask, value)

    return vaf_attention


def released_logits(model, inputs, tokens, layers, **variant) -> torch.Tensor:
    sequence = FullSequence(model)
    try:
        with reference_attention(model, released_vaf(sequence, layers, **{**STRONG, **variant})):
            return uncached_logits(model, inputs, tokens)
    finally:
        sequence.handle.remove()


@pytest.mark.parametrize("name", ["llava", "qwen2_vl"], ids=["llava", "qwen2_vl_gqa"])
def test_each_step_equals_the_released_scaling_before_the_mask(name: str) -> None:
    """Left-padded prompts of three lengths; layer 0 edited (its rows feed layer 1), layer 1 not; every decoding
    step's row edited."""
    model, make_inputs = sharpened(TINY_MODELS[name])
    inputs = make_inputs(PROMPTS)
    with amplify_visual_attention(model, layers=[0], **STRONG):
        tokens, logits = cached_run(model, inputs)
    expected = released_logits(model, inputs, tokens, [0])
    torch.testing.assert_close(logits, expected, **TOLERANCE)
    prompt_length = inputs["input_ids"].shape[1]
    for other in (released_logits(model, inputs, tokens, [0, 1]),  # the layers matter
                  released_logits(model, inputs, tokens, [0], first_row="all"),  # only the rows after the image
                  uncached_logits(model, inputs, tokens)):  # stock
        assert not torch.allclose(other, expected, **TOLERANCE)
    unedited_steps = released_logits(model, inputs, tokens, [0], last_row=prompt_length)
    for step in range(1, STEPS):  # each decoding step's row is edited
        assert not torch.allclose(unedited_steps[step], expected[step], **TOLERANCE)


def test_scaling_the_masked_logits_equals_scaling_then_masking() -> None:
    """On hand-made logits: masked keys stay masked, padding rows and columns too, and every factor lands where the
    rows, image and system keys say."""
    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 3, 5, 6, generator=generator) * 4
    visible = torch.ones(2, 5, 6, dtype=torch.bool).tril(1)
    visible[1, :, 0] = False  # sample 1: key 0 is padding
    minimum = torch.finfo(torch.float32).min
    mask = torch.where(visible, 0.0, minimum)[:, None]
    image = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 0]], dtype=torch.bool)  # key 4: hidden from row 2
    system = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    rows = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    factor = torch.ones(2, 3, 5, 6)
    for b in range(2):
        for i in range(5):
            for j in range(6):
                if rows[b, i]:
                    factor[b, :, i, j] = 1.3 if image[b, j] else 0.7 if system[b, j] else 1.0
    edited = amplify_visual_logits(raw + mask, rows, image, system, visible, 1.3, 0.7)
    scale_then_mask = raw * factor + mask
    torch.testing.assert_close(edited.softmax(-1), scale_then_mask.softmax(-1), rtol=1e-6, atol=0)
    assert torch.equal(edited[~visible[:, None].expand_as(edited)], (raw + mask)[~visible[:, None].expand_as(raw)])
    assert not torch.allclose(edited.softmax(-1), (raw + mask).softmax(-1))
    per_head = visible[:, None].repeat(1, 3, 1, 1)  # a block-sparse layer's heads each keep their own keys
    per_head[:, 1, :, 2] = False
    head_mask = torch.where(per_head, 0.0, minimum)
    edited = amplify_visual_logits(raw + head_mask, rows, image, system, per_head, 1.3, 0.7)
    torch.testing.assert_close(edited.softmax(-1), (raw * factor + head_mask).softmax(-1), rtol=1e-6, atol=0)
    assert torch.equal(edited[~per_head], (raw + head_mask)[~per_head])


def test_a_sample_in_a_padded_batch_equals_it_alone() -> None:
    assert_a_padded_sample_equals_it_alone(lambda model: amplify_visual_attention(model, layers=[0, 1], **STRONG))


# --------------------------------------------------------------------------------- every family


def vaf_of_the_sequence(model, enhance: float, suppress: float):
    """VAF read off the sequence's own ids: per sample, the rows after its last image token; image keys times
    ``enhance``, its real keys before the first image token times ``suppress``, where the row sees them."""

    def edit(call, ids, real):
        scores = call.scores.clone()
        queries, keys = scores.shape[-2:]
        first_query = ids.shape[1] - queries  # the call's queries are the sequence's last tokens, its keys too
        image = eah.image_token_mask(model, ids) & real
        for b in range(scores.shape[0]):
            positions = image[b].nonzero()[:, 0]
            if not len(positions):
                continue
            system = real[b].clone()
            system[int(positions.min()):] = False
            after = max(int(positions.max()) + 1 - first_query, 0)  # the first query row after the image
            for chosen_keys, factor in ((image[b, -keys:], enhance), (system[-keys:], suppress)):
                chosen = call.visible[b, after:] & chosen_keys  # [rows, k]
                block = scores[b, :, after:]
                block[:, chosen] = block[:, chosen] * factor
        return scores

    return edit


def vaf_checked(model, make_inputs, prompts, layers, steps: int = STEPS) -> None:
    assert_each_sample_equals_its_full_forwards(
        model, make_inputs, prompts, lambda: amplify_visual_attention(model, layers=layers, **STRONG), layers,
        lambda prompt_length: vaf_of_the_sequence(model, **STRONG), steps)


@pytest.mark.parametrize("name", sorted(TINY_FAMILIES))
def test_every_family_each_step_equals_the_edit_of_a_full_forward(name: str) -> None:
    """Each sample's full forwards; a family whose stock model is not its full forwards (the reason checked), the
    cached run of the batch with the edit written here."""
    model, make_inputs = sharpened(TINY_FAMILIES[name])
    layers = attention_layers(model)
    assert_every_family_equals_its_reference(
        name, model, make_inputs, lambda: amplify_visual_attention(model, layers=layers, **STRONG), layers,
        lambda prompt_length: vaf_of_the_sequence(model, **STRONG))


class LogitsSeen(LayerHook):
    """Records the logits each call's softmax gets and the keys each head attends (an observer: it runs after the
    modifying hooks)."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []
        self.attended: list[torch.Tensor] = []

    def adjust_scores(self, call: AttentionCall) -> torch.Tensor:
        self.logits.append(call.scores.clone())
        self.attended.append(call.attended_by_head.expand_as(call.scores))
        return call.scores


@pytest.mark.parametrize("builder", [TINY_FAMILIES["mistral_large4"], partial(tiny_minimax_m3_vl, index_topk_blocks=2)],
                         ids=["dsa_per_query", "block_sparse_per_head"])
def test_the_keys_a_sparse_layer_left_out_keep_their_masked_logits(builder) -> None:
    """A sparse layer's indexer leaves image keys out of some rows after the image (in some heads): their logits stay
    exactly as the mask left them, while the attended ones are scaled."""
    model, make_inputs = builder(0)
    inputs = make_inputs(FAMILY_PROMPTS)
    seen = LogitsSeen()
    with layer_hooks(model, {0: seen}), torch.no_grad():
        model(**inputs)
        with amplify_visual_attention(model, layers=[0], **STRONG):
            model(**inputs)
    (stock, edited), attended = seen.logits, seen.attended[1]
    image = eah.image_token_mask(model, inputs["input_ids"])[:, None, None, :].expand_as(stock)
    assert (image & ~attended).any() and torch.equal(edited[~attended], stock[~attended])
    assert not torch.equal(edited[attended & image], stock[attended & image])


def test_a_sliding_window_layer_edits_the_image_keys_it_still_sees_at_each_step() -> None:
    """Gemma 3's second layer sees the last 8 tokens: with the image at the prompt's end, each decoding step still
    sees image tokens, which sit at other cache positions than in the prompt."""
    model, make_inputs = sharpened(TINY_FAMILIES["gemma3"])
    assert text_config(model).layer_types[1] == "sliding_attention"
    vaf_checked(model, make_inputs, [[BOS, 5, 6, 7, 8, IMAGE, 9], [BOS, 10, IMAGE]], [1], steps=4)


@pytest.mark.parametrize("name", sorted(TINY_FAMILIES))
def test_neutral_factors_are_the_stock_model_bit_for_bit(name: str) -> None:
    model, make_inputs = sharpened(TINY_FAMILIES[name])
    inputs = make_inputs(FAMILY_PROMPTS)
    stock_tokens, stock = cached_run(model, inputs)
    with amplify_visual_attention(model, enhance=1.0, suppress=1.0, layers=attention_layers(model)):
        tokens, logits = cached_run(model, inputs)
    assert torch.equal(tokens, stock_tokens) and torch.equal(logits, stock)


# ------------------------------------------------------------------------------------- decoders


def test_beam_search_and_sampling_equal_the_released_formula_without_cache() -> None:
    """Beam search and seeded sampling: the same sequences and, at every step, the same logits of every row as
    without cache under the released formula."""
    assert_beam_and_sampling_equal_the_reference_without_cache(
        lambda model: amplify_visual_attention(model, layers=[0, 1], **STRONG),
        lambda sequence, inputs: released_vaf(sequence, [0, 1], **STRONG))


def test_vcd_contrasts_two_streams_each_under_vaf() -> None:
    """``(1 + a) l - a l'`` on the plausible tokens, ``l`` and ``l'`` each from its own stream under VAF (the noised
    image's stream has its own prompt keys and cache)."""
    model, make_inputs = sharpened(tiny_llava)
    focused(model)
    inputs = make_inputs(PROMPTS)
    alpha, beta, seed = 1.0, 0.1, 3
    params = {"vaf": {**STRONG, "layers": [1]}, "vcd": {"alpha": alpha, "beta": beta, "seed": seed}}
    tokens, scores = run(model, inputs, "vaf+vcd", params, STEPS)
    noised = {**inputs, "pixel_values": diffusion_noise(inputs["pixel_values"], 500, seed, batch_size=3)}
    image, noise = (released_logits(model, batch, tokens, [1]) for batch in (inputs, noised))
    for step in range(STEPS):
        dropped = implausible(image[step], beta)
        expected = ((1 + alpha) * image[step] - alpha * noise[step]).masked_fill(dropped, -math.inf)
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)
    assert not torch.equal(run(model, inputs, "vcd", {"vcd": params["vcd"]}, STEPS)[0], tokens)


def test_pai_guides_against_its_text_only_stream_while_vaf_follows_the_image_stream() -> None:
    """The text-only stream (another prompt length, no image) runs between the image stream's steps: the image
    stream's decoding steps must keep its own prompt's keys. Scores ``gamma s - (gamma - 1) u`` on the plausible
    tokens, ``s`` under VAF, ``u`` the text-only prompt's (no image: VAF leaves it unchanged)."""
    model, make_inputs = sharpened(tiny_llava)
    inputs = make_inputs(PROMPTS)
    gamma, beta = 1.1, 0.1
    params = {"vaf": {**STRONG, "layers": [1]}, "pai": {"alpha": 0.0, "gamma": gamma, "beta": beta, "start_layer": 0}}
    tokens, scores = run(model, inputs, "vaf+pai", params, STEPS)
    image = released_logits(model, inputs, tokens, [1]).log_softmax(-1)
    for step in range(STEPS):
        u = last_logits(model, text_only(inputs, tokens[:, :step])).log_softmax(-1)
        expected = (gamma * image[step] - (gamma - 1) * u).masked_fill(implausible(image[step], beta), -math.inf)
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)


FOCUSED = {"enhance": 4.0, "suppress": 0.25, "layers": [0, 1]}
"""Factors that move the focused tiny LLaVA's tokens under most decoders."""


def test_composes_with_every_decoder_and_leaves_nothing_behind() -> None:
    assert_composes_with_every_decoder("vaf", FOCUSED, VisualAmplification, ("greedy", "vcd", "pai", "dola", "opera"))


def test_new_tokens_in_one_call_are_amplified_as_one_token_steps() -> None:
    assert_new_tokens_in_one_call_equal_one_at_a_time(lambda model: amplify_visual_attention(model, layers=[0, 1],
                                                                                             **STRONG))


def test_beam_search_on_instructblip_reads_each_beams_prompt() -> None:
    """InstructBLIP's generate embeds the prompt, then beam search repeats each sample's embeddings once per beam:
    every beam must get its own sample's image keys (the samples' image tokens sit at other padded positions)."""
    model, make_inputs = sharpened(TINY_FAMILIES["instructblip"])
    beams = 2
    with amplify_visual_attention(model, layers=attention_layers(model), **STRONG):
        _, joint = cached_run(model, make_inputs(FAMILY_PROMPTS), num_beams=beams)
        for i, prompt in enumerate(FAMILY_PROMPTS):
            _, alone = cached_run(model, make_inputs([prompt]), num_beams=beams)
            torch.testing.assert_close(joint[:, i * beams:(i + 1) * beams], alone, **TOLERANCE)


def test_opera_without_penalty_and_rollback_is_beam_search_under_vaf() -> None:
    assert_opera_without_penalty_and_rollback_is_beam_search("vaf", FOCUSED, PROMPTS[1])


def test_system_prompt_keys_are_the_chat_templates_tokens_before_the_image(tmp_path) -> None:
    """With a real processor and chat template, the suppressed keys are ``<s> user :``, what precedes the image."""
    model, processor = tiny_llava_pipeline(0)
    processor.tokenizer.padding_side = "left"
    images = [Image.fromarray(np.full((12, 16, 3), 60 * i, dtype=np.uint8)) for i in (1, 2)]
    prompts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                             add_generation_prompt=True) for q in ("Is there a dog?", "Describe it.")]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    with amplify_visual_attention(model, layers=[1]) as hook, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    image, system = hook.prompts.remembered[out.cache]  # remembered while the stream's cache lives
    for ids, keys in zip(inputs["input_ids"], system):
        assert processor.tokenizer.convert_ids_to_tokens(ids[keys].tolist()) == ["<s>", "user", ":"]
    assert torch.equal(image, inputs["input_ids"] == IMAGE_TOKEN)
    assert_runs_in_the_runner("vaf+beam", tmp_path)


# ----------------------------------------------------------------------------------- bad input


def test_the_model_is_restored_when_the_body_raises() -> None:
    assert_restored_when_the_body_raises(lambda model: amplify_visual_attention(model, layers=[0, 1]))


def test_bad_settings_raise_clear_errors() -> None:
    model, _ = tiny_llava(0)
    for bad, message in [({"enhance": 0.0}, "enhance must be a positive number"),
                         ({"suppress": True}, "suppress must be a positive number"),
                         ({"depth": (0.5, 0.2)}, "0 <= start < end <= 1"),
                         ({"depth": (0.5,)}, "two fractions"),
                         ({"layers": [2]}, "out of range"),
                         ({"layers": []}, "non-empty list")]:
        with pytest.raises((ValueError, IndexError), match=message), amplify_visual_attention(model, **bad):
            pass
    with pytest.raises(ValueError, match=r"attention layers are \[1\]"):
        with amplify_visual_attention(TINY_FAMILIES["lfm2_vl"](0)[0], layers=[0]):
            pass
    with pytest.raises(ValueError, match="Unknown parameter"):
        resolve_method("vaf", {"vaf": {"enh_para": 1.2}})


def test_a_decoding_step_without_its_prefill_is_refused() -> None:
    model, make_inputs = tiny_llava(0)
    with track_prompt_keys(model, [1]) as prompts, pytest.raises(RuntimeError, match="without receiving a KV cache"):
        step = AttentionCall(attention_module(model, 1), torch.zeros(1, 4, 1, 3), None, torch.ones(1, 1, 3, dtype=torch.bool),
                             is_prefill=False)
        prompts.keys(step)  # a call whose module saw no cache argument
    inputs = make_inputs(PROMPTS)
    with torch.no_grad():
        cache = model(**inputs, use_cache=True).cache
        with amplify_visual_attention(model, layers=[1]), pytest.raises(RuntimeError, match="prefill this intervention"):
            model(input_ids=torch.tensor([[5], [6], [7]]), cache=cache,
                  attention_mask=torch.cat([inputs["attention_mask"], torch.ones(3, 1, dtype=torch.long)], -1))
