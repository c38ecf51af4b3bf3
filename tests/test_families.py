"""The family table beyond the support matrix: image-token counts, masks that are not plain causal, layers
without attention, logit soft-capping and attention sinks, the generic fallback and refused families."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

import eahlib as eah
from eahlib.attention import _KEY_BLOCK_SIZES, _PADDING_SOURCES, AttentionCall
from eahlib.methods import resolve_method
from eahlib.models import FAMILIES, UNSERVED, family_of_model_type, language_model, model_family, output_embeddings
from eahlib.testing import IMAGE_TOKEN, PAD, TINY_MODELS, _clip_vision, _left_pad, _seeded_images, _text_config
from eahlib.testing.families import (
    TINY_FAMILIES,
    _siglip_vision,
    tiny_dots3_note,
    tiny_hy_v4_vl,
    tiny_minimax_m3_vl,
    tiny_qwen4_exp,
)
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


def test_a_sparse_attention_layer_keeps_its_indexer_selection_under_eahlib() -> None:
    """DeepSeek sparse attention (Mistral Large 4): an indexer keeps each query's top-k keys, and the layer folds
    them into the mask only under the implementations named "eager" and "sdpa"; to eahlib's it hands them as
    ``indices``. Both of eahlib's paths must attend only those keys, as the stock model does."""
    model, make_inputs = TINY_FAMILIES["mistral_large4"](0)
    inputs = make_inputs(PROMPTS)
    real = inputs["attention_mask"].bool()
    topk = model.config.text_config.index_topk
    assert int(real.sum(-1).max()) > topk
    with torch.no_grad():
        stock = model(**inputs).logits
    with eah.attention.eahlib_attention(model), torch.no_grad():
        base = model(**inputs).logits
    torch.testing.assert_close(base[real], stock[real], rtol=1e-5, atol=1e-5)
    stock_real, explicit = _stock_and_explicit(model, inputs)
    torch.testing.assert_close(explicit, stock_real, rtol=1e-5, atol=1e-5)
    for probs in captured(model, inputs, [0, 1]).values():
        kept = (probs > 0).sum(-1).transpose(1, 2)[real]  # [real queries, heads]
        assert int(kept.max()) == topk


def test_the_attention_function_applies_a_sparse_layers_indices() -> None:
    """A sparse-attention layer hands its indexer's top-k ``indices`` to any implementation not named "eager" or
    "sdpa"; eahlib's function (base path and explicit path) attends only those keys, as the masked stock path would."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups, module.training = True, 1, False
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, 6, 4, generator=generator) for _ in range(3))
    causal = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 1, 6, 6)
    indices = torch.stack([torch.randperm(6, generator=generator)[:3] for _ in range(12)]).view(2, 6, 3)
    selected = torch.zeros(2, 6, 6, dtype=torch.bool).scatter(-1, indices, True)
    masked = causal & selected.unsqueeze(1)
    masked[..., 0] = True  # every row keeps a key (the stock path would give NaN rows otherwise)
    indices = torch.cat([indices, torch.zeros(2, 6, 1, dtype=torch.long)], -1)
    want, _ = sdpa_attention_forward(module, query, key, value, masked)
    for name in ("eahlib_sdpa", "eahlib_eager"):
        got, _ = AttentionInterface()[name](module, query, key, value, causal, indices=indices)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_block_sparse_layer_keeps_each_heads_selection_under_eahlib() -> None:
    """MiniMax-M3's lightning indexer keeps, per query and indexer head, its top blocks of keys, and the layer folds
    them into an additive mask only under "eager" and "sdpa"; to eahlib's implementations it hands them as
    ``block_indices``. Both of eahlib's paths attend exactly the keys each head kept, as the stock model does: the
    pass-through bit for bit, in a forward and in generate (where the indexer reads positions off the padding and
    leaves a left-padded sample's first queries no key at all, so they attend uniformly)."""
    model, make_inputs = tiny_minimax_m3_vl(0, index_topk_blocks=2)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        stock = model(**inputs).logits
        with eah.attention.eahlib_attention(model):
            assert torch.equal(model(**inputs).logits, stock)
        with eah.enhance_attention_heads(model, layer=0, threshold=1e9):
            explicit = model(**inputs).logits
    torch.testing.assert_close(explicit[real], stock[real], rtol=1e-5, atol=1e-5)
    kept = captured(model, inputs, [0])[0] > 0  # [B, H, q, k]
    assert int(kept.sum(-1).transpose(1, 2)[real].max()) == 2 * 2  # two blocks of two keys
    assert not torch.equal(kept[:, :2], kept[:, 2:])  # each indexer head serves its two query heads
    settings = {"max_new_tokens": 3, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        stock_run = model.generate(**inputs, **settings)
        with eah.attention.eahlib_attention(model):
            run = model.generate(**inputs, **settings)
    assert torch.equal(run.sequences, stock_run.sequences)
    assert all(torch.equal(a, b) for a, b in zip(run.logits, stock_run.logits))
    assert not any(module in _KEY_BLOCK_SIZES for module in model.modules())  # nothing left once eahlib is off


def test_block_indices_of_a_layer_whose_family_names_no_block_size_are_refused() -> None:
    """``block_indices`` mean nothing without the keys per block, which only the family row names: a module outside
    an active model of such a family gets a clear error, not a guessed mask."""
    from transformers import AttentionInterface

    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups, module.training = True, 1, False
    query = key = value = torch.zeros(1, 2, 4, 4)
    blocks = torch.zeros(1, 1, 4, 1, dtype=torch.long)
    with pytest.raises(NotImplementedError, match="names no key_block_size"):
        AttentionInterface()["eahlib_sdpa"](module, query, key, value, None, block_indices=blocks)


def test_dola_reads_early_layers_through_the_head_a_language_model_at_the_top_keeps() -> None:
    """Nemotron-H Omni keeps its LM head in its language model (a whole causal LM at the top) and exposes none
    itself: the head is found there, and DoLa contrasts through it."""
    model, make_inputs = TINY_FAMILIES["nemotron_h_omni"](0)
    model.generation_config.pad_token_id = PAD
    assert model.get_output_embeddings() is None
    assert output_embeddings(model) is language_model(model).get_output_embeddings() is not None
    generation = resolve_method("dola", {"dola": {"layers": [0]}}).generate(model, make_inputs(PROMPTS), 3)
    assert generation.tokens.shape == (len(PROMPTS), 3)


def test_a_token_whose_selection_drops_its_own_key_is_still_real() -> None:
    """Real tokens are read off the mask's diagonal before a sparse layer's selection: a query whose top-k misses
    its own key is still a real token, and the sink definitions see what it selected."""
    causal = torch.ones(4, 4, dtype=torch.bool).tril().unsqueeze(0)
    selected = causal & ~torch.eye(4, dtype=torch.bool)
    selected[0, 0, 0] = True
    call = AttentionCall(torch.nn.Identity(), torch.zeros(1, 1, 4, 4), None, causal, True, selected)
    assert call.real_keys.all()
    assert torch.equal(call.attended, selected)
    assert torch.equal(call.visibility(), selected)


def test_without_a_padding_mask_real_tokens_come_from_the_diagonal_not_from_one_querys_row() -> None:
    """A 4-D mask passed by hand: in a sliding-window layer the last query sees only its window, yet every token is
    real; a left-padded row is masked for every query, itself included, so the diagonal finds it."""
    length, window = 6, 2
    position = torch.arange(length)
    sliding = (position[:, None] >= position[None, :]) & (position[:, None] - position[None, :] < window)
    call = AttentionCall(torch.nn.Identity(), torch.zeros(1, 1, length, length), None, sliding[None], True, None)
    assert call.real_keys.all()
    padded = sliding.clone()
    padded[:, :2] = False  # two left-padding tokens: no query may attend them
    call = AttentionCall(torch.nn.Identity(), torch.zeros(1, 1, length, length), None, padded[None], True, None)
    assert call.real_keys.tolist() == [[False, False, True, True, True, True]]


@pytest.mark.parametrize("model_type", ["fast_vlm", "perception_lm"])
def test_families_served_with_a_native_tower_default_to_a_timm_tower(model_type: str) -> None:
    """FastVLM and Perception LM checkpoints load their tower through timm (their rows say so); the tiny models
    use a transformers tower in its place, which the classes accept: the language side is the same."""
    import transformers

    assert transformers.CONFIG_MAPPING[model_type]().vision_config.model_type == "timm_wrapper"
    model, _ = TINY_FAMILIES[model_type](0)
    assert model.config.vision_config.model_type != "timm_wrapper"
    assert "timm" in model_family(model).notes


def test_mistral_small_4_is_served_by_the_mistral3_row() -> None:
    """Mistral Small 4 with images is Mistral 3 around a mistral4 language model (multi-head latent attention,
    MoE): the mistral3 row serves it, EAH with nothing to broadcast leaves it as it was, and the profile counts
    what the captured probabilities show."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    from eahlib.testing.families import _pixtral_model, _pixtral_vision

    text = _text_config(kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8,
                        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16) | {"model_type": "mistral4"}
    config = Mistral3Config(text_config=text, vision_config=_pixtral_vision(), image_token_index=IMAGE_TOKEN)
    torch.manual_seed(0)
    model, make_inputs = _pixtral_model(Mistral3ForConditionalGeneration(config).eval(), 0)
    assert model_family(model).name == "mistral3"
    inputs = make_inputs(PROMPTS)
    stock, explicit = _stock_and_explicit(model, inputs)
    torch.testing.assert_close(explicit, stock, rtol=1e-5, atol=1e-5)
    real, image = inputs["attention_mask"].bool(), eah.image_token_mask(model, inputs["input_ids"])
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    for layer, probs in captured(model, inputs, [0, 1]).items():
        assert torch.equal(profile.density[layer], eah.sink_density(probs, image, attention_mask=real, relative_threshold=1.0))
    assert int(profile.density.sum()) > 0


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


def test_a_hybrid_block_has_attention_only_when_its_mixer_is_an_attention_module() -> None:
    """Nemotron-H keeps every block's mixer (Mamba-2 here, attention there) under the one attribute `mixer`:
    the row's attention classes tell the attention blocks from the others."""
    model, make_inputs = TINY_FAMILIES["nemotron_h_omni"](0)
    blocks = eah.decoder_layers(model)
    assert all(block.mixer is not None for block in blocks)
    assert [block.block_type for block in blocks] == ["linear_attention", "full_attention"]
    assert eah.models.attention_layers(model) == [1]
    with pytest.raises(ValueError, match=r"Decoder layer 0 .* has no self-attention.*attention layers are \[1\]"):
        eah.models.attention_module(model, 0)


def test_a_linear_attention_module_at_the_attention_attribute_is_not_an_attention_layer() -> None:
    """GLM-5.3 keeps its KDA linear-attention modules at ``self_attn`` too; the row's ``attention_types`` leaves
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


def test_the_generic_layout_warning_shows_once_however_often_the_family_is_looked_up() -> None:
    model, make_inputs = TINY_MODELS["llava"](0)
    model.__class__ = type("OnceVlmForConditionalGeneration", (type(model),), {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: each message once per location
        model_family(model)
        eah.sink_profile(model, relative_threshold=1.0, **make_inputs(PROMPTS))  # many lookups, many callers
    assert [str(w.message).split(" ")[0] for w in caught if "family table" in str(w.message)] == [
        "OnceVlmForConditionalGeneration"]


def test_unserved_model_types_are_refused_before_any_download() -> None:
    for unserved in UNSERVED:
        for model_type in unserved.model_types:
            with pytest.raises(ValueError, match="eahlib cannot serve"):
                family_of_model_type(model_type)
    assert family_of_model_type("gemma3").name == "gemma3"
    assert family_of_model_type("some_future_vlm").name == "generic"
    assert len({t for f in FAMILIES for t in f.model_types}) == sum(len(f.model_types) for f in FAMILIES)


def test_presets_count_attention_layers_on_a_hybrid_model() -> None:
    """``preset="paper"`` is the second attention layer: decoder layer 3 of conv, attention, conv, attention."""
    import copy

    model, make_inputs = TINY_FAMILIES["lfm2_vl"](0)
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = 4
    config.text_config.layer_types = ["conv", "full_attention", "conv", "full_attention"]
    torch.manual_seed(0)
    model = type(model)(config).eval()
    assert eah.models.attention_layers(model) == [1, 3]
    with eah.enhance_attention_heads(model, preset="paper", relative_threshold=1.0) as enhanced, torch.no_grad():
        model(**make_inputs(PROMPTS))
    assert enhanced.layer == 3 and enhanced.chosen_heads
    with pytest.raises(ValueError, match=r"attention layers are \[1, 3\]"):
        with eah.enhance_attention_heads(model, layer=2):
            pass


def _attention_module(is_causal: bool = True) -> torch.nn.Module:
    module = torch.nn.Module().eval()
    module.num_key_value_groups, module.is_causal = 1, is_causal
    return module


def _qkv() -> list[torch.Tensor]:
    """Query, key and value ``[2, 4, 5, 8]``."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(2, 4, 5, 8, generator=generator) for _ in range(3)]


def _padded_causal_mask() -> torch.Tensor:
    """``[2, 1, 5, 5]`` bool: causal, the second sample left-padded by two tokens (padding queries see only
    themselves, so that every row of the references has a key)."""
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    real = torch.tensor([[True] * 5, [False, False, True, True, True]])
    return (causal & real[:, None, :])[:, None] | torch.eye(5, dtype=torch.bool)


def test_explicit_attention_adds_a_position_bias_to_the_logits_as_sdpa_does() -> None:
    """Inkling's relative-position bias reaches the attention function as ``position_bias``."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module, (query, key, value), mask = _attention_module(), _qkv(), _padded_causal_mask()
    bias = 3 * torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    want, _ = sdpa_attention_forward(module, query, key, value, mask, position_bias=bias)
    got, _ = AttentionInterface()["eahlib_eager"](module, query, key, value, mask, position_bias=bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_explicit_attention_spreads_rows_over_per_query_sinks() -> None:
    """Inkling 2 computes a sink logit per head and query (``[B, H, q, 1]``) from the hidden states."""
    from transformers import AttentionInterface
    from transformers.models.inkling2.modeling_inkling2 import eager_attention_forward

    module, (query, key, value), mask = _attention_module(), _qkv(), _padded_causal_mask()
    sinks = 2 * torch.randn(2, 4, 5, 1, generator=torch.Generator().manual_seed(2))
    additive = torch.where(mask, 0.0, torch.finfo(torch.float32).min)
    want, _ = eager_attention_forward(module, query, key, value, additive, 8**-0.5, sinks=sinks)
    got, weights = AttentionInterface()["eahlib_eager"](module, query, key, value, mask, sinks=sinks)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (weights.sum(-1) < 1 - 1e-3).all()
    with pytest.raises(NotImplementedError, match=r"per head and query \(\[2, 4, 5, 1\]\)"):
        AttentionInterface()["eahlib_eager"](module, query, key, value, mask, sinks=sinks.expand(-1, -1, -1, 2))


@pytest.mark.parametrize("is_causal", [True, False])
def test_explicit_attention_without_a_mask_is_causal_only_for_a_causal_module(is_causal: bool) -> None:
    """A call without a mask means causal attention (SDPA's shortcut) only when the module is causal; Inkling 2's
    attention over earlier blocks' states (``is_causal=False``) goes through the same interface."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module, (query, key, value) = _attention_module(is_causal), _qkv()
    want, _ = sdpa_attention_forward(module, query, key, value, None)
    got, weights = AttentionInterface()["eahlib_eager"](module, query, key, value, None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert bool((weights[..., 0, 1:] > 0).any()) is not is_causal


@pytest.mark.parametrize(("config_name", "image_id"), [("Blip2Config", "image_token_index"),
                                                    ("InstructBlipVideoConfig", "video_token_index")])
def test_a_flan_t5_checkpoint_is_refused_as_an_encoder_decoder_naming_a_decoder_only_one(config_name: str,
                                                                                     image_id: str) -> None:
    """BLIP-2's and InstructBLIP's Flan-T5 checkpoints: their language model is T5, an encoder-decoder."""
    import transformers

    t5 = dict(model_type="t5", vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
              decoder_start_token_id=0)
    config = getattr(transformers, config_name)(
        vision_config=dict(image_size=8, patch_size=2, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                           num_attention_heads=4),
        qformer_config=dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=37, encoder_hidden_size=32),
        text_config=t5, num_query_tokens=2, **{image_id: IMAGE_TOKEN},
    )
    model = transformers.AutoModelForImageTextToText.from_config(config)
    assert model.language_model.config.is_encoder_decoder
    checkpoint = model_family(model).checkpoint
    with pytest.raises(ValueError, match=rf"T5ForConditionalGeneration is an encoder-decoder.*\(e.g. {checkpoint}\)"):
        with eah.enhance_attention_heads(model, layer=0):
            pass


def test_a_built_in_model_refuses_arguments_it_would_ignore() -> None:
    with pytest.raises(TypeError, match=r"takes dtype and device_map only; got \['dtyp'\]"):
        eah.load_model("tiny-random-llava", dtyp="bfloat16")
