"""Tiny random models of every vision-language family eahlib serves, for the support matrix.

Each builder returns ``(model, make_inputs)`` like those of :mod:`eahlib.testing`: a model of the family
built from its config classes in code (2 text layers, a tiny vision tower, random weights, nothing
downloaded), and ``make_inputs(prompts)``, which turns text-token prompts into a left-padded batch with one
image per prompt, as the family's processor would (image tokens expanded to one per image feature, and any
extra inputs the family's forward needs). Families with sliding-window layers get a window of
:data:`SLIDING_WINDOW` tokens, shorter than every prompt, so the support matrix exercises it.

Builders are keyed by ``config.model_type``; :data:`TINY_FAMILIES` has one for every model type of a
:data:`eahlib.models.FAMILIES` row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from eahlib.testing import (
    BOS,
    EOS,
    IMAGE,
    IMAGE_TOKEN,
    PAD,
    VOCAB,
    InputBuilder,
    _left_pad,
    _seeded_images,
    _text_config,
    tiny_instructblip,
    tiny_llava,
    tiny_llava_next,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
)

SLIDING_WINDOW = 8
"""The sliding window of tiny models with sliding-window layers: shorter than every test prompt."""

Builder = Callable[[int], tuple[nn.Module, InputBuilder]]


def _siglip_vision(image_size: int = 8, patch_size: int = 2) -> dict[str, Any]:
    return dict(image_size=image_size, patch_size=patch_size, hidden_size=32, intermediate_size=37,
                num_hidden_layers=2, num_attention_heads=4)


def _build(model_cls: type[nn.Module], config: Any, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return model_cls(config).eval()


def _expand_with(prompt: Sequence[int], image_block: Sequence[int]) -> list[int]:
    """``prompt`` with the placeholder ``IMAGE`` (default: right after ``<bos>``) replaced by ``image_block``."""
    tokens = list(prompt) if IMAGE in prompt else [BOS, IMAGE, *prompt]
    out: list[int] = []
    for token in tokens:
        out.extend(image_block if token == IMAGE else [token])
    return out


def _image_features(model: nn.Module, **pixels: Tensor) -> int:
    """Number of image features (= image tokens) the model makes of one image's inputs."""
    with torch.no_grad():
        features = model.model.get_image_features(**pixels, return_dict=True)
    pooled = features.pooler_output
    return int(pooled[0].shape[0] if isinstance(pooled, (list, tuple)) else pooled.shape[-2])


def _one_image_model(
    model: nn.Module,
    pixel_shape: Sequence[int],
    seed: int,
    before: Sequence[int] = (),
    after: Sequence[int] = (),
    pixel_extra: Callable[[int], Mapping[str, Tensor]] | None = None,
    token_extra: Callable[[Tensor], Mapping[str, Tensor]] | None = None,
) -> tuple[nn.Module, InputBuilder]:
    """A family whose processor puts ``before + n image tokens + after`` in the prompt, one image of
    ``pixel_shape`` per prompt. ``pixel_extra(n_images)`` adds the image inputs besides ``pixel_values``
    (sizes, grids, pixel masks), ``token_extra(input_ids)`` the token inputs (token types)."""
    extra_pixels = pixel_extra or (lambda count: {})
    n_image = _image_features(model, pixel_values=_seeded_images([[]], pixel_shape, seed), **extra_pixels(1))

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        block = [*before, *[IMAGE_TOKEN] * n_image, *after]
        batch = _left_pad([_expand_with(p, block) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, pixel_shape, seed)
        batch.update(extra_pixels(len(prompts)))
        if token_extra is not None:
            batch.update(token_extra(batch["input_ids"]))
        return batch

    return model, make_inputs


def tiny_gemma3(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Gemma 3: a full-attention layer, then a sliding-window layer; bidirectional attention inside the image."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8, sliding_window=SLIDING_WINDOW,
                        layer_types=["full_attention", "sliding_attention"])
    config = Gemma3Config(text_config=text, vision_config=_siglip_vision(16, 4), mm_tokens_per_image=16,
                          image_token_id=IMAGE_TOKEN, boi_token_id=96, eoi_token_id=97)
    model = _build(Gemma3ForConditionalGeneration, config, seed)

    def image_types(input_ids: Tensor) -> dict[str, Tensor]:
        return {"token_type_ids": (input_ids == IMAGE_TOKEN).long()}

    return _one_image_model(model, (3, 16, 16), seed, before=[96], after=[97], token_extra=image_types)


def tiny_paligemma(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """PaliGemma: image tokens, then ``<bos>`` and the prompt, all one bidirectional prefix."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    config = PaliGemmaConfig(text_config=_text_config(head_dim=8), vision_config=_siglip_vision(),
                             image_token_id=IMAGE_TOKEN, projection_dim=32)
    model = _build(PaliGemmaForConditionalGeneration, config, seed)
    n_image = _image_features(model, pixel_values=_seeded_images([[]], (3, 8, 8), seed))

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([[*[IMAGE_TOKEN] * n_image, BOS, *p] for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (3, 8, 8), seed)
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])  # the whole prompt is the prefix
        return batch

    return model, make_inputs


def tiny_lfm2_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LFM2-VL: a hybrid language model (a short-convolution layer, then an attention layer), a NaFlex SigLIP2
    tower (patches in, 4x4 grid) and 2x2 pixel unshuffle: 4 image tokens."""
    from transformers import Lfm2VlConfig, Lfm2VlForConditionalGeneration

    text = _text_config(layer_types=["conv", "full_attention"], conv_L_cache=3, block_dim=32, block_ff_dim=64)
    vision = _siglip_vision() | {"num_patches": 16, "model_type": "siglip2_vision_model"}
    config = Lfm2VlConfig(text_config=text | {"model_type": "lfm2"}, vision_config=vision,
                          image_token_id=IMAGE_TOKEN, downsample_factor=2, projector_hidden_size=32)
    model = _build(Lfm2VlForConditionalGeneration, config, seed)

    def pixels(count: int) -> dict[str, Tensor]:
        return {"spatial_shapes": torch.tensor([[4, 4]] * count),
                "pixel_attention_mask": torch.ones(count, 16, dtype=torch.long)}

    return _one_image_model(model, (16, 12), seed, pixel_extra=pixels)


# --- group 1: builders above this line ---


def _patch_grid_model(
    model: nn.Module,
    seed: int,
    before: Sequence[int],
    after: Sequence[int],
    grid: Sequence[int] = (1, 4, 4),
    patch_shape: Sequence[int] | None = None,
    grid_key: str = "image_grid_thw",
    token_types: bool = True,
    pixel_extra: Callable[[int], Mapping[str, Tensor]] | None = None,
    token_extra: Callable[[Tensor], Mapping[str, Tensor]] | None = None,
) -> tuple[nn.Module, InputBuilder]:
    """A Qwen2-VL-style family: one image of ``grid`` (t, h, w) patches, fed as the patches of every image one
    after the other, ``[patches, *patch_shape]`` (default: flattened, ``channels * temporal * patch**2``), with
    its grid and ``pixel_extra(n_images)``; the prompt holds ``before + n image tokens + after`` (n asked of the
    model); ``mm_token_type_ids`` (1 on image tokens) drive the M-RoPE positions, ``token_extra(input_ids)``
    adds other token inputs."""
    extra_pixels = pixel_extra or (lambda count: {})
    if patch_shape is None:
        vision = model.config.vision_config
        patch_shape = (vision.in_channels * getattr(vision, "temporal_patch_size", 1) * vision.patch_size**2,)
    grids = torch.tensor([list(grid)])
    shape = (int(grids.prod()), *patch_shape)
    n_image = _image_features(model, pixel_values=_seeded_images([[]], shape, seed)[0], **{grid_key: grids},
                              **extra_pixels(1))

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, [*before, *[IMAGE_TOKEN] * n_image, *after]) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, shape, seed).flatten(0, 1)
        batch[grid_key] = grids.expand(len(prompts), -1).clone()
        batch.update(extra_pixels(len(prompts)))
        if token_types:
            batch["mm_token_type_ids"] = (batch["input_ids"] == IMAGE_TOKEN).int()
        if token_extra is not None:
            batch.update(token_extra(batch["input_ids"]))
        return batch

    return model, make_inputs


def _glm_vision(**extra: Any) -> dict[str, Any]:
    return dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2,
                image_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, **extra)


def _glm_ids() -> dict[str, int]:
    return dict(image_token_id=IMAGE_TOKEN, video_token_id=97, image_start_token_id=95, image_end_token_id=96,
                video_start_token_id=93, video_end_token_id=94)


def tiny_glm4v(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """GLM-4.1V: GQA, M-RoPE over image grids, a vision tower with 2x2 downsampling (16 patches: 4 tokens)."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration

    config = Glm4vConfig(text_config=_glm_text(), vision_config=_glm_vision(), **_glm_ids())
    return _patch_grid_model(_build(Glm4vForConditionalGeneration, config, seed), seed, [95], [96])


def _glm_text(**extra: Any) -> dict[str, Any]:
    return _text_config(num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]},
                        **extra)


def tiny_glm46v(seed: int = 0, config_cls: str = "Glm46VConfig") -> tuple[nn.Module, InputBuilder]:
    """GLM-4.6V (and Glmga, its config on the same model class): GLM-4.1V's text and vision configs."""
    import transformers
    from transformers import Glm46VForConditionalGeneration

    config = getattr(transformers, config_cls)(text_config=_glm_text() | {"model_type": "glm4v_text"},
                                               vision_config=_glm_vision() | {"model_type": "glm4v_vision"},
                                               **_glm_ids())
    return _patch_grid_model(_build(Glm46VForConditionalGeneration, config, seed), seed, [95], [96])


def tiny_glmga(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Glmga: a config of its own, GLM-4.6V's model class."""
    return tiny_glm46v(seed, "GlmgaConfig")


def tiny_glm4v_moe(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """GLM-4.5V: GLM-4.1V with a mixture-of-experts language model (a dense first layer, then an MoE layer) and
    half-rotary heads (head_dim 16: 8 rotary dims for the M-RoPE sections)."""
    from transformers import Glm4vMoeConfig, Glm4vMoeForConditionalGeneration

    text = _glm_text(head_dim=16, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                     first_k_dense_replace=1)
    config = Glm4vMoeConfig(text_config=text, vision_config=_glm_vision(), **_glm_ids())
    return _patch_grid_model(_build(Glm4vMoeForConditionalGeneration, config, seed), seed, [95], [96])


def tiny_glm_ocr(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """GLM-OCR: the GLM-4.1V layout at OCR size."""
    from transformers import GlmOcrConfig, GlmOcrForConditionalGeneration

    config = GlmOcrConfig(text_config=_glm_text(), vision_config=_glm_vision(), **_glm_ids())
    return _patch_grid_model(_build(GlmOcrForConditionalGeneration, config, seed), seed, [95], [96])


def _qwen3_vision(**extra: Any) -> dict[str, Any]:
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2, spatial_merge_size=2,
                temporal_patch_size=2, in_channels=3, out_hidden_size=32, num_position_embeddings=16, **extra)


def _qwen3_text(**extra: Any) -> dict[str, Any]:
    """Qwen3-style text: GQA, head_dim 8, interleaved M-RoPE over 4 frequency pairs."""
    rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True}
    return _text_config(num_key_value_heads=2, head_dim=8, rope_parameters=rope) | extra


_QWEN_IDS = dict(image_token_id=IMAGE_TOKEN, video_token_id=97, vision_start_token_id=95, vision_end_token_id=96)


def tiny_qwen3_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen3-VL: GQA, interleaved M-RoPE, DeepStack (vision features of a middle block added to early layers)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(text_config=_qwen3_text(), vision_config=_qwen3_vision(deepstack_visual_indexes=[0]),
                           **_QWEN_IDS)
    return _patch_grid_model(_build(Qwen3VLForConditionalGeneration, config, seed), seed, [95], [96])


def tiny_qwen3_vl_moe(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen3-VL-MoE: Qwen3-VL with mixture-of-experts feed-forward layers."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    text = _qwen3_text(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2)
    config = Qwen3VLMoeConfig(text_config=text, vision_config=_qwen3_vision(deepstack_visual_indexes=[0]),
                              **_QWEN_IDS)
    return _patch_grid_model(_build(Qwen3VLMoeForConditionalGeneration, config, seed), seed, [95], [96])


def _qwen3_5_text(**extra: Any) -> dict[str, Any]:
    """Qwen3.5's hybrid text: a gated-delta-net (linear attention) layer, then a gated full-attention layer;
    head_dim 16 with a quarter rotary (4 dims: 2 frequency pairs for the M-RoPE sections)."""
    rope = {"rope_type": "default", "mrope_section": [1, 1, 0], "mrope_interleaved": True,
            "partial_rotary_factor": 0.25}
    return _text_config(num_key_value_heads=2, head_dim=16, rope_parameters=rope,
                        layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=2,
                        linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                        linear_num_value_heads=4) | extra


def tiny_qwen3_5(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen3.5: Qwen3-VL's vision tower, a hybrid language model (linear-attention layers between attention ones)."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    config = Qwen3_5Config(text_config=_qwen3_5_text(), vision_config=_qwen3_vision(), **_QWEN_IDS)
    return _patch_grid_model(_build(Qwen3_5ForConditionalGeneration, config, seed), seed, [95], [96])


def tiny_qwen3_5_moe(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen3.5-MoE: Qwen3.5 with mixture-of-experts feed-forward layers."""
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    text = _qwen3_5_text(moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4,
                         num_experts_per_tok=2)
    config = Qwen3_5MoeConfig(text_config=text, vision_config=_qwen3_vision(), **_QWEN_IDS)
    return _patch_grid_model(_build(Qwen3_5MoeForConditionalGeneration, config, seed), seed, [95], [96])


def tiny_paddleocr_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """PaddleOCR-VL: a NaViT SigLIP tower fed ``[patches, channels, patch, patch]``, 2x2 merging projector, an
    ERNIE-4.5 language model with GQA and M-RoPE."""
    from transformers import PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8,
                        rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]})
    vision = _siglip_vision() | {"spatial_merge_size": 2}
    config = PaddleOCRVLConfig(text_config=text, vision_config=vision, **_QWEN_IDS)
    model = _build(PaddleOCRVLForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [95], [96], patch_shape=(3, 2, 2))


def tiny_video_llama_3(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """VideoLLaMA 3: a NaViT SigLIP tower with a merge size per image, a Qwen2 language model (1-D RoPE)."""
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

    config = VideoLlama3Config(text_config=_text_config(num_key_value_heads=2) | {"model_type": "qwen2"},
                               vision_config=_siglip_vision(), image_token_id=IMAGE_TOKEN, video_token_id=97)
    model = _build(VideoLlama3ForConditionalGeneration, config, seed)

    def merge_sizes(count: int) -> dict[str, Tensor]:
        return {"image_merge_sizes": torch.full((count,), 2)}

    return _patch_grid_model(model, seed, [], [], patch_shape=(3 * 2 * 2,), token_types=False,
                             pixel_extra=merge_sizes)


def tiny_ernie4_5_vl_moe(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """ERNIE-4.5-VL: a dense first layer, then an MoE layer with separate text and vision experts (routed by
    ``moe_mm_token_type_ids``: image tokens and their start/end markers), GQA, M-RoPE."""
    from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

    text = _text_config(num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2]},
                        moe_intermediate_size=[16, 16], moe_k=2, moe_num_experts=4, moe_num_shared_experts=1)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2, spatial_merge_size=2,
                  temporal_merge_size=2, in_channels=3)
    config = Ernie4_5_VLMoeConfig(text_config=text, vision_config=vision, image_start_token_id=95,
                                  image_end_token_id=96, image_token_id=IMAGE_TOKEN, video_start_token_id=93,
                                  video_end_token_id=94, video_token_id=97)
    model = _build(Ernie4_5_VLMoeForConditionalGeneration, config, seed)

    def moe_types(input_ids: Tensor) -> dict[str, Tensor]:
        return {"moe_mm_token_type_ids": torch.isin(input_ids, torch.tensor([95, IMAGE_TOKEN, 96])).int()}

    return _patch_grid_model(model, seed, [95], [96], token_extra=moe_types)


def tiny_hunyuan_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """HunyuanOCR: the image features include a separator after each row and two boundary features, all on
    image tokens between ``<im_start>`` and ``<im_end>``; M-RoPE over (position, width, height, image index)."""
    from transformers import HunYuanVLConfig, HunYuanVLForConditionalGeneration

    text = _text_config(head_dim=8, rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 1, 1]})
    vision = _siglip_vision() | {"spatial_merge_size": 2, "out_hidden_size": 32, "max_image_size": 8,
                                 "min_image_size": 4}
    config = HunYuanVLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, im_start_id=95,
                             im_end_id=96, im_newline_id=97)
    model = _build(HunYuanVLForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [95], [96], patch_shape=(3 * 2 * 2,))


def tiny_exaone4_5(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """EXAONE 4.5: a Qwen2.5-VL-style windowed vision tower with GQA, an EXAONE 4 language model whose first
    layer is a sliding-window layer; positions are 1-D (no M-RoPE)."""
    from transformers import Exaone4_5_Config, Exaone4_5_ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, sliding_window=SLIDING_WINDOW,
                        layer_types=["sliding_attention", "full_attention"]) | {"model_type": "exaone4"}
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, num_key_value_heads=2, patch_size=2,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=8, out_hidden_size=32,
                  fullatt_block_indexes=[1])
    config = Exaone4_5_Config(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97)
    return _patch_grid_model(_build(Exaone4_5_ForConditionalGeneration, config, seed), seed, [], [],
                             token_types=False)


def tiny_hy_v4_vl(seed: int = 0, index_topk: int = 64) -> tuple[nn.Module, InputBuilder]:
    """Hy4-VL: an MoE language model with MLA (4 rotary + 4 plain query/key dims), a learned attention-sink logit
    per head and a DSA indexer picking the top ``index_topk`` keys (by default all of them at this prompt length); a
    separator feature ends each row of image tokens. Weights drawn wider than the config's 0.006 so that
    attention is not uniform."""
    from transformers import HYV4VLConfig, HYV4VLForConditionalGeneration

    text = _text_config(moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                        q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=8,
                        index_topk=index_topk, index_head_dim=8, index_n_heads=2, hc_mult=2, initializer_range=0.1,
                        rope_parameters={"rope_type": "default", "mrope_section": [1, 0, 1]})
    vision = {k: v for k, v in _siglip_vision().items() if k != "image_size"}
    vision |= {"spatial_merge_size": 2, "out_hidden_size": 32, "max_image_size": 8}
    config = HYV4VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97)
    model = _build(HYV4VLForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [], [], patch_shape=(3 * 2 * 2,))


def tiny_dots3_note(seed: int = 0, index_topk: int = 64, sliding_heads: int = 4) -> tuple[nn.Module, InputBuilder]:
    """dots3-note: an MoE language model whose MLA layers are a DSA layer (top ``index_topk`` keys: by default all
    of them at this prompt length) and a sliding-window layer of ``sliding_heads`` heads configured through
    ``per_layer_config`` (the ``swa_*`` keys); a NaViT tower fed flattened patches; 1-D positions; the audio
    tower stays unused."""
    from transformers import Dots3NoteConfig, Dots3NoteForConditionalGeneration

    swa = dict(num_attention_heads=sliding_heads, num_key_value_heads=sliding_heads, q_lora_rank=16, kv_lora_rank=16,
               head_dim=8, qk_nope_head_dim=4, v_head_dim=8)
    text = _text_config(moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                        shared_experts_intermediate_size=16, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=4,
                        qk_rope_head_dim=4, v_head_dim=8, head_dim=8, index_topk=index_topk, index_head_dim=8,
                        index_n_heads=2, sliding_window=SLIDING_WINDOW,
                        layer_types=["indexed_attention", "sliding_attention"],
                        **{f"swa_{key}": value for key, value in swa.items()})
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=2,
                  spatial_merge_size=2, adapter_in_dim=32, adapter_out_dim=32, adapter_merge_size=2,
                  pyramid_num_routed=[-1, -1])
    audio = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                 adapter_input_size=32, adapter_out_dim=32, downsample_hidden_size=16)
    config = Dots3NoteConfig(text_config=text, vision_config=vision, audio_config=audio, image_token_id=IMAGE_TOKEN,
                             video_token_id=97, audio_token_id=96)
    model = _build(Dots3NoteForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [], [], patch_shape=(3 * 2 * 2,), token_types=False)


def tiny_step3p7(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Step 3.7: a SigLIP-style tower with two stride-2 downsamplers (16 px, patch 2: 4 image tokens), an MoE
    language model (a dense sliding-window layer, then a sparse full-attention layer) fed embeddings only."""
    from transformers import Step3p7Config, Step3p7ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8, sliding_window=SLIDING_WINDOW,
                        layer_types=["sliding_attention", "full_attention"], mlp_layer_types=["dense", "sparse"],
                        moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, share_expert_dim=16)
    vision = _siglip_vision(16, 2) | {"max_position_embeddings": 64}
    config = Step3p7Config(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN)
    return _one_image_model(_build(Step3p7ForConditionalGeneration, config, seed), (3, 16, 16), seed)


def _omni_audio(**extra: Any) -> dict[str, Any]:
    return dict(num_mel_bins=8, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=16, d_model=8,
                output_dim=32, **extra)


def tiny_qwen2_5_omni_thinker(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen2.5-Omni's thinker: Qwen2.5-VL's windowed vision tower and M-RoPE, a tiny unused audio tower. Its
    M-RoPE reads ``vision_start_token_id``, a key the checkpoints' configs carry but the config class lacks."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    text = _text_config(num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]})
    vision = dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=8, fullatt_block_indexes=[1])
    config = Qwen2_5OmniThinkerConfig(text_config=text, vision_config=vision, audio_config=_omni_audio(),
                                      image_token_index=IMAGE_TOKEN, video_token_index=97, audio_token_index=94,
                                      vision_start_token_id=95)
    model = _build(Qwen2_5OmniThinkerForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [95], [96], token_types=False)


def tiny_qwen3_omni_moe_thinker(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen3-Omni's thinker: Qwen3-VL's vision tower (DeepStack), an MoE language model with interleaved M-RoPE,
    a tiny unused audio tower; ``vision_start_token_id`` as for Qwen2.5-Omni."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    text = _qwen3_text(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2)
    config = Qwen3OmniMoeThinkerConfig(text_config=text, vision_config=_qwen3_vision(deepstack_visual_indexes=[0]),
                                       audio_config=_omni_audio(downsample_hidden_size=8),
                                       image_token_id=IMAGE_TOKEN, video_token_id=97, audio_token_id=94,
                                       vision_start_token_id=95)
    model = _build(Qwen3OmniMoeThinkerForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [95], [96], token_types=False)


def tiny_minimax_m3_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """MiniMax-M3: an MoE language model whose first layer is a lightning-indexer block-sparse layer (blocks of 2
    keys, the top 64 blocks: every block at this prompt length) and whose second is full attention; GQA, partial
    RoPE; a Qwen2.5-VL-style patch tower."""
    from transformers import MiniMaxM3SparseForConditionalGeneration, MiniMaxM3VLConfig

    text = _text_config(num_key_value_heads=2, head_dim=8, rotary_dim=4, dense_intermediate_size=64,
                        shared_intermediate_size=16, num_local_experts=4, num_experts_per_tok=2,
                        mlp_layer_types=["dense", "sparse"], layer_types=["minimax_m3_sparse", "full_attention"],
                        index_n_heads=2, index_head_dim=8, index_block_size=2, index_topk_blocks=64)
    vision = {k: v for k, v in _siglip_vision().items() if k != "image_size"}
    vision |= {"temporal_patch_size": 2, "spatial_merge_size": 2}
    config = MiniMaxM3VLConfig(text_config=text, vision_config=vision, image_token_index=IMAGE_TOKEN,
                               video_token_index=97, projector_hidden_size=32)
    model = _build(MiniMaxM3SparseForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [], [], patch_shape=(3 * 2 * 2 * 2,), token_types=False)


def tiny_qwen4_exp(seed: int = 0, indexer_budget: int = 64) -> tuple[nn.Module, InputBuilder]:
    """Qwen4-Exp: Qwen3.5's hybrid layout (a gated-delta-net layer, then a gated attention layer) with MoE
    feed-forward layers, 2 hyper-connection streams, and a QSA indexer that lets each query see the top
    ``indexer_budget`` keys in blocks of 2 (every key at this prompt length by default)."""
    from transformers import Qwen4ExpConfig, Qwen4ExpForConditionalGeneration

    text = _qwen3_5_text(layer_types=["linear_attention", "indexed_attention"], moe_intermediate_size=16,
                         shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2, hc_count=2,
                         hc_lowrank=8, indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=8,
                         indexer_budget=indexer_budget, indexer_compress_ratio=2)
    config = Qwen4ExpConfig(text_config=text, vision_config=_qwen3_vision(), **_QWEN_IDS)
    return _patch_grid_model(_build(Qwen4ExpForConditionalGeneration, config, seed), seed, [95], [96])


def tiny_glm5_next(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """GLM-5.3: a hybrid MoE language model without positions in attention (NoPE): a KDA linear-attention layer
    (kept at ``self_attn`` like the attention layers), then an MLA layer whose DSA indexer picks the top
    ``index_topk`` keys in pools of 4 (every key at this prompt length); 2 hyper-connection streams."""
    from transformers import Glm5NextConfig, Glm5NextForConditionalGeneration

    text = _text_config(q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=0, v_head_dim=8,
                        index_n_heads=2, index_head_dim=8, index_topk=64, index_kpool=4, linear_head_dim=8,
                        linear_num_heads=4, hc_mult=2, layer_types=["linear_attention", "indexed_attention"],
                        mlp_layer_types=["dense", "sparse"], indexer_types=["full", "full"], n_routed_experts=4,
                        num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1)
    config = Glm5NextConfig(text_config=text, vision_config=_glm_vision(projection_intermediate_size=64),
                            **_glm_ids())
    return _patch_grid_model(_build(Glm5NextForConditionalGeneration, config, seed), seed, [95], [96])


# --- group 2: builders above this line ---


# --- group 3: builders above this line ---


# --- group 4: builders above this line ---


TINY_FAMILIES: dict[str, Builder] = {
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
    "instructblip": tiny_instructblip,
    "gemma3": tiny_gemma3,
    "paligemma": tiny_paligemma,
    "lfm2_vl": tiny_lfm2_vl,
    # --- group 1: rows above this line ---
    
    "glm4v": tiny_glm4v,
    "glm46v": tiny_glm46v,
    "glmga": tiny_glmga,
    "glm4v_moe": tiny_glm4v_moe,
    "glm_ocr": tiny_glm_ocr,
    "qwen3_vl": tiny_qwen3_vl,
    "qwen3_vl_moe": tiny_qwen3_vl_moe,
    "qwen3_5": tiny_qwen3_5,
    "qwen3_5_moe": tiny_qwen3_5_moe,
    "paddleocr_vl": tiny_paddleocr_vl,
    "video_llama_3": tiny_video_llama_3,
    "ernie4_5_vl_moe": tiny_ernie4_5_vl_moe,
    "hunyuan_vl": tiny_hunyuan_vl,
    "exaone4_5": tiny_exaone4_5,
    "hy_v4_vl": tiny_hy_v4_vl,
    "dots3_note": tiny_dots3_note,
    "step3p7": tiny_step3p7,
    "qwen2_5_omni_thinker": tiny_qwen2_5_omni_thinker,
    "qwen3_omni_moe_thinker": tiny_qwen3_omni_moe_thinker,
    "minimax_m3_vl": tiny_minimax_m3_vl,
    "qwen4_exp": tiny_qwen4_exp,
    "glm5_next": tiny_glm5_next,
    # --- group 2: rows above this line ---
    
    # --- group 3: rows above this line ---
    
    # --- group 4: rows above this line ---
    
}
"""A tiny builder per served ``config.model_type``."""



def _on_meta(model_type: str) -> nn.Module:
    """The family's model at its default (full-size) config, built on the meta device (no memory)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = transformers.CONFIG_MAPPING[model_type]()
    with torch.device("meta"):
        return getattr(transformers, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type])(config)


def _refused(model: nn.Module, reason: str) -> None:
    """Assert that :func:`eahlib.models.model_family` refuses ``model`` with a message containing ``reason``."""
    from eahlib.models import model_family

    try:
        model_family(model)
    except ValueError as error:
        assert reason in str(error), str(error)
    else:
        raise AssertionError(f"eahlib accepted {type(model).__name__}, which it cannot serve")


def _mllama_evidence() -> None:
    model = _on_meta("mllama")
    cross = [i for i, layer in enumerate(model.model.language_model.layers) if hasattr(layer, "cross_attn")]
    assert cross, "Mllama's language model has cross-attention layers"
    assert model.config.text_config.cross_attention_layers == cross
    _refused(model, "cross-attention")


# --- group 1: evidence above this line ---


# --- group 2: evidence above this line ---


# --- group 3: evidence above this line ---


# --- group 4: evidence above this line ---


UNSERVED_EVIDENCE: dict[str, Callable[[], None]] = {
    "mllama": _mllama_evidence,
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
    # --- group 3: rows above this line ---
    
    # --- group 4: rows above this line ---
    
}
"""Per model type of :data:`eahlib.models.UNSERVED`: a check that raises ``AssertionError`` unless the
stated reason holds, and that eahlib refuses the model with it."""
