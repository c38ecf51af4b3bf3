"""The family table beyond the support matrix: image-token counts, masks that are not plain causal, layers
without attention, logit soft-capping and attention sinks, the generic fallback and refused families."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import eahlib as eah
from eahlib.attention import _PADDING_SOURCES
from eahlib.models import FAMILIES, UNSERVED, family_of_model_type, model_family
from eahlib.testing import IMAGE_TOKEN, TINY_MODELS, _clip_vision, _left_pad, _seeded_images, _text_config
from eahlib.testing.families import TINY_FAMILIES, _siglip_vision, tiny_dots3_note, tiny_hy_v4_vl, tiny_qwen4_exp
from tests.conftest import PROMPTS
from tests.test_support_matrix import independent_density

EXPECTED_IMAGE_TOKENS = {"llava": 16, "qwen2_vl": 4, "qwen2_5_vl": 4, "instructblip": 4}
"""Image tokens per prompt of the tiny builders: 8 px / patch 2 (LLaVA), a 4x4 grid merged 2x2
(Qwen), 4 Q-Former queries (InstructBLIP). LLaVA-NeXT's count is asked from the model itself."""


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_image_tokens_are_found_by_id(name: str) -> None:
    model, make_inputs = TINY_MODELS[name](0)
    inputs = make_inputs(PROMPTS)
    counts = eah.image_token_mask(model, inputs["input_ids"]).sum(-1)
    assert torch.equal(counts, (inputs["input_ids"] == IMAGE_TOKEN).sum(-1))
    if name in EXPECTED_IMAGE_TOKENS:
        assert counts.tolist() == [EXPECTED_IMAGE_TOKENS[name]] * len(PROMPTS)
    else:
        assert int(counts[0]) > 16  # any-resolution: base tile + high-resolution tiles + newlines


def captured(model: torch.nn.Module, inputs: dict, layers: list[int]) -> dict[int, torch.Tensor]:
    with eah.capture_attention(model, layers) as capture, torch.no_grad():
        model(**inputs, use_cache=False)
    return {layer: capture.attentions[layer][0] for layer in layers}


def test_paligemma_prefix_has_sinks_at_k_1_only_under_the_mask_aware_baseline() -> None:
    """PaliGemma's prompt is one bidirectional prefix: under the causal baseline no image token clears k = 1
    (each query is assumed to spread over fewer keys than it sees); under the mask's own baseline they do."""
    model, make_inputs = TINY_FAMILIES["paligemma"](0)
    inputs = make_inputs(PROMPTS)
    real, image = inputs["attention_mask"].bool(), eah.image_token_mask(model, inputs["input_ids"])
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    for layer, probs in captured(model, inputs, [0, 1]).items():
        causal = eah.sink_density(probs, image, attention_mask=real, relative_threshold=1.0)
        assert int(causal.sum()) == 0
        assert (profile.density[layer] > 0).all()
    with eah.enhance_attention_heads(model, layer=0, relative_threshold=1.0) as enhanced, torch.no_grad():
        model(**inputs)
    assert (enhanced.chosen_heads[0] >= 0).all()


def test_gemma3_sliding_layer_counts_sinks_outside_the_last_query_window() -> None:
    model, make_inputs = TINY_FAMILIES["gemma3"](0)
    inputs = make_inputs(PROMPTS)
    real = inputs["attention_mask"].bool()
    assert model.config.text_config.layer_types[1] == "sliding_attention"
    probs = captured(model, inputs, [1])[1]
    outside = real & ~(probs[:, :, -1] > 0).any(1)
    assert (outside.sum(-1) > model.config.text_config.sliding_window).all()
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    image = eah.image_token_mask(model, inputs["input_ids"])
    assert (profile.density[1] > 0).any(-1).all()
    assert ((profile.sinks()[1] & outside[:, None]).sum() > 0), "sinks the last query cannot see are still counted"
    assert (profile.sinks()[1] <= image[:, None]).all()


def _two_prompts() -> dict[str, torch.Tensor]:
    return _left_pad([[1, *[IMAGE_TOKEN] * 16, 5, 6, 7, 8, 9], [1, *[IMAGE_TOKEN] * 16, 5, 6]])


def _stock_and_explicit(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        stock = model(**batch).logits
    with eah.enhance_attention_heads(model, layer=1, threshold=1e9), torch.no_grad():
        explicit = model(**batch).logits
    real = batch["attention_mask"].bool()
    return stock[real], explicit[real]


def test_explicit_attention_soft_caps_logits_as_gemma2_does() -> None:
    """PaliGemma 2's Gemma 2 language model soft-caps its attention logits."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    text = _text_config(head_dim=8, attn_logit_softcapping=2.0, query_pre_attn_scalar=8) | {"model_type": "gemma2"}
    config = PaliGemmaConfig(text_config=text, vision_config=_siglip_vision(), image_token_id=IMAGE_TOKEN,
                             projection_dim=32)
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(config).eval()
    batch = _left_pad([[*[IMAGE_TOKEN] * 16, 1, 5, 6, 7, 8, 9], [*[IMAGE_TOKEN] * 16, 1, 5, 6]])
    batch["pixel_values"] = _seeded_images([[1], [2]], (3, 8, 8), 0)
    stock, explicit = _stock_and_explicit(model, batch)
    torch.testing.assert_close(explicit, stock, rtol=1e-5, atol=1e-5)


def test_explicit_attention_spreads_rows_over_per_head_sinks() -> None:
    """A gpt-oss language model: each head's row also spreads over a learned sink logit."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    text = _text_config(head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
                        layer_types=["sliding_attention", "full_attention"]) | {"model_type": "gpt_oss"}
    config = LlavaConfig(text_config=text, vision_config=_clip_vision(), image_token_id=IMAGE_TOKEN)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.sinks.normal_(0.0, 2.0)
    batch = _two_prompts()
    batch["pixel_values"] = _seeded_images([[1], [2]], (3, 8, 8), 0)
    stock, explicit = _stock_and_explicit(model, batch)
    torch.testing.assert_close(explicit, stock, rtol=1e-5, atol=1e-5)
    probs = captured(model, batch, [1])[1]
    row_sums = probs.sum(-1)[batch["attention_mask"].bool()[:, None].expand(-1, 4, -1)]
    assert (row_sums < 1 - 1e-3).all()


@pytest.mark.parametrize("builder", [tiny_hy_v4_vl, tiny_dots3_note])
def test_attention_reads_only_the_keys_a_sparse_attention_layer_selected(builder: Callable[..., tuple]) -> None:
    """DSA layers (Hy4: eager only; dots3: SDPA) mask the keys their indexer did not pick only under "eager"/"sdpa";
    under eahlib's attention they pass the top-k selection as ``indices``, which must restrict every query (in the
    explicit path and in the SDPA pass-through) just as the stock mask does."""
    model, make_inputs = builder(0, index_topk=4)
    inputs = make_inputs(PROMPTS)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        stock = model(**inputs).logits
    with eah.enhance_attention_heads(model, layer=1, threshold=1e9), torch.no_grad():
        explicit = model(**inputs).logits
    torch.testing.assert_close(explicit[real], stock[real], rtol=1e-5, atol=1e-5)
    seen = (captured(model, inputs, [0])[0] > 0).sum(-1).transpose(1, 2)[real]  # [real queries, heads]
    assert int(seen.max()) == 4 and int(real.sum(-1).max()) > 4


@pytest.mark.parametrize(("builder", "sparsity"), [(tiny_qwen4_exp, {"indexer_budget": 4}),
                                                   (tiny_hy_v4_vl, {"index_topk": 4})])
def test_sparse_attention_layers_take_the_real_tokens_from_the_padding_mask(
    builder: Callable[..., tuple], sparsity: dict[str, int]
) -> None:
    """A sparse-attention indexer (Qwen4-Exp's QSA, Hy4's DSA) may leave a token's own key out of its selection, so
    the mask's diagonal no longer tells the real tokens: the sinks of the profile and of EAH must still equal the
    count over the padding mask's real tokens."""
    model, make_inputs = builder(0, **sparsity)
    inputs = make_inputs(PROMPTS)
    real, image = inputs["attention_mask"].bool(), eah.image_token_mask(model, inputs["input_ids"])
    layers = eah.models.attention_layers(model)
    probs = captured(model, inputs, layers)
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    blind = [bool((real & ~(probs[layer].diagonal(dim1=-2, dim2=-1) > 0).any(1)).any()) for layer in layers]
    assert any(blind), "some real token does not see itself"
    for row, layer in enumerate(layers):
        want = torch.from_numpy(independent_density(probs[layer], real, image, 1.0))
        assert torch.equal(profile.density[row], want), f"layer {layer}"
    assert int(profile.density.sum()) > 0
    with eah.enhance_attention_heads(model, layer=layers[-1], relative_threshold=1.0) as enhanced, torch.no_grad():
        model(**inputs)
    assert torch.equal(enhanced.densities[0], profile.density[-1])
    with pytest.raises(RuntimeError, match="body"), eah.enhance_attention_heads(model, layer=layers[-1]):
        raise RuntimeError("body")
    assert not any(eah.models.attention_module(model, layer) in _PADDING_SOURCES for layer in layers)


def test_layers_of_different_head_counts_are_profiled_one_head_count_at_a_time() -> None:
    """dots3's sliding-window layers have their own head count (64 against 128 in the checkpoint): the profile
    says so instead of failing to stack them; each group profiles, and EAH works on either."""
    model, make_inputs = tiny_dots3_note(0, sliding_heads=2)
    inputs = make_inputs(PROMPTS)
    with pytest.raises(ValueError, match=r"different head counts \(\{0: 4, 1: 2\}.*layers=, e.g. \[0\]"):
        eah.sink_profile(model, relative_threshold=1.0, **inputs)
    for layer, heads in ((0, 4), (1, 2)):
        profile = eah.sink_profile(model, relative_threshold=1.0, layers=[layer], **inputs)
        assert profile.density.shape == (1, len(PROMPTS), heads)
        with eah.enhance_attention_heads(model, layer=layer, relative_threshold=1.0) as enhanced, torch.no_grad():
            model(**inputs)
        assert torch.equal(enhanced.densities[0], profile.density[0])
        assert eah.head_count(model, layer) == heads
        with pytest.raises(ValueError, match=rf"indices in 0..{heads - 1}"), eah.ablate_heads(model, {layer: [heads]}):
            pass
    assert eah.head_count(model) == 4


def test_head_ablation_splits_the_output_projection_into_value_heads() -> None:
    """MLA (Hy4): the output projection reads one ``v_head_dim`` value vector per head (not ``head_dim``, the rotary
    part of a query): ablating head 1 equals zeroing its columns of ``o_proj``."""
    model, make_inputs = tiny_hy_v4_vl(0)
    inputs = make_inputs(PROMPTS)
    projection = eah.models.attention_module(model, 0).o_proj
    width = model.config.text_config.v_head_dim
    assert width != model.config.text_config.head_dim and projection.in_features == 4 * width
    with eah.ablate_heads(model, {0: [1]}), torch.no_grad():
        ablated = model(**inputs).logits
    saved = projection.weight.detach().clone()
    with torch.no_grad():
        projection.weight[:, width : 2 * width] = 0
        manual = model(**inputs).logits
        projection.weight.copy_(saved)
    torch.testing.assert_close(ablated, manual)


def test_a_layer_without_attention_is_refused_with_the_attention_layers() -> None:
    model, make_inputs = TINY_FAMILIES["lfm2_vl"](0)
    layers = eah.models.attention_layers(model)
    conv = [i for i in range(len(eah.decoder_layers(model))) if i not in layers]
    assert layers and conv
    with pytest.raises(ValueError, match=rf"attention layers are \[{', '.join(map(str, layers))}\]"):
        with eah.enhance_attention_heads(model, layer=conv[0]):
            pass
    profile = eah.sink_profile(model, relative_threshold=1.0, **make_inputs(PROMPTS))
    assert profile.layers == layers


def test_a_linear_attention_module_at_the_attention_attribute_is_not_an_attention_layer() -> None:
    """GLM-5.3 keeps its KDA linear-attention modules at ``self_attn`` too; the row's ``linear_layer_types`` leaves
    those layers out (their attention never reaches eahlib's attention function)."""
    model, make_inputs = TINY_FAMILIES["glm5_next"](0)
    assert all(hasattr(layer, "self_attn") for layer in eah.decoder_layers(model))
    assert model.config.text_config.layer_types == ["linear_attention", "indexed_attention"]
    assert eah.models.attention_layers(model) == [1]
    with pytest.raises(ValueError, match=r"attention layers are \[1\]"):
        eah.models.attention_module(model, 0)
    profile = eah.sink_profile(model, relative_threshold=1.0, **make_inputs(PROMPTS))
    assert profile.layers == [1]


def test_an_unknown_model_of_the_standard_layout_warns_with_the_row_to_add() -> None:
    model, make_inputs = TINY_MODELS["llava"](0)
    subclass = type("NewVlmForConditionalGeneration", (type(model),), {})
    model.__class__ = subclass
    with pytest.warns(UserWarning, match=r"add this row to eahlib.models.FAMILIES.*ModelFamily\('llava'"):
        assert model_family(model).name == "generic"
    profile = eah.sink_profile(model, relative_threshold=1.0, **make_inputs(PROMPTS))
    assert int(profile.density.sum()) > 0


def test_unserved_model_types_are_refused_before_any_download() -> None:
    for unserved in UNSERVED:
        for model_type in unserved.model_types:
            with pytest.raises(ValueError, match="eahlib cannot serve"):
                family_of_model_type(model_type)
    assert family_of_model_type("gemma3").name == "gemma3"
    assert family_of_model_type("some_future_vlm").name == "generic"
    assert len({t for f in FAMILIES for t in f.model_types}) == sum(len(f.model_types) for f in FAMILIES)
