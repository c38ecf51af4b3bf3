"""The EAH intervention on a tiny LLaVA: definition, equivalences, batching, cache, hygiene."""

from __future__ import annotations

import warnings
from unittest import mock

import pytest
import torch

import eahlib as eah
import eahlib.attention as attention
from eahlib.eah import EnhancedHeads
from eahlib.metrics import sink_criterion
from eahlib.models import attention_module, decoder
from eahlib.testing import IMAGE, tiny_llava, tiny_qwen2_vl
from tests.conftest import PROMPTS

SINKS = {"relative_threshold": 1.0}
"""A criterion under which the random tiny models do have sinks, so EAH acts."""


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def greedy(model, inputs, **kwargs) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=6, do_sample=False, **kwargs)


def real_rows(tensor: torch.Tensor, inputs) -> torch.Tensor:
    return tensor[inputs["attention_mask"].bool()]


def test_no_op_threshold_equals_stock_model(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    stock_logits, stock_tokens = logits(model, inputs), greedy(model, inputs)
    with eah.enhance_attention_heads(model, layer=1, threshold=1e9) as h:
        eah_logits, eah_tokens = logits(model, inputs), greedy(model, inputs)
    assert all(int(c.max()) == -1 for c in h.chosen_heads)
    diff = (real_rows(eah_logits, inputs) - real_rows(stock_logits, inputs)).abs().max()
    assert float(diff / real_rows(stock_logits, inputs).abs().max()) <= 1e-5
    assert torch.equal(eah_tokens, stock_tokens)


@pytest.mark.parametrize("build", [tiny_llava, tiny_qwen2_vl], ids=["llava", "qwen2_vl_gqa"])
def test_every_head_gets_the_chosen_heads_attention(build) -> None:
    model, make_inputs = build(0)
    inputs = make_inputs(PROMPTS)
    layers = [0, 1]
    with eah.capture_attention(model, layers) as stock:
        logits(model, inputs)
    with eah.enhance_attention_heads(model, layer=1, **SINKS) as h, eah.capture_attention(model, layers) as cap:
        logits(model, inputs)
    chosen = h.chosen_heads[0]
    assert (chosen >= 0).all()
    target = cap.attentions[1][0]
    for b, head in enumerate(chosen.tolist()):
        assert torch.equal(target[b], target[b, head].expand_as(target[b]))
    assert torch.equal(cap.attentions[0][0], stock.attentions[0][0])  # the layer before is untouched
    # the source head is the densest one of the stock attention, computed independently
    image = eah.image_token_mask(model, inputs["input_ids"])
    density = eah.sink_density(stock.attentions[1][0], image, attention_mask=inputs["attention_mask"], **SINKS)
    assert torch.equal(h.densities[0], density)
    assert torch.equal(chosen, density.argmax(-1))
    assert torch.allclose(target[:, 0], stock.attentions[1][0][torch.arange(len(chosen)), chosen])


def test_untouched_layers_keep_sdpa(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    seen: list[torch.nn.Module] = []

    def spy(module, *args, **kwargs):
        seen.append(module)
        return sdpa(module, *args, **kwargs)

    sdpa = attention.sdpa_attention_forward
    with mock.patch.object(attention, "sdpa_attention_forward", spy), eah.enhance_attention_heads(model, layer=1, **SINKS):
        logits(model, inputs)
    assert seen == [attention_module(model, 0)]


def test_batch_outputs_equal_single_sample_outputs(llava) -> None:
    model, make_inputs = llava
    with eah.enhance_attention_heads(model, layer=1, **SINKS) as h:
        batched = greedy(model, make_inputs(PROMPTS))
        singles = [greedy(model, make_inputs([p])) for p in PROMPTS]
    width = batched.shape[1]
    for row, single in zip(batched, singles):
        assert torch.equal(row[width - single.shape[1]:], single[0])
    assert torch.equal(h.chosen_heads[0], torch.cat(h.chosen_heads[1:]))
    assert (h.chosen_heads[0] >= 0).all()


def test_intervention_changes_outputs(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    stock = logits(model, inputs)
    with eah.enhance_attention_heads(model, layer=0, **SINKS):
        enhanced = logits(model, inputs)
    assert not torch.allclose(real_rows(stock, inputs), real_rows(enhanced, inputs))


def test_kv_cache_decode_off_matches_manual_loop(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS[:1])
    with eah.enhance_attention_heads(model, layer=1, **SINKS):
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True)
        with torch.no_grad():
            prefill = model(**inputs, use_cache=True)
    cache, step_logits = prefill.past_key_values, [prefill.logits[:, -1]]
    tokens = inputs["input_ids"]
    with torch.no_grad():  # later steps outside the context: decode="off" leaves them untouched
        for _ in range(4):
            token = step_logits[-1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, token], 1)
            step = model(input_ids=token, cache=cache, use_cache=True,
                         attention_mask=torch.ones_like(tokens))
            cache = step.past_key_values
            step_logits.append(step.logits[:, -1])
    for want, got in zip(step_logits, out.scores):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_kv_cache_decode_reuse_matches_full_recompute(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS[:1])
    with eah.enhance_attention_heads(model, layer=1, decode="reuse", **SINKS) as h:
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True)
    head = int(h.chosen_heads[0][0])
    assert len(h.chosen_heads) == 1 and head >= 0
    sequence = out.sequences
    prompt_length = inputs["input_ids"].shape[1]
    # reuse = the prefill head's rows broadcast at every position: a full pass with that head forced
    with eah.enhance_attention_heads(model, layer=1, head=head) as forced, torch.no_grad():
        full = model(input_ids=sequence[:, :-1], pixel_values=inputs["pixel_values"],
                     attention_mask=torch.ones_like(sequence[:, :-1])).logits
    assert int(forced.chosen_heads[0][0]) == head
    for step, got in enumerate(out.scores):
        torch.testing.assert_close(got, full[:, prompt_length - 1 + step], rtol=1e-4, atol=1e-5)
    with eah.enhance_attention_heads(model, layer=1, decode="off", **SINKS):
        off = model.generate(**inputs, max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert not torch.allclose(off.scores[-1], out.scores[-1])


def hook_state(model) -> list[tuple[list[int], list[int]]]:
    """The forward (pre-)hook handles of every module, including transformers' own."""
    return [(list(m._forward_pre_hooks), list(m._forward_hooks)) for m in model.modules()]


def assert_clean(model, hooks_before=None) -> None:
    assert model.config.text_config._attn_implementation == "sdpa"
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert not any(module in attention._LAYER_HOOKS for module in model.modules())
    assert model not in attention._ACTIVE_MODELS
    if hooks_before is not None:
        assert hook_state(model) == hooks_before


def test_restores_model_after_normal_exit(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    before = logits(model, inputs)
    hooks_before = hook_state(model)
    with eah.enhance_attention_heads(model, layer=1, **SINKS):
        greedy(model, inputs)
    assert_clean(model, hooks_before)
    assert torch.equal(logits(model, inputs), before)


def test_restores_model_when_body_raises(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    before = logits(model, inputs)
    hooks_before = hook_state(model)
    with pytest.raises(KeyError, match="boom"):
        with eah.enhance_attention_heads(model, layer=1, **SINKS):
            with eah.capture_attention(model, [0, 1]):
                logits(model, inputs)
                raise KeyError("boom")
    assert_clean(model, hooks_before)
    assert torch.equal(logits(model, inputs), before)


def test_restores_model_when_a_hook_raises_mid_forward(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    before = logits(model, inputs)
    hooks_before = hook_state(model)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs["input_ids"])  # computed outside: ids unknown inside
    with pytest.raises(ValueError, match="inputs_embeds only"):
        with eah.enhance_attention_heads(model, layer=1, **SINKS):
            model.model.language_model(inputs_embeds=embeds)
    assert_clean(model, hooks_before)
    assert torch.equal(logits(model, inputs), before)


def test_nesting_two_eah_contexts_raises_and_keeps_the_outer(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    with eah.enhance_attention_heads(model, layer=1, **SINKS) as outer:
        with pytest.raises(RuntimeError, match="already active"):
            with eah.enhance_attention_heads(model, layer=0):
                pass
        logits(model, inputs)
    assert len(outer.chosen_heads) == 1
    assert_clean(model)


def test_sample_without_image_tokens_is_unchanged() -> None:
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs([[5, 6, 7], [IMAGE, 8, 9]])
    inputs["input_ids"][0, inputs["input_ids"][0] == 98] = 3  # first sample: no image tokens
    inputs["pixel_values"] = inputs["pixel_values"][1:]
    stock = logits(model, inputs)
    with eah.enhance_attention_heads(model, layer=0, **SINKS) as h:
        enhanced = logits(model, inputs)
    assert h.chosen_heads[0][0] == -1 and h.chosen_heads[0][1] >= 0
    torch.testing.assert_close(enhanced[0], stock[0])
    only_text = {"input_ids": inputs["input_ids"][:1], "attention_mask": inputs["attention_mask"][:1]}
    with eah.enhance_attention_heads(model, layer=0, **SINKS), pytest.warns(UserWarning, match="without image tokens"):
        logits(model, only_text)


@pytest.mark.parametrize("head", [0, 3, "sparsest", "random"])
def test_forced_head_choices(llava, head) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    runs = []
    for _ in range(2):
        with eah.enhance_attention_heads(model, layer=1, head=head, seed=7, **SINKS) as h:
            logits(model, inputs)
        runs.append(h.chosen_heads[0])
    assert torch.equal(runs[0], runs[1])  # random is seeded
    if isinstance(head, int):
        assert runs[0].tolist() == [head] * 3
    elif head == "sparsest":
        assert torch.equal(runs[0], h.densities[0].argmin(-1))


def test_head_choice_rules() -> None:
    hook = EnhancedHeads(1, sink_criterion(), "causal", "densest", "off", False, 0, tracker=None)
    density = torch.tensor([[3, 5, 5, 0], [0, 0, 0, 0], [4, 1, 1, 1]])
    has_image = torch.tensor([True, True, False])
    assert hook._choose(density, has_image).tolist() == [1, -1, -1]  # ties -> lowest; 0 sinks -> none
    release = EnhancedHeads(1, sink_criterion(), "release", "densest", "off", True, 0, tracker=None)
    assert release._choose(density, torch.ones(3, dtype=torch.bool)).tolist() == [1, -1, -1]  # head 0 never


def test_presets_and_overrides(llava) -> None:
    model, make_inputs = llava
    with eah.enhance_attention_heads(model, preset="paper") as h:
        assert (h.layer, h.criterion.value, h.normalizer, h.head0_never_source) == (1, 8e-4, "causal", False)
    with eah.enhance_attention_heads(model, preset="release", layer=1, relative_threshold=2.0) as h:
        assert (h.layer, h.criterion.kind, h.normalizer, h.head0_never_source) == (1, "relative", "release", True)
        logits(model, make_inputs(PROMPTS))
    assert h.settings()["relative_threshold"] == 2.0
    with pytest.raises(IndexError, match="out of range: the language model has 2 layers"):
        with eah.enhance_attention_heads(model, preset="release"):
            pass


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layer": 5}, IndexError, "out of range"),
        ({"layer": 1, "head": 4}, ValueError, "head=4 is out of range"),
        ({"layer": 1, "head": "best"}, ValueError, "head must be"),
        ({"layer": 1, "threshold": -1.0}, ValueError, "non-negative"),
        ({"layer": 1, "threshold": float("nan")}, ValueError, "non-negative"),
        ({"layer": 1, "threshold": 1e-3, "relative_threshold": 1.0}, ValueError, "not both"),
        ({"layer": 1, "decode": "always"}, ValueError, "decode must be"),
        ({"preset": "fast"}, ValueError, "Unknown preset"),
    ],
)
def test_bad_arguments(llava, kwargs, error, message) -> None:
    model, _ = llava
    with pytest.raises(error, match=message):
        with eah.enhance_attention_heads(model, **kwargs):
            pass
    assert_clean(model)


def test_unknown_family_and_unsupported_attention(llava) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4))
    with pytest.raises(ValueError, match="Unsupported model class LlamaForCausalLM"):
        with eah.enhance_attention_heads(text_only, layer=0):
            pass
    model, _ = llava
    model.config.text_config._attn_implementation_internal = "flex_attention"
    with pytest.raises(ValueError, match="cannot provide attention probabilities"):
        with eah.enhance_attention_heads(model, layer=1):
            pass
    assert model.config.text_config._attn_implementation == "flex_attention"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(llava, dtype) -> None:
    model, make_inputs = llava
    model.to(dtype)
    inputs = make_inputs(PROMPTS)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with eah.enhance_attention_heads(model, layer=1, **SINKS) as h, eah.capture_attention(model, 1) as cap:
        out = logits(model, inputs)
        tokens = greedy(model, inputs)
    assert torch.isfinite(real_rows(out, inputs)).all()
    assert (h.chosen_heads[0] >= 0).all() and tokens.shape == (3, inputs["input_ids"].shape[1] + 6)
    assert cap.attentions[1][0].dtype == torch.float32


def test_sampling_and_beam_search(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS[:2])
    with eah.enhance_attention_heads(model, layer=1, decode="reuse", **SINKS) as h:
        torch.manual_seed(0)
        sampled = model.generate(**inputs, max_new_tokens=4, do_sample=True, top_p=0.9)
        beams = model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False)
    assert sampled.shape[0] == 2 and beams.shape[0] == 2
    assert h.chosen_heads[1].shape == (6,)  # one per beam
    assert torch.equal(h.chosen_heads[1].view(2, 3), h.chosen_heads[0].repeat_interleave(3).view(2, 3))


def test_eager_base_implementation() -> None:
    model, make_inputs = tiny_llava(0)
    model.set_attn_implementation("eager")
    inputs = make_inputs(PROMPTS)
    stock = logits(model, inputs)
    with eah.enhance_attention_heads(model, layer=1, threshold=1e9):
        same = logits(model, inputs)
    torch.testing.assert_close(real_rows(same, inputs), real_rows(stock, inputs))
    assert model.config.text_config._attn_implementation == "eager"


def test_decoder_hook_is_the_only_tracker_state(llava) -> None:
    model, _ = llava
    with eah.enhance_attention_heads(model, layer=1):
        assert len(decoder(model)._forward_pre_hooks) == 1
        assert len(model.get_input_embeddings()._forward_pre_hooks) == 1
        assert model.config.text_config._attn_implementation == "eahlib_sdpa"
        assert model.config.vision_config._attn_implementation == "sdpa"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_clean(model)
