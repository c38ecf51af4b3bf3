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

import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
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


def _llama(**extra: Any) -> dict[str, Any]:
    return _text_config(**extra) | {"model_type": "llama"}


def _clip(image_size: int = 8) -> Any:
    from eahlib.testing import _clip_vision

    return _clip_vision(image_size)


def tiny_vipllava(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """ViP-LLaVA: CLIP features of several layers (CLS dropped) concatenated: 16 image tokens."""
    from transformers import VipLlavaConfig, VipLlavaForConditionalGeneration

    config = VipLlavaConfig(text_config=_llama(), vision_config=_clip(), image_token_index=IMAGE_TOKEN,
                            vision_feature_layer=[-2, -1])
    return _one_image_model(_build(VipLlavaForConditionalGeneration, config, seed), (3, 8, 8), seed)


def tiny_video_llava(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Video-LLaVA: separate image and video towers; images come as ``pixel_values_images``."""
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration

    config = VideoLlavaConfig(text_config=_llama(), vision_config=_clip(), image_token_index=IMAGE_TOKEN,
                              video_token_index=97, vision_feature_layer=-1)
    model = _build(VideoLlavaForConditionalGeneration, config, seed)
    _, make_inputs = _one_image_model(model, (3, 8, 8), seed)

    def images_as_images(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = make_inputs(prompts)
        batch["pixel_values_images"] = batch.pop("pixel_values")
        return batch

    return model, images_as_images


def _anyres_model(model: nn.Module, seed: int) -> tuple[nn.Module, InputBuilder]:
    """A LLaVA-NeXT-style any-resolution family: a 12x8 image becomes a base tile and 2 tiles of 8 px."""
    def sizes(count: int) -> dict[str, Tensor]:
        return {"image_sizes": torch.tensor([[12, 8]] * count)}

    return _one_image_model(model, (3, 3, 8, 8), seed, pixel_extra=sizes)


_PINPOINTS = [[8, 8], [8, 16], [16, 8]]


def tiny_llava_next_video(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LLaVA-NeXT-Video: LLaVA-NeXT's any-resolution images, plus pooled video frames (not used here)."""
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    config = LlavaNextVideoConfig(text_config=_llama(), vision_config=_clip(), image_token_index=IMAGE_TOKEN,
                                  video_token_index=97, vision_feature_layer=-1, image_grid_pinpoints=_PINPOINTS)
    return _anyres_model(_build(LlavaNextVideoForConditionalGeneration, config, seed), seed)


def tiny_llava_onevision(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LLaVA-OneVision: SigLIP tiles (all patches kept), any resolution, a Qwen2 language model."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    config = LlavaOnevisionConfig(text_config=_text_config(num_key_value_heads=2) | {"model_type": "qwen2"},
                                  vision_config=_siglip_vision() | {"model_type": "siglip_vision_model"},
                                  image_token_index=IMAGE_TOKEN, video_token_index=97, image_grid_pinpoints=_PINPOINTS)
    return _anyres_model(_build(LlavaOnevisionForConditionalGeneration, config, seed), seed)


def _cohere2(**extra: Any) -> dict[str, Any]:
    """A Cohere2 language model: a sliding-window layer, then a full-attention layer."""
    return _text_config(sliding_window=SLIDING_WINDOW, layer_types=["sliding_attention", "full_attention"],
                        **extra) | {"model_type": "cohere2"}


def tiny_aya_vision(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Aya Vision: SigLIP (4x4 patches), 2x2 pixel shuffle (4 image tokens), a Cohere2 language model."""
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration

    config = AyaVisionConfig(text_config=_cohere2(), vision_config=_siglip_vision() | {"model_type": "siglip_vision_model"},
                             image_token_index=IMAGE_TOKEN)
    return _one_image_model(_build(AyaVisionForConditionalGeneration, config, seed), (3, 8, 8), seed,
                            before=[96], after=[97])


def tiny_cohere2_vision(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Command A Vision: SigLIP (4x4 patches), 2x2 pixel shuffle (4 image tokens), a Cohere2 language model."""
    from transformers import Cohere2VisionConfig, Cohere2VisionForConditionalGeneration

    config = Cohere2VisionConfig(text_config=_cohere2(), vision_config=_siglip_vision() | {"model_type": "siglip_vision_model"},
                                 image_token_id=IMAGE_TOKEN, alignment_intermediate_size=64)
    return _one_image_model(_build(Cohere2VisionForConditionalGeneration, config, seed), (3, 8, 8), seed,
                            before=[96], after=[97])


def _image_block_model(model: nn.Module, pixel_shape: Sequence[int], seed: int, block: Sequence[int],
                       pixel_extra: Callable[[int], Mapping[str, Tensor]] | None = None) -> tuple[nn.Module, InputBuilder]:
    """A family whose processor writes ``block`` (image tokens and the family's separators) for one image of
    ``pixel_shape``; ``pixel_extra(n_images)`` adds the image inputs besides ``pixel_values``."""
    extra_pixels = pixel_extra or (lambda count: {})

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, block) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, pixel_shape, seed)
        batch.update(extra_pixels(len(prompts)))
        return batch

    return model, make_inputs


def _pixtral_model(model: nn.Module, seed: int) -> tuple[nn.Module, InputBuilder]:
    """A Pixtral-tower family: an 8x12 image (4x6 patches, 2x2 merged: 2 rows of 3 image tokens), each row
    closed by ``[IMG_BREAK]`` (96) and the last by ``[IMG_END]`` (97), as the Pixtral processor writes them."""
    rows, columns, image_break, image_end = 2, 3, 96, 97

    def sizes(count: int) -> dict[str, Tensor]:
        return {"image_sizes": torch.tensor([[8, 12]] * count)}

    assert _image_features(model, pixel_values=_seeded_images([[]], (3, 8, 12), seed), **sizes(1)) == rows * columns
    block = [token for row in range(rows) for token in [*[IMAGE_TOKEN] * columns, image_break]]
    block[-1] = image_end
    return _image_block_model(model, (3, 8, 12), seed, block, sizes)


def _pixtral_vision() -> dict[str, Any]:
    return dict(model_type="pixtral", image_size=16, patch_size=2, hidden_size=32, intermediate_size=37,
                num_hidden_layers=2, num_attention_heads=4, head_dim=8)


def tiny_mistral3(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Mistral 3 (Mistral Small 3.1): a Pixtral tower, 2x2 patch merging, a Mistral language model (every layer
    sliding when its config sets a window, as Mistral's does by default)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8, sliding_window=SLIDING_WINDOW) | {"model_type": "mistral"}
    config = Mistral3Config(text_config=text, vision_config=_pixtral_vision(), image_token_index=IMAGE_TOKEN)
    return _pixtral_model(_build(Mistral3ForConditionalGeneration, config, seed), seed)


def tiny_lighton_ocr(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LightOnOCR: a Pixtral tower, 2x2 patch merging, a Qwen3 language model."""
    from transformers import LightOnOcrConfig, LightOnOcrForConditionalGeneration

    config = LightOnOcrConfig(text_config=_text_config(num_key_value_heads=2, head_dim=8) | {"model_type": "qwen3"},
                              vision_config=_pixtral_vision(), image_token_id=IMAGE_TOKEN)
    return _pixtral_model(_build(LightOnOcrForConditionalGeneration, config, seed), seed)


def _got_ocr2(config_cls: Any, seed: int) -> tuple[nn.Module, InputBuilder]:
    """GOT-OCR 2 layout: a SAM-style windowed ViT (16 px / patch 2: 8x8), two stride-2 convolutions (4 image
    tokens), a Qwen2 language model; the image between ``<img>`` and ``</img>``."""
    from transformers import GotOcr2ForConditionalGeneration

    vision = dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=4, image_size=16,
                  patch_size=2, window_size=4, global_attn_indexes=[1], mlp_dim=37)
    config = config_cls(text_config=_text_config(num_key_value_heads=2) | {"model_type": "qwen2"},
                        vision_config=vision, image_token_index=IMAGE_TOKEN)
    return _one_image_model(_build(GotOcr2ForConditionalGeneration, config, seed), (3, 16, 16), seed,
                            before=[96], after=[97])


def tiny_got_ocr2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """GOT-OCR 2.0."""
    from transformers import GotOcr2Config

    return _got_ocr2(GotOcr2Config, seed)


def tiny_pp_chart2table(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """PP-Chart2Table: GOT-OCR 2.0's architecture under its own config."""
    from transformers import PPChart2TableConfig

    return _got_ocr2(PPChart2TableConfig, seed)


def _internvl(config_cls: Any, model_cls: Any, text_type: str, seed: int) -> tuple[nn.Module, InputBuilder]:
    """InternVL layout: an InternViT tile (8 px / patch 2, CLS dropped: 4x4), 2x2 pixel shuffle (4 image
    tokens) between ``<img>`` and ``</img>``."""
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=8,
                  patch_size=2)
    text = _text_config(num_key_value_heads=2, head_dim=8) | {"model_type": text_type}
    config = config_cls(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN)
    return _one_image_model(_build(model_cls, config, seed), (3, 8, 8), seed, before=[96], after=[97])


def tiny_internvl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """InternVL 3: InternViT, pixel shuffle, a Qwen2 language model."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    return _internvl(InternVLConfig, InternVLForConditionalGeneration, "qwen2", seed)


def tiny_qianfan_ocr(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qianfan-OCR: InternVL's layout with a Qwen3 language model."""
    from transformers import QianfanOCRConfig, QianfanOCRForConditionalGeneration

    return _internvl(QianfanOCRConfig, QianfanOCRForConditionalGeneration, "qwen3", seed)


_FAKE_AROUND_IMAGE, _GLOBAL_IMAGE = 95, 96
"""The Idefics processors' ``<fake_token_around_image>`` and ``<global-img>`` (plain text tokens)."""


def _idefics_tiles(model: nn.Module, seed: int, global_tag: bool = True,
                   tile_mask: Callable[[int], Tensor] | None = None) -> tuple[nn.Module, InputBuilder]:
    """An Idefics-style family: one 8-px tile per prompt (``pixel_values [B, 1, 3, 8, 8]``) whose image tokens
    sit between ``<fake_token_around_image>`` tokens, after ``<global-img>`` where the processor writes it.
    ``tile_mask(count)`` is the pixel attention mask (default: every pixel of every tile is real)."""
    mask = tile_mask or (lambda count: torch.ones(count, 1, 8, 8, dtype=torch.bool))
    before = [_FAKE_AROUND_IMAGE, _GLOBAL_IMAGE] if global_tag else [_FAKE_AROUND_IMAGE]
    return _one_image_model(model, (1, 3, 8, 8), seed, before=before, after=[_FAKE_AROUND_IMAGE],
                            pixel_extra=lambda count: {"pixel_attention_mask": mask(count)})


def tiny_idefics2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Idefics2: SigLIP, a perceiver resampler (4 latents = 4 image tokens), a Mistral language model with a
    sliding window on every layer."""
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, sliding_window=SLIDING_WINDOW) | {"model_type": "mistral"}
    perceiver = dict(hidden_size=32, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=4,
                     resampler_head_dim=8, num_key_value_heads=2)
    config = Idefics2Config(text_config=text, vision_config=_siglip_vision(), perceiver_config=perceiver,
                            image_token_id=IMAGE_TOKEN)
    return _idefics_tiles(_build(Idefics2ForConditionalGeneration, config, seed), seed, global_tag=False)


def tiny_idefics3(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Idefics3: SigLIP (4x4 patches), 2x2 pixel shuffle (4 image tokens), a Llama language model at
    ``model.text_model``."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    config = Idefics3Config(text_config=_llama(), vision_config=_siglip_vision(), image_token_id=IMAGE_TOKEN,
                            scale_factor=2)
    return _idefics_tiles(_build(Idefics3ForConditionalGeneration, config, seed), seed)


def tiny_smolvlm(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """SmolVLM: Idefics3's layout (pixel shuffle, language model at ``model.text_model``)."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    config = SmolVLMConfig(text_config=_llama(), vision_config=_siglip_vision(), image_token_id=IMAGE_TOKEN,
                           scale_factor=2)
    return _idefics_tiles(_build(SmolVLMForConditionalGeneration, config, seed), seed)


def tiny_granite_docling(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Granite-Docling: SigLIP tiles (2x2 pixel shuffle: 4 image tokens) whose first vision layer is also
    added to the first text layers at the image positions (DeepStack); language model at ``model.text_model``.
    Granite's default multipliers are sized for trained weights (embeddings x12, residual branches x0.263, logits /4,
    logit scale 1/64 = 1/head_dim of its 64-wide heads): on random weights they leave attention a share of ~1e-6 of
    the output, too little for any attention method to show. Here the first three are 1 and the logit scale is the
    same rule, 1/head_dim (1/8), still not the usual head_dim**-0.5."""
    from transformers import GraniteDoclingConfig, GraniteDoclingForConditionalGeneration

    vision = _siglip_vision() | {"out_hidden_size": 32, "scale_factor": 2, "deepstack_visual_indexes": [0]}
    text = _text_config(num_key_value_heads=2, attention_multiplier=1 / 8, embedding_multiplier=1.0,
                        residual_multiplier=1.0, logits_scaling=1.0)
    config = GraniteDoclingConfig(text_config=text, vision_config=vision,
                                  image_token_id=IMAGE_TOKEN, pad_token_id=PAD)
    model = _build(GraniteDoclingForConditionalGeneration, config, seed)
    return _idefics_tiles(model, seed, tile_mask=lambda count: torch.ones(count, 1, dtype=torch.bool))


def tiny_aria(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Aria: an Idefics3 vision tower (4x4 patches), a cross-attention projector with 4 queries (4 image
    tokens), a mixture-of-experts language model."""
    from transformers import AriaConfig, AriaForConditionalGeneration

    text = _text_config(num_key_value_heads=2, moe_num_experts=4, moe_topk=2, moe_num_shared_experts=1)
    config = AriaConfig(text_config=text, vision_config=_siglip_vision(), image_token_index=IMAGE_TOKEN,
                        projector_patch_to_query_dict={16: 4})
    model = _build(AriaForConditionalGeneration, config, seed)
    return _one_image_model(model, (3, 8, 8), seed,
                            pixel_extra=lambda count: {"pixel_mask": torch.ones(count, 8, 8, dtype=torch.bool)})


def tiny_llama4(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Llama 4: a chunked-attention RoPE layer (chunks of :data:`SLIDING_WINDOW` tokens, shorter than the
    prompt), then a full-attention NoPE mixture-of-experts layer; a ViT tile (4x4 patches + CLS), 2x2 pixel
    shuffle (4 image tokens), written as ``<|image_start|><|image|>`` + patches + ``<|image_end|>``."""
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8, intermediate_size_mlp=64, num_local_experts=4,
                        num_experts_per_tok=1, interleave_moe_layer_step=2, no_rope_layer_interval=2,
                        attention_chunk_size=SLIDING_WINDOW)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=8,
                  patch_size=2, vision_output_dim=32, projector_input_dim=32, projector_output_dim=32)
    config = Llama4Config(text_config=text, vision_config=vision, image_token_index=IMAGE_TOKEN,
                          boi_token_index=96, eoi_token_index=97)
    model = _build(Llama4ForConditionalGeneration, config, seed)
    assert model.config.text_config.layer_types == ["chunked_attention", "full_attention"]
    with torch.no_grad():
        n_image = model.get_image_features(_seeded_images([[]], (3, 8, 8), seed)).pooler_output.shape[-2]
    return _image_block_model(model, (3, 8, 8), seed, [96, 95, *[IMAGE_TOKEN] * n_image, 97])


def _qwen2_5_vision(**extra: Any) -> dict[str, Any]:
    return dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2,
                spatial_merge_size=2, temporal_patch_size=2, in_channels=3, **extra)


def tiny_hyperclovax_vision_v2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """HyperCLOVA X SEED Vision: a Qwen2.5-VL vision tower (4 image tokens) and a HyperCLOVA X language model
    with 1-D positions."""
    from transformers import HyperCLOVAXVisionV2Config, HyperCLOVAXVisionV2ForConditionalGeneration

    vision = _qwen2_5_vision(model_type="qwen2_5_vl_vision", window_size=8, fullatt_block_indexes=[1])
    config = HyperCLOVAXVisionV2Config(text_config=_text_config(num_key_value_heads=2) | {"model_type": "hyperclovax"},
                                       vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97)
    return _patch_grid_model(_build(HyperCLOVAXVisionV2ForConditionalGeneration, config, seed), seed, [95], [96],
                             patch_shape=(3 * 2 * 2 * 2,), token_types=False)


def tiny_llava_onevision1_5(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LLaVA-OneVision-1.5: a RICE ViT over flattened patches (2x2 merged: 4 image tokens), a Qwen3 language
    model with 1-D positions."""
    from transformers import LlavaOnevision15Config, LlavaOnevision15ForConditionalGeneration

    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2, spatial_merge_size=2,
                  out_hidden_size=32)
    config = LlavaOnevision15Config(text_config=_text_config(num_key_value_heads=2, head_dim=8) | {"model_type": "qwen3"},
                                    vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97,
                                    vision_start_token_id=95, vision_end_token_id=96)
    return _patch_grid_model(_build(LlavaOnevision15ForConditionalGeneration, config, seed), seed, [95], [96],
                             patch_shape=(3 * 2 * 2,), token_types=False)


def tiny_cohere_compass(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Cohere Compass (North Vision): a sliding-window M-RoPE layer, then a full-attention NoPE layer; a
    Qwen3-VL-style tower whose first layer also feeds the first text layer (DeepStack); 4 image tokens."""
    from transformers import CohereCompassConfig, CohereCompassForConditionalGeneration

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    text = _text_config(num_key_value_heads=2, sliding_window=SLIDING_WINDOW,
                        layer_types=["sliding_attention", "full_attention"],
                        rope_parameters={"sliding_attention": rope, "full_attention": None})
    vision = _qwen2_5_vision(num_position_embeddings=16, deepstack_visual_indexes=[0])
    config = CohereCompassConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN,
                                 video_token_id=97, vision_start_token_id=95, vision_end_token_id=96)
    model = _build(CohereCompassForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [95], [96], patch_shape=(3 * 2 * 2 * 2,))


def tiny_kimi_k25(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Kimi K2.5: a MoonViT tower over 2-px patches (2x2 merged: 4 image tokens) and a DeepSeek-V3 language
    model (multi-head latent attention: query/key heads wider than value heads; a dense layer, then MoE)."""
    from transformers import Kimi_K25Config, Kimi_K25ForConditionalGeneration

    text = _text_config(kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=16,
                        first_k_dense_replace=1, n_group=1, topk_group=1) | {"model_type": "deepseek_v3"}
    vision = dict(patch_size=2, pos_emb_height=4, pos_emb_width=4, num_attention_heads=4, num_hidden_layers=2,
                  hidden_size=32, intermediate_size=37)
    config = Kimi_K25Config(text_config=text, vision_config=vision, projection_hidden_size=32,
                            image_token_id=IMAGE_TOKEN, video_token_id=97, vision_start_token_id=95,
                            vision_end_token_id=96)
    return _patch_grid_model(_build(Kimi_K25ForConditionalGeneration, config, seed), seed, [95], [96],
                             patch_shape=(3, 2, 2), token_types=False)


def tiny_mistral_large4(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Mistral Large 4: a Pixtral tower and a DeepSeek-sparse-attention language model: multi-head latent
    attention where an indexer keeps each query's top-6 keys (fewer than the prompt), a RoPE layer that runs
    the indexer, then a NoPE mixture-of-experts layer that reuses its top-k."""
    from transformers import MistralLarge4Config, MistralLarge4ForConditionalGeneration

    text = _text_config(kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=4,
                        num_experts_per_tok=2, moe_intermediate_size=16, index_topk=6, index_head_dim=8,
                        index_n_heads=2, indexer_types=["full", "shared"], no_rope_layers=[1, 0])
    config = MistralLarge4Config(text_config=text, vision_config=_pixtral_vision(), image_token_index=IMAGE_TOKEN)
    return _pixtral_model(_build(MistralLarge4ForConditionalGeneration, config, seed), seed)


def tiny_granite4_vision(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Granite 4 Vision: LLaVA-NeXT tiles whose image positions start empty; window Q-Formers (2x2 windows, one
    query each) add features of one vision layer before text layer 0 and of four spatial offsets before layer 1."""
    from transformers import Granite4VisionConfig, Granite4VisionForConditionalGeneration

    vision = _clip().to_dict() | {"hidden_size": 64}
    config = Granite4VisionConfig(text_config=_text_config(num_key_value_heads=2), vision_config=vision,
                                  image_token_index=IMAGE_TOKEN, image_grid_pinpoints=_PINPOINTS, downsample_rate="1/2",
                                  deepstack_layer_map=[[-2, 0]], spatial_target_layers=[1, 1, 1, 1],
                                  projector_dropout=0.0)
    model = _build(Granite4VisionForConditionalGeneration, config, seed)
    sizes = torch.tensor([[12, 8]])
    with torch.no_grad():
        features = model.model.get_image_features(_seeded_images([[]], (3, 3, 8, 8), seed), sizes)
    n_image = int(features.deepstack_features[0][1][0].shape[0])
    return _image_block_model(model, (3, 3, 8, 8), seed, [*[IMAGE_TOKEN] * n_image],
                              lambda count: {"image_sizes": sizes.expand(count, -1).clone()})


def tiny_fast_vlm(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """FastVLM: a convolutional tower's final feature map (here a transformers ConvNeXt: 8 px -> 2x2 = 4 image
    tokens; the released FastViTHD tower loads through timm) and a Qwen2 language model."""
    from transformers import FastVlmConfig, FastVlmForConditionalGeneration

    vision = dict(model_type="convnext", patch_size=2, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                  image_size=8, hidden_size=32)
    config = FastVlmConfig(text_config=_text_config(num_key_value_heads=2) | {"model_type": "qwen2"},
                           vision_config=vision, image_token_index=IMAGE_TOKEN)
    return _one_image_model(_build(FastVlmForConditionalGeneration, config, seed), (3, 8, 8), seed)


def tiny_perception_lm(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Perception LM: a ViT tile (CLS dropped: 4x4 patches, 2x2 average-pooled: 4 image tokens) and a Llama
    language model. The released Perception Encoder loads through timm; the projector reads the tower's width
    from ``vision_config.model_args["embed_dim"]``, which this CLIP tower carries too."""
    from transformers import PerceptionLMConfig, PerceptionLMForConditionalGeneration

    vision = _clip().to_dict() | {"model_args": {"embed_dim": 32}}
    config = PerceptionLMConfig(text_config=_llama(), vision_config=vision, image_token_id=IMAGE_TOKEN,
                                video_token_id=97, projector_pooling_ratio=2)
    return _one_image_model(_build(PerceptionLMForConditionalGeneration, config, seed), (1, 3, 8, 8), seed)


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


def tiny_minimax_m3_vl(seed: int = 0, index_topk_blocks: int = 64) -> tuple[nn.Module, InputBuilder]:
    """MiniMax-M3: an MoE language model whose first layer is a lightning-indexer block-sparse layer (blocks of 2
    keys, per query and indexer head the top ``index_topk_blocks`` blocks: by default every block at this prompt
    length; 2 indexer heads for 4 query heads) and whose second is full attention; GQA, partial RoPE; a
    Qwen2.5-VL-style patch tower."""
    from transformers import MiniMaxM3SparseForConditionalGeneration, MiniMaxM3VLConfig

    text = _text_config(num_key_value_heads=2, head_dim=8, rotary_dim=4, dense_intermediate_size=64,
                        shared_intermediate_size=16, num_local_experts=4, num_experts_per_tok=2,
                        mlp_layer_types=["dense", "sparse"], layer_types=["minimax_m3_sparse", "full_attention"],
                        index_n_heads=2, index_head_dim=8, index_block_size=2, index_topk_blocks=index_topk_blocks)
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


def tiny_shieldgemma2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """ShieldGemma 2: Gemma 3's model (``Gemma3ForConditionalGeneration``) under its own config class."""
    from transformers import Gemma3ForConditionalGeneration, ShieldGemma2Config

    gemma3, make_inputs = tiny_gemma3(seed)
    tiny = gemma3.config
    config = ShieldGemma2Config(text_config=tiny.text_config.to_dict(), vision_config=tiny.vision_config.to_dict(),
                                mm_tokens_per_image=tiny.mm_tokens_per_image, image_token_index=tiny.image_token_id,
                                boi_token_index=tiny.boi_token_id, eoi_token_index=tiny.eoi_token_id)
    return _build(Gemma3ForConditionalGeneration, config, seed), make_inputs


def tiny_phi4_multimodal(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Phi-4-multimodal: the decoder is the full model (no text sub-config); one 8 px crop plus the global image,
    each 4x4 patches pooled 2x2, with a separator column per row and a separator between them: 13 image tokens."""
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    vision = _siglip_vision() | {"crop_size": 8, "image_token_id": IMAGE_TOKEN}
    audio = dict(hidden_size=32, intermediate_size=37, num_blocks=2, num_attention_heads=4, ext_pw_out_channel=32,
                 depthwise_separable_out_channel=32, nemo_conv_channels=32, audio_token_id=97)
    config = Phi4MultimodalConfig(**_text_config(num_key_value_heads=2), vision_config=vision, audio_config=audio)
    model = _build(Phi4MultimodalForCausalLM, config, seed)
    embedding = model.model.embed_tokens_extend.image_embed
    side = int(embedding.num_img_tokens**0.5)  # pooled patches per side of a crop
    crops = 1
    n_image = (crops + 1) * (embedding.num_img_tokens + side) + 1

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, [IMAGE_TOKEN] * n_image) for p in prompts])
        batch["image_pixel_values"] = _seeded_images(prompts, (crops + 1, 3, 8, 8), seed)
        batch["image_sizes"] = torch.tensor([[8, 8 * crops]] * len(prompts))
        batch["image_attention_mask"] = torch.ones(len(prompts), crops + 1, 4, 4, dtype=torch.long)
        return batch

    return model, make_inputs


def tiny_janus(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Janus: a SigLIP-like tower and an MLP aligner (one token per patch, 16) into Llama; the VQ image generator
    is built tiny and left unused."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    vision = _siglip_vision() | {"projection_dim": 32, "num_image_tokens": 16}
    vq = dict(embed_dim=8, num_embeddings=16, latent_channels=32, base_channels=32, channel_multiplier=[1, 1],
              num_res_blocks=1, projection_dim=32, image_token_embed_dim=32)
    config = JanusConfig(text_config=_text_config() | {"model_type": "llama"}, vision_config=vision, vq_config=vq,
                         image_token_id=IMAGE_TOKEN)
    return _one_image_model(_build(JanusForConditionalGeneration, config, seed), (3, 8, 8), seed)


def tiny_deepseek_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """DeepSeek-VL: SigLIP and an MLP aligner (one token per patch, 16) into Llama."""
    from transformers import DeepseekVLConfig, DeepseekVLForConditionalGeneration

    config = DeepseekVLConfig(text_config=_text_config() | {"model_type": "llama"},
                              vision_config=_siglip_vision() | {"model_type": "siglip_vision_model"},
                              image_token_id=IMAGE_TOKEN)
    return _one_image_model(_build(DeepseekVLForConditionalGeneration, config, seed), (3, 8, 8), seed)


def tiny_deepseek_vl_hybrid(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """DeepSeek-VL hybrid: a low-resolution SigLIP (8 px) and a high-resolution SAM (16 px) tower, fused per patch
    (16 image tokens) into Llama."""
    from transformers import DeepseekVLHybridConfig, DeepseekVLHybridForConditionalGeneration

    sam = dict(model_type="sam_vision_model", hidden_size=32, output_channels=8, num_hidden_layers=2,
               num_attention_heads=4, image_size=16, patch_size=2, window_size=4, global_attn_indexes=[1], mlp_dim=37)
    config = DeepseekVLHybridConfig(text_config=_text_config() | {"model_type": "llama"},
                                    vision_config=_siglip_vision() | {"model_type": "siglip_vision_model"},
                                    high_res_vision_config=sam, image_token_id=IMAGE_TOKEN)
    model = _build(DeepseekVLHybridForConditionalGeneration, config, seed)

    def high_res(count: int) -> dict[str, Tensor]:
        return {"high_res_pixel_values": _seeded_images([[]] * count, (3, 16, 16), seed + 1)}

    return _one_image_model(model, (3, 8, 8), seed, pixel_extra=high_res)
def tiny_ovis2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Ovis2: a visual tokenizer (probabilities over a visual vocabulary, one per patch: 16) whose embedding table
    gives the image tokens, between the start and the grid/end indicator tokens, into Qwen2."""
    from transformers import Ovis2Config, Ovis2ForConditionalGeneration

    start, grid, column, row, end = 93, 94, 95, 96, 97
    vision = _siglip_vision() | {"vocab_size": 32}
    config = Ovis2Config(text_config=_text_config(num_key_value_heads=2) | {"model_type": "qwen2"},
                         vision_config=vision, image_token_id=IMAGE_TOKEN,
                         visual_indicator_token_ids=[start, grid, column, row, end], vocab_size=VOCAB, hidden_size=32)
    model = _build(Ovis2ForConditionalGeneration, config, seed)
    return _one_image_model(model, (3, 8, 8), seed, before=[start], after=[grid, end])


def tiny_ovis2_5(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Ovis2.5: a NaViT tower (patches in, a 4x4 grid, 2x2 merging: 4 image tokens) and a visual tokenizer, into
    Qwen3."""
    from transformers import Ovis2_5Config, Ovis2_5ForConditionalGeneration

    vision = _siglip_vision(16, 2) | {"vocab_size": 32, "window_size": 8, "spatial_merge_size": 2}
    text = _text_config(num_key_value_heads=2, head_dim=8) | {"model_type": "qwen3"}
    config = Ovis2_5Config(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97,
                           image_start_token_id=95, image_end_token_id=96)
    return _patch_grid_model(_build(Ovis2_5ForConditionalGeneration, config, seed), seed, [95], [96],
                             patch_shape=(3 * 2 * 2,))


def tiny_cosmos3_edge(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Cosmos3-Edge: a packed SigLIP2 tower (4x4 patches, 2x2 merging: 4 image tokens) into a decoder with
    M-RoPE."""
    from transformers import Cosmos3EdgeConfig, Cosmos3EdgeForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
    vision = _siglip_vision() | {"num_patches": 16, "spatial_merge_size": 2}
    config = Cosmos3EdgeConfig(text_config=text, vision_config=vision, projector_hidden_size=32,
                               image_token_id=IMAGE_TOKEN, video_token_id=97, vision_start_token_id=95,
                               vision_end_token_id=96)
    return _patch_grid_model(_build(Cosmos3EdgeForConditionalGeneration, config, seed), seed, [95], [96],
                             patch_shape=(3 * 2 * 2,))


def tiny_cosmos3_omni(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Cosmos3-Omni: Qwen3-VL's model (4x4 patches, 2x2 merging: 4 image tokens; deepstack features added to the
    first decoder layers' image positions)."""
    from transformers import Cosmos3OmniConfig, Cosmos3OmniForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8,
                        rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=2,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0])
    config = Cosmos3OmniConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN,
                               video_token_id=97, vision_start_token_id=95, vision_end_token_id=96)
    return _patch_grid_model(_build(Cosmos3OmniForConditionalGeneration, config, seed), seed, [95], [96],
                             patch_shape=(3 * 2 * 2 * 2,))
def tiny_molmo2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Molmo2: two crops of 4x4 patches (the resized image, one high-resolution crop), each pooled 2x2 by
    cross-attention into 2x2 image tokens; every row ends in a column token, each view is wrapped in start and end
    tokens (16 image-block tokens, 8 of them image features), and the whole block attends bidirectionally."""
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    patch, column, start, low_res_start, end = IMAGE_TOKEN, 93, 94, 95, 96
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, head_dim=8, image_size=[8, 8], patch_size=2)
    adapter = dict(vision_feature_layer=[-1, 0], hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                   head_dim=8, intermediate_size=37, text_hidden_size=32)
    text = _text_config(num_key_value_heads=2, head_dim=8, additional_vocab_size=0)
    config = Molmo2Config(text_config=text, vision_config=vision, adapter_config=adapter, image_patch_id=patch,
                          image_start_token_id=start, low_res_image_start_token_id=low_res_start,
                          image_end_token_id=end)
    model = _build(Molmo2ForConditionalGeneration, config, seed)
    rows = cols = 2  # pooled tokens per side of each view: 4x4 patches pooled 2x2
    pool = torch.arange(16).view(rows, 2, cols, 2).permute(0, 2, 1, 3).reshape(rows * cols, 4)
    pooling = torch.cat([pool, pool + 16])  # the resized view's patches, then the crop's
    view = [*([patch] * cols + [column]) * rows, end]
    block = [low_res_start, *view, start, *view]

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, block) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (2, 16, 12), seed)
        batch["image_token_pooling"] = pooling.repeat(len(prompts), 1)
        batch["image_grids"] = torch.tensor([[rows, cols, rows, cols]] * len(prompts))
        batch["image_num_crops"] = torch.tensor([2] * len(prompts))
        batch["mm_token_type_ids"] = torch.isin(batch["input_ids"], torch.tensor(block)).long()
        return batch

    return model, make_inputs
def _tiny_minicpm(config_cls: Any, model_cls: type[nn.Module], seed: int, downsample_mode: str,
                  image_size: int, mrope: bool = False, **extra: Any) -> tuple[nn.Module, InputBuilder]:
    """A MiniCPM-V 4.6-style family: a hybrid Qwen3.5 language model (a gated-delta-net linear-attention layer,
    then a full-attention layer) and a NaViT tower whose patches are packed into one row (``[1, 3, patch,
    patches * patch]``, ``target_sizes``); ``"16x"`` merges patches 4x4 (a window merger after the tower's first
    layer, then the merger), ``"4x"`` 2x2. ``insert_layer_id`` goes on the top config, which overwrites the vision
    config's: at its default 6 a 2-layer tower never runs the window merger, and the merger then reads an image's
    tokens off the packed patches of the images before it. The image tokens sit between the image start (95) and end
    (96) tokens; with ``mrope``, ``mm_token_type_ids`` mark them for the 3D positions."""
    text = _text_config(num_key_value_heads=2, head_dim=8, layer_types=["linear_attention", "full_attention"],
                        linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                        linear_num_value_heads=4) | {"model_type": "qwen3_5_text"}
    config = config_cls(text_config=text, vision_config=_siglip_vision(image_size), image_token_id=IMAGE_TOKEN,
                        video_token_id=97, insert_layer_id=0, downsample_mode=downsample_mode, **extra)
    model = _build(model_cls, config, seed)
    side = image_size // 2  # patches per side

    def pixels(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        images = _seeded_images(prompts, (3, 2, side * side * 2), seed)
        return {"pixel_values": torch.cat(list(images), dim=-1).unsqueeze(0),
                "target_sizes": torch.tensor([[side, side]] * len(prompts), dtype=torch.int32)}

    n_image = _image_features(model, **pixels([[]]))

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, [95, *[IMAGE_TOKEN] * n_image, 96]) for p in prompts])
        batch.update(pixels(prompts))
        if mrope:
            batch["mm_token_type_ids"] = (batch["input_ids"] == IMAGE_TOKEN).int()
        return batch

    return model, make_inputs


def tiny_minicpmv4_6(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """MiniCPM-V 4.6: 16 px images, 8x8 patches merged 4x4: 4 image tokens."""
    from transformers import MiniCPMV4_6Config, MiniCPMV4_6ForConditionalGeneration

    return _tiny_minicpm(MiniCPMV4_6Config, MiniCPMV4_6ForConditionalGeneration, seed, "16x", 16)


def tiny_minicpm_ocr(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """MiniCPM-OCR: MiniCPM-V 4.6's model reading at ``"4x"``: 8 px images, 4x4 patches merged 2x2: 4 tokens."""
    from transformers import MiniCPMOcrConfig, MiniCPMOcrForConditionalGeneration

    return _tiny_minicpm(MiniCPMOcrConfig, MiniCPMOcrForConditionalGeneration, seed, "4x", 8)


def tiny_minicpmv4_7(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """MiniCPM-V 4.7: MiniCPM-V 4.6 with M-RoPE over the image canvas (from ``mm_token_type_ids`` and the image
    and slice marker ids)."""
    from transformers import MiniCPMV4_7Config, MiniCPMV4_7ForConditionalGeneration

    return _tiny_minicpm(MiniCPMV4_7Config, MiniCPMV4_7ForConditionalGeneration, seed, "16x", 16, mrope=True,
                         image_start_id=95, image_end_id=96, slice_start_id=93, slice_end_id=94, newline_id=92)
def tiny_lfm3_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LFM3-VL: a hybrid language model (a short-convolution layer, then a sliding-window attention layer) and a
    hybrid convolution/attention vision tower (4x4 patches, 2x2 merging: 4 image tokens)."""
    from transformers import Lfm3VlConfig, Lfm3VlForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8, layer_types=["conv", "sliding_attention"],
                        sliding_window=SLIDING_WINDOW, conv_L_cache=3) | {"model_type": "lfm3"}
    vision = dict(hidden_size=32, intermediate_size=37, patch_size=2, spatial_merge_size=2, temporal_patch_size=2,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  layer_types=["conv", "full_attention"])
    config = Lfm3VlConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97,
                          vision_start_token_id=95, vision_end_token_id=96, projector_hidden_size=32)
    model = _build(Lfm3VlForConditionalGeneration, config, seed)
    return _patch_grid_model(model, seed, [95], [96], patch_shape=(3 * 2 * 2 * 2,), token_types=False)
def tiny_nemotron_h_omni(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Nemotron-H Omni: a hybrid language model whose blocks all hold their mixer as ``mixer`` (a Mamba-2 block,
    then an attention block) and a RADIO tower (packed patches, 4x4 grid, 2x2 pixel shuffle: 4 image tokens
    between ``<img>`` and ``</img>``)."""
    from transformers import NemotronH_Omni_Reasoning_V3, NemotronH_Omni_Reasoning_V3_Config

    text = _text_config(num_key_value_heads=2, head_dim=8, layers_block_type=["linear_attention", "full_attention"],
                        ssm_state_size=8, mamba_num_heads=8, mamba_head_dim=8, n_groups=2, chunk_size=8)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=2, image_size=8,
                  max_img_size=16, num_cls_tokens=1, num_registers=1, video_temporal_patch_size=2)
    config = NemotronH_Omni_Reasoning_V3_Config(text_config=text | {"model_type": "nemotron_h"}, vision_config=vision,
                                                vision_hidden_size=32, projector_hidden_size=32,
                                                image_token_id=IMAGE_TOKEN, video_token_id=97)
    model = _build(NemotronH_Omni_Reasoning_V3, config, seed)
    grid = torch.tensor([[4, 4]])

    def pixels(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        return {"pixel_values": _seeded_images(prompts, (16, 3 * 2 * 2), seed).flatten(0, 1),
                "image_grid_hw": grid.expand(len(prompts), -1).clone()}

    with torch.no_grad():
        n_image = int(model.get_image_features(**pixels([[]])).pooler_output[0].shape[0])

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, [95, *[IMAGE_TOKEN] * n_image, 96]) for p in prompts])
        batch.update(pixels(prompts))
        return batch

    return model, make_inputs
_GEMMA4_SPECIAL_IDS = dict(image_token_id=IMAGE_TOKEN, boi_token_id=96, eoi_token_id=97, video_token_id=95,
                           audio_token_id=94, boa_token_id=93, eoa_token_index=92)


def _gemma4_vision() -> dict[str, Any]:
    """A tiny Gemma 4 vision tower: 2 px patches, pooled 2x2 (an 8 px image: 4x4 patches, 4 image tokens)."""
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, head_dim=8, patch_size=2, pooling_kernel_size=2, position_embedding_size=16)


def _gemma4_image_inputs(model: nn.Module, side: int, patch_dim: int, seed: int) -> tuple[nn.Module, InputBuilder]:
    """A Gemma 4-style family: one image of ``side x side`` patches of ``patch_dim`` values (with their (x, y)
    ``image_position_ids``), its tokens between ``<boi>`` (96) and ``<eoi>`` (97), marked in ``mm_token_type_ids``."""
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    positions = torch.stack([x.flatten(), y.flatten()], dim=-1)

    def pixel_positions(count: int) -> dict[str, Tensor]:
        return {"image_position_ids": positions.expand(count, -1, -1).clone()}

    def token_types(input_ids: Tensor) -> dict[str, Tensor]:
        return {"mm_token_type_ids": (input_ids == IMAGE_TOKEN).long()}

    return _one_image_model(model, (side * side, patch_dim), seed, before=[96], after=[97],
                            pixel_extra=pixel_positions, token_extra=token_types)


def tiny_gemma4(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Gemma 4: a sliding-window layer with bidirectional attention inside each image, then a full-attention
    (causal) layer; per-layer token embeddings feed every layer."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8, global_head_dim=8, sliding_window=SLIDING_WINDOW,
                        layer_types=["sliding_attention", "full_attention"], use_bidirectional_attention="vision",
                        hidden_size_per_layer_input=8, vocab_size_per_layer_input=VOCAB)
    config = Gemma4Config(text_config=text, vision_config=_gemma4_vision(), **_GEMMA4_SPECIAL_IDS)
    return _gemma4_image_inputs(_build(Gemma4ForConditionalGeneration, config, seed), 4, 3 * 2 * 2, seed)
def tiny_gemma4_unified(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Gemma 4 unified: no vision tower; each 4 px patch (2 px patches merged 2x2) is projected into one image
    token (an 8 px image: 4 tokens); a sliding-window and a full-attention layer, both bidirectional inside
    each image."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    text = _text_config(num_key_value_heads=2, head_dim=8, global_head_dim=8, sliding_window=SLIDING_WINDOW,
                        layer_types=["sliding_attention", "full_attention"])
    vision = dict(patch_size=2, pooling_kernel_size=2, mm_embed_dim=32, mm_posemb_size=16, output_proj_dims=32)
    config = Gemma4UnifiedConfig(text_config=text, vision_config=vision, **_GEMMA4_SPECIAL_IDS)
    model = _build(Gemma4UnifiedForConditionalGeneration, config, seed)
    return _gemma4_image_inputs(model, 2, 3 * 4 * 4, seed)
def tiny_apertus1p5(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Apertus 1.5: a VQ image tokenizer (8 px, one downsampling: a 4x4 grid of codes) whose codes, offset into the
    vocabulary, are embedded by the language model's own embedding at the image tokens; the processor writes
    ``<boi> 4 * 4 <wrapper>``, then the rows of image tokens separated by end-of-line tokens, then ``<eoi>``."""
    from transformers import Apertus1p5Config, Apertus1p5ForConditionalGeneration

    boi, four, times, wrapper, end_of_line, eoi = 90, 20, 21, 91, 92, 93
    text = _text_config(num_key_value_heads=2) | {"max_position_embeddings": 8192}
    vision = dict(codebook_size=4, embed_dim=8, latent_channels=32, base_channels=32, channel_multiplier=[1, 1],
                  num_res_blocks=1, attn_resolutions=[], resolution=8)
    audio = dict(num_filters=4, upsampling_ratios=[2, 2], hidden_size=16, codebook_size=4, codebook_dim=16,
                 num_lstm_layers=1, decoder_hidden_size=16, decoder_intermediate_size=16, decoder_num_layers=1,
                 decoder_attention_num_groups=4)
    config = Apertus1p5Config(text_config=text, vision_config=vision, audio_config=audio, image_token_id=IMAGE_TOKEN,
                              audio_token_id=97, image_token_offset=80, audio_token_offset=84)
    model = _build(Apertus1p5ForConditionalGeneration, config, seed)
    sizes = torch.tensor([[8, 8]])
    with torch.no_grad():
        codes = model.model.vision_tokenizer.encode(_seeded_images([[]], (3, 8, 8), seed)).image_tokens
    rows, columns = codes.shape[1:]
    lines = [*([IMAGE_TOKEN] * columns + [end_of_line]) * (rows - 1), *[IMAGE_TOKEN] * columns]
    block = [boi, four, times, four, wrapper, *lines, eoi]

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, block) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (3, 8, 8), seed)
        batch["image_sizes"] = sizes.expand(len(prompts), -1).clone()
        return batch

    return model, make_inputs
def tiny_deepseek_ocr2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """DeepSeek-OCR 2: a SAM tower (16 px, downsampled to 2x2 patches) whose patches and 144 learned queries (the
    checkpoint's fixed count for small images) go through a causal-query encoder; the queries and a view separator
    are the 145 image tokens, read by a DeepSeek-MoE language model (a dense layer, then a sparse one)."""
    from transformers import DeepseekOcr2Config, DeepseekOcr2ForConditionalGeneration

    text = _text_config(num_key_value_heads=2, mlp_layer_types=["dense", "sparse"], n_routed_experts=4,
                        n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=16, n_group=1, topk_group=1)
    sam = dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=4, image_size=16,
               patch_size=2, window_size=4, global_attn_indexes=[1], mlp_dim=37, downsample_channels=[16, 32])
    encoder = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)
    config = DeepseekOcr2Config(text_config=text, vision_config=dict(sam_config=sam, encoder_config=encoder),
                                image_token_id=IMAGE_TOKEN)
    return _one_image_model(_build(DeepseekOcr2ForConditionalGeneration, config, seed), (3, 16, 16), seed)
def tiny_unlimited_ocr(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Unlimited-OCR: a SAM tower (16 px, downsampled to 2x2) feeding a CLIP encoder; each row of the 2x2 global
    view ends in a newline feature and a view separator follows (7 image tokens), read by a DeepSeek-MoE language
    model (a dense layer, then a sparse one). Its layers are reference-sliding-window layers, as the checkpoint's:
    they keep the whole prompt visible and slide over generated tokens only, so at the prefill they are causal."""
    from transformers import UnlimitedOcrConfig, UnlimitedOcrForConditionalGeneration

    text = _text_config(num_key_value_heads=2, mlp_layer_types=["dense", "sparse"], n_routed_experts=4,
                        n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=16, n_group=1, topk_group=1,
                        sliding_window=SLIDING_WINDOW, layer_types=["reference_sliding_attention"] * 2)
    sam = dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=4, image_size=16,
               patch_size=2, window_size=4, global_attn_indexes=[1], mlp_dim=37, downsample_channels=[16, 32])
    encoder = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=4,
                   patch_size=2)
    config = UnlimitedOcrConfig(text_config=text, vision_config=dict(sam_config=sam, encoder_config=encoder),
                                image_token_id=IMAGE_TOKEN)
    return _one_image_model(_build(UnlimitedOcrForConditionalGeneration, config, seed), (3, 16, 16), seed)
# --- group 3: builders above this line ---


def _blip_vision_qformer() -> dict[str, Any]:
    """The tiny ViT and Q-Former of the BLIP-2 descendants (8 px / patch 2; 2 Q-Former layers)."""
    return dict(
        vision_config=dict(image_size=8, patch_size=2, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4),
        qformer_config=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, encoder_hidden_size=32),
    )


def _opt_text() -> dict[str, Any]:
    """A tiny OPT, the language model of the BLIP-2 checkpoints that eahlib serves."""
    return dict(model_type="opt", vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=32, pad_token_id=PAD,
                bos_token_id=BOS, eos_token_id=EOS)


def tiny_blip_2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """BLIP-2 with an OPT language model and ``image_token_index`` set: the 4 Q-Former queries are 4 image tokens
    in front of ``<bos>``, as the processor puts them."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    config = Blip2Config(**_blip_vision_qformer(), text_config=_opt_text(), num_query_tokens=4,
                         image_token_index=IMAGE_TOKEN)
    model = _build(Blip2ForConditionalGeneration, config, seed)

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([[*[IMAGE_TOKEN] * config.num_query_tokens, BOS, *p] for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (3, 8, 8), seed)
        return batch

    return model, make_inputs


def tiny_instructblipvideo(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """InstructBLIP-Video: the Q-Former runs on each of the 4 frames; 4 frames x 2 queries = 8 video tokens in
    front of ``<bos>``, as the processor puts them."""
    from transformers import InstructBlipVideoConfig, InstructBlipVideoForConditionalGeneration

    text = _text_config() | {"model_type": "llama"}
    config = InstructBlipVideoConfig(**_blip_vision_qformer(), text_config=text, num_query_tokens=2,
                                     video_token_index=IMAGE_TOKEN)
    model = _build(InstructBlipVideoForConditionalGeneration, config, seed)
    frames = 4
    qformer_prompt = [BOS, 5, 6, 7]
    with torch.no_grad():
        features = model.get_video_features(
            _seeded_images([[]], (frames, 3, 8, 8), seed), torch.tensor([qformer_prompt]), return_dict=True
        )
    n_video = int(features.pooler_output.shape[1])

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([[*[IMAGE_TOKEN] * n_video, BOS, *p] for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (frames, 3, 8, 8), seed)
        batch["qformer_input_ids"] = torch.tensor([qformer_prompt] * len(prompts))
        batch["qformer_attention_mask"] = torch.ones_like(batch["qformer_input_ids"])
        return batch

    return model, make_inputs


def tiny_fuyu(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Fuyu: no vision tower; a linear map embeds each 2x2 patch; 3 rows of 3 patch tokens, each row ended by a
    newline token, then ``<bos>`` and the prompt, as the processor lays them out."""
    from transformers import FuyuConfig, FuyuForCausalLM

    text = _text_config(partial_rotary_factor=0.5, qk_layernorm=True, hidden_act="relu2") | {"model_type": "persimmon"}
    config = FuyuConfig(text_config=text, image_size=6, patch_size=2, num_channels=3, image_token_id=IMAGE_TOKEN)
    model = _build(FuyuForCausalLM, config, seed)
    rows, newline = 3, 97
    block = ([IMAGE_TOKEN] * rows + [newline]) * rows

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([[*block, BOS, *p] for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (rows * rows, 3 * 2 * 2), seed)
        return batch

    return model, make_inputs


def _vq_vocabulary(names: Sequence[str], first_id: int) -> dict[str, int]:
    """A vocabulary map of a VQ image tokenizer's codes, one text-vocabulary id each from ``first_id``, plus the
    ``<image>`` placeholder the processor puts in the prompt."""
    return {name: first_id + code for code, name in enumerate(names)} | {"<image>": IMAGE_TOKEN}


def tiny_chameleon(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Chameleon: a VQ-GAN turns the 8 px image into 4x4 codes whose vocabulary embeddings replace the 16
    ``<image>`` placeholders between begin/end-of-image tokens; the decoder is the model itself."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    codes = 8
    names = ["IMGIMG" + "".join(chr(ord("A") + int(digit)) for digit in str(code)) + "Z" for code in range(codes)]
    vq = dict(embed_dim=4, num_embeddings=codes, latent_channels=4, resolution=8, base_channels=32,
              channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[])
    config = ChameleonConfig(**_text_config(), vq_config=vq, vocabulary_map=_vq_vocabulary(names, 80))
    model = _build(ChameleonForConditionalGeneration, config, seed)
    return _one_image_model(model, (3, 8, 8), seed, before=[96], after=[97])


def tiny_emu3(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Emu3: a VQ-VAE codes the 8 px image as 4x4 visual tokens plus an end-of-line token per row (20
    ``<image>`` placeholders); the language model sits at ``model.text_model``."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    codes = 8
    names = [f"<|visual token{code:06d}|>" for code in range(codes)]
    vocabulary = _vq_vocabulary(names, 80) | {"<|extra_200|>": 95}
    vq = dict(codebook_size=codes, embed_dim=4, latent_channels=4, base_channels=32, channel_multiplier=[1, 2],
              num_res_blocks=1, attn_resolutions=[], hidden_size=64, num_attention_heads=1,
              temporal_downsample_factor=1)
    config = Emu3Config(vq_config=vq, text_config=_text_config(), vocabulary_map=vocabulary)
    model = _build(Emu3ForConditionalGeneration, config, seed)
    size = torch.tensor([[8, 8]])

    def sizes(count: int) -> dict[str, Tensor]:
        return {"image_sizes": size.expand(count, -1).clone()}

    return _one_image_model(model, (3, 8, 8), seed, before=[96], after=[97], pixel_extra=sizes)


def _packed_image_model(model: nn.Module, pixel_shape: Sequence[int], grid: Tensor,
                        seed: int) -> tuple[nn.Module, InputBuilder]:
    """A family whose processor packs the patches of all images along one dimension (``pixel_shape`` per image)
    and sends each image's grid as ``image_grid_thw`` ``[1, 3]``; one image per prompt, right after ``<bos>``."""
    n_image = _image_features(model, pixel_values=_seeded_images([[]], pixel_shape, seed)[0], image_grid_thw=grid)

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, [IMAGE_TOKEN] * n_image) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, pixel_shape, seed).flatten(0, 1)
        batch["image_grid_thw"] = grid.expand(len(prompts), -1).clone()
        return batch

    return model, make_inputs


def _muse(config_cls: Any, model_cls: Any, text: dict[str, Any], seed: int,
          **extra: Any) -> tuple[nn.Module, InputBuilder]:
    """A Muse model (Glimmer, Spark): 4x4 patches merged 2x2 into 4 image tokens; a sliding-window layer
    (``SLIDING_WINDOW``), then a full-attention layer without position embeddings, as the configs default."""
    vision = dict(patch_size=2, pos_emb_height=4, pos_emb_width=4, num_attention_heads=4, num_hidden_layers=2,
                  hidden_size=32, intermediate_size=37, merge_size=2)
    config = config_cls(text_config=_text_config(head_dim=8, sliding_window=SLIDING_WINDOW) | text,
                        vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97, out_hidden_size=32 * 4,
                        projector_hidden_size=32, **extra)
    model = _build(model_cls, config, seed)
    return _packed_image_model(model, (16, 2 * 3 * 2 * 2), torch.tensor([[1, 4, 4]]), seed)


def tiny_muse_glimmer(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Muse Glimmer: gated attention, a sliding layer and a NoPE full-attention layer."""
    from transformers import MuseGlimmerConfig, MuseGlimmerForConditionalGeneration

    return _muse(MuseGlimmerConfig, MuseGlimmerForConditionalGeneration, {"model_type": "muse_glimmer_text"}, seed)


def tiny_muse_spark(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Muse Spark: Muse Glimmer's attention with mixture-of-experts layers (and an audio tower, unused here)."""
    from transformers import MuseSparkConfig, MuseSparkForConditionalGeneration

    text = dict(model_type="muse_spark_text", moe_intermediate_size=16, moe_hidden_size=16, num_local_experts=4,
                num_experts_per_tok=2)
    audio = dict(patch_sizes=[2], hidden_sizes=[8], depths=[1], num_hidden_layers=1, out_hidden_size=32)
    return _muse(MuseSparkConfig, MuseSparkForConditionalGeneration, text, seed, audio_config=audio,
                 audio_token_id=96)


def tiny_inkling2(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Inkling 2: a sliding-window layer, then a full layer; both add a relative-position bias to the logits and
    let each query spread attention over a sink logit computed from its hidden state; mixture of experts. Weights
    are drawn 10x wider than the default, or the random attention would be uniform and have no vision sinks."""
    from transformers import Inkling2Config, Inkling2ForConditionalGeneration

    text = _text_config(head_dim=8, swa_num_attention_heads=4, swa_num_key_value_heads=4, swa_head_dim=8,
                        sliding_window_size=SLIDING_WINDOW, layer_types=["hybrid_sliding", "hybrid"], d_rel=4,
                        rel_extent=16, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2,
                        unpadded_vocab_size=VOCAB, n_layers_per_attn_res_block=1, conv_kernel_size=3,
                        initializer_range=0.2)
    del text["intermediate_size"]
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, patch_size=2, spatial_merge_size=2,
                  posemb_grid_size=4, projection_hidden_dim=32, text_hidden_size=32)
    config = Inkling2Config(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN)
    model = _build(Inkling2ForConditionalGeneration, config, seed)
    return _packed_image_model(model, (4, 4, 4, 3), torch.tensor([[1, 2, 2]]), seed)


def tiny_inkling_mm_model(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Inkling: a sliding-window layer, then a full layer, both adding a relative-position bias to the logits; the
    vision tower maps each 2-frame 4x4 patch to one image token (4 patches), after the image begin token. Weights
    are drawn 10x wider than the default, or the position bias would be too small for the checks to see."""
    from transformers import InklingConfig, InklingForConditionalGeneration

    text = _text_config(head_dim=8, swa_num_attention_heads=4, swa_num_key_value_heads=4, swa_head_dim=8,
                        sliding_window_size=SLIDING_WINDOW, layer_types=["hybrid_sliding", "hybrid"], d_rel=4,
                        rel_extent=16, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2,
                        n_shared_experts=1, conv_kernel_size=3, initializer_range=0.2)
    vision = dict(text_hidden_size=32, patch_size=4, temporal_patch_size=2, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4)
    audio = dict(n_mel_bins=4, mel_vocab_size=8, text_hidden_size=32)
    config = InklingConfig(text_config=text, vision_config=vision, audio_config=audio, image_token_id=IMAGE_TOKEN,
                           audio_token_id=97, image_bos_token_id=96)
    model = _build(InklingForConditionalGeneration, config, seed)
    patches = (4, 2, 4, 4, 3)  # patches of one image: frames, height, width, channels
    with torch.no_grad():
        features = model.model.get_image_features(_seeded_images([[]], patches, seed)[0]).pooler_output
    n_image = int(features.shape[:-1].numel())

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, [config.image_bos_token_id, *[IMAGE_TOKEN] * n_image]) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, patches, seed).flatten(0, 1)
        return batch

    return model, make_inputs


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
    "vipllava": tiny_vipllava,
    "video_llava": tiny_video_llava,
    "llava_next_video": tiny_llava_next_video,
    "llava_onevision": tiny_llava_onevision,
    "aya_vision": tiny_aya_vision,
    "cohere2_vision": tiny_cohere2_vision,
    "mistral3": tiny_mistral3,
    "lighton_ocr": tiny_lighton_ocr,
    "got_ocr2": tiny_got_ocr2,
    "pp_chart2table": tiny_pp_chart2table,
    "internvl": tiny_internvl,
    "qianfan_ocr": tiny_qianfan_ocr,
    "idefics2": tiny_idefics2,
    "idefics3": tiny_idefics3,
    "smolvlm": tiny_smolvlm,
    "granite_docling": tiny_granite_docling,
    "aria": tiny_aria,
    "llama4": tiny_llama4,
    "hyperclovax_vision_v2": tiny_hyperclovax_vision_v2,
    "llava_onevision1_5": tiny_llava_onevision1_5,
    "cohere_compass": tiny_cohere_compass,
    "kimi_k25": tiny_kimi_k25,
    "mistral_large4": tiny_mistral_large4,
    "granite4_vision": tiny_granite4_vision,
    "fast_vlm": tiny_fast_vlm,
    "perception_lm": tiny_perception_lm,
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
    
    "shieldgemma2": tiny_shieldgemma2,
    "phi4_multimodal": tiny_phi4_multimodal,
    "janus": tiny_janus,
    "deepseek_vl": tiny_deepseek_vl,
    "deepseek_vl_hybrid": tiny_deepseek_vl_hybrid,
    "ovis2": tiny_ovis2,
    "ovis2_5": tiny_ovis2_5,
    "cosmos3_edge": tiny_cosmos3_edge,
    "cosmos3_omni": tiny_cosmos3_omni,
    "molmo2": tiny_molmo2,
    "minicpmv4_6": tiny_minicpmv4_6,
    "minicpm_ocr": tiny_minicpm_ocr,
    "minicpmv4_7": tiny_minicpmv4_7,
    "lfm3_vl": tiny_lfm3_vl,
    "nemotron_h_omni": tiny_nemotron_h_omni,
    "gemma4": tiny_gemma4,
    "gemma4_unified": tiny_gemma4_unified,
    "apertus1p5": tiny_apertus1p5,
    "deepseek_ocr2": tiny_deepseek_ocr2,
    "unlimited_ocr": tiny_unlimited_ocr,
    # --- group 3: rows above this line ---
    
    "blip-2": tiny_blip_2,
    "instructblipvideo": tiny_instructblipvideo,
    "fuyu": tiny_fuyu,
    "chameleon": tiny_chameleon,
    "emu3": tiny_emu3,
    "muse_glimmer": tiny_muse_glimmer,
    "muse_spark": tiny_muse_spark,
    "inkling_mm_model": tiny_inkling_mm_model,
    "inkling2": tiny_inkling2,
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


def _idefics_evidence() -> None:
    model = _on_meta("idefics")
    config = model.config
    assert len(model.model.gated_cross_attn_layers) == config.num_hidden_layers // config.cross_layer_interval > 0
    assert not any(hasattr(config, name) for name in ("image_token_id", "image_token_index")), "no image-token id"
    _refused(model, "cross-attention")


def _mistral4_evidence() -> None:
    import inspect

    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    from eahlib.models import model_family

    model = _on_meta("mistral4")
    assert type(model).__name__ == "Mistral4ForCausalLM" and "pixel_values" not in inspect.signature(model.forward).parameters
    assert not any(hasattr(model.config, name) for name in ("vision_config", "image_token_id", "image_token_index"))
    _refused(model, "text-only")
    with torch.device("meta"):
        multimodal = Mistral3ForConditionalGeneration(
            Mistral3Config(text_config={"model_type": "mistral4", "num_hidden_layers": 2}))
    assert type(multimodal.model.language_model).__name__ == "Mistral4Model"
    assert model_family(multimodal).name == "mistral3"


# --- group 1: evidence above this line ---


# --- group 2: evidence above this line ---


def _gemma3n_evidence() -> None:
    import importlib.metadata
    import importlib.util
    import re

    from transformers import Gemma3nConfig, Gemma3nForConditionalGeneration
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    vision = Gemma3nConfig().vision_config
    assert MODEL_MAPPING_NAMES[vision.model_type] == "TimmWrapperModel", "the vision tower is timm's, wrapped"
    assert vision.architecture.startswith("mobilenetv5"), vision.architecture
    requirements = [re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0] for r in importlib.metadata.requires("eahlib") or []]
    assert "timm" not in requirements, "eahlib does not depend on timm"
    if importlib.util.find_spec("timm") is None:
        try:
            _on_meta("gemma3n")
        except ImportError as error:
            assert "timm" in str(error), str(error)
        else:
            raise AssertionError("Gemma 3n was built without timm")
    # model_family reads the class alone: an instance that was never built (that needs timm) will do
    _refused(Gemma3nForConditionalGeneration.__new__(Gemma3nForConditionalGeneration), "timm")


def _t5gemma2_evidence() -> None:
    import inspect

    model = _on_meta("t5gemma2")
    assert model.config.is_encoder_decoder
    assert model.model.encoder.vision_tower is not None, "images enter the encoder"
    merged = [type(layer.self_attn) for layer in model.model.decoder.layers]
    assert {cls.__name__ for cls in merged} == {"T5Gemma2MergedAttention"}
    assert "encoder_hidden_states" in inspect.signature(merged[0].forward).parameters, "it attends encoder outputs"
    _refused(model, "encoder-decoder")


def _diffusion_gemma_evidence() -> None:
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    text = _text_config(num_key_value_heads=2, head_dim=8, global_head_dim=8, sliding_window=SLIDING_WINDOW,
                        layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=30.0,
                        num_experts=2, top_k_experts=1, moe_intermediate_size=16)
    config = DiffusionGemmaConfig(text_config=text, vision_config=_gemma4_vision() | {"model_type": "gemma4_vision"},
                                  image_token_id=IMAGE_TOKEN, boi_token_id=96, eoi_token_id=97, canvas_length=4)
    model = _build(DiffusionGemmaForBlockDiffusion, config, 0)
    prompt = torch.tensor([[BOS, 5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        logits = model(input_ids=prompt, attention_mask=torch.ones_like(prompt)).logits
    assert logits.shape[1] == config.canvas_length != prompt.shape[1], "one row of logits per canvas position"
    assert not any(layer.self_attn.is_causal for layer in model.model.decoder.layers), "the canvas is bidirectional"
    _refused(model, "block-diffusion")
# --- group 3: evidence above this line ---


def _has_image_token_id(config: Any) -> bool:
    """Whether the config names an image-token id where the generic layout looks for one."""
    from eahlib.models import GENERIC_FAMILY

    return any(getattr(config, name, None) is not None for name in GENERIC_FAMILY.image_token_attrs)


_CROSS_ATTENTION = re.compile(r"cross|encoder_attn|encdec|encoder_decoder_attention", re.IGNORECASE)


def _encoder_decoder_evidence(model_type: str) -> None:
    """The model is an encoder-decoder whose decoder reads the encoded image only through cross-attention."""
    if model_type == "vision-encoder-decoder":  # no default config: an encoder and a decoder must be named
        from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

        config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), GPT2Config())
        with torch.device("meta"):
            model = VisionEncoderDecoderModel(config)
    else:
        model = _on_meta(model_type)
    assert model.config.is_encoder_decoder
    cross = [name for name, _ in model.get_decoder().named_modules() if _CROSS_ATTENTION.search(name.rsplit(".", 1)[-1])]
    assert cross, "the decoder reads the encoder's output through cross-attention layers"
    _refused(model, "encoder-decoder")


def _blip_evidence() -> None:
    model = _on_meta("blip")
    layers = model.text_decoder.bert.encoder.layer
    assert all(hasattr(layer, "crossattention") for layer in layers), "every text layer cross-attends to the image"
    assert not _has_image_token_id(model.config)
    _refused(model, "cross-attention")


def _git_evidence() -> None:
    """GIT prepends the projected image features to the text embeddings (positions without token ids), and its
    text self-attention computes the softmax inline instead of dispatching through the AttentionInterface."""
    import inspect

    from transformers import GitConfig, GitForCausalLM
    from transformers.models.git.modeling_git import GitSelfAttention

    config = GitConfig(vision_config=dict(image_size=8, patch_size=2, hidden_size=32, intermediate_size=37,
                                          num_hidden_layers=1, num_attention_heads=4),
                       vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=37)
    model = _build(GitForCausalLM, config, 0)
    input_ids = torch.tensor([[BOS, 5, 6, 7]])
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=_seeded_images([[]], (3, 8, 8), 0)).logits
    image_positions = (8 // 2) ** 2 + 1  # the patches and the class token
    assert logits.shape[1] == input_ids.shape[1] + image_positions, "image positions come before the input ids"
    assert not _has_image_token_id(config)
    assert "ALL_ATTENTION_FUNCTIONS" not in inspect.getsource(GitSelfAttention.forward)
    _refused(model, "no image-token ids")


def _kosmos_evidence(model_type: str, vision: dict[str, Any]) -> None:
    """Kosmos-2 and 2.5 put the image embeddings where ``image_embeds_position_mask`` says, whatever the ids there:
    the same ``input_ids`` with the mask moved give other logits."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    text = dict(vocab_size=VOCAB, embed_dim=32, layers=1, ffn_dim=64, attention_heads=4, pad_token_id=PAD,
                bos_token_id=BOS, eos_token_id=EOS)
    config = transformers.CONFIG_MAPPING[model_type](text_config=text, vision_config=vision, latent_query_num=2)
    model = _build(getattr(transformers, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]), config, 0)
    input_ids = torch.tensor([[BOS, 5, 6, 5, 6, 7]])  # the image placeholders hold ordinary ids, also in the text
    image_embeds = torch.randn(1, 2, 32, generator=torch.Generator().manual_seed(0))
    logits = []
    for start in (1, 3):
        mask = torch.zeros_like(input_ids)
        mask[0, start : start + 2] = 1
        with torch.no_grad():
            logits.append(model(input_ids=input_ids, image_embeds=image_embeds, image_embeds_position_mask=mask,
                                attention_mask=torch.ones_like(input_ids)).logits)
    assert not torch.allclose(logits[0], logits[1]), "the mask, not the ids, places the image"
    assert not _has_image_token_id(config)
    _refused(model, "image_embeds_position_mask")


def _action_model_evidence(model_type: str) -> None:
    """pi0 and pi0.5 predict a chunk of robot actions by flow matching; they neither predict nor generate text."""
    import inspect

    from transformers import GenerationMixin

    model = _on_meta(model_type)
    assert not isinstance(model, GenerationMixin)
    assert model.action_out_proj.out_features == model.config.max_action_dim
    assert {"noise", "timestep", "actions"} <= set(inspect.signature(model.forward).parameters)
    assert hasattr(model, "sample_actions")
    _refused(model, "action model")


def _evolla_evidence() -> None:
    import inspect

    model = _on_meta("evolla")
    inputs = inspect.signature(model.forward).parameters
    assert "protein_input_ids" in inputs and "pixel_values" not in inputs
    assert any(hasattr(layer, "adapter") for layer in model.model.layers), "protein features enter by cross-attention"
    _refused(model, "protein")


def _inkling2_loop_evidence() -> None:
    """The looped layers of Inkling 2 Loop run their attention once per pass in one forward."""
    from transformers import Inkling2LoopConfig, Inkling2LoopForConditionalGeneration

    text = _text_config(head_dim=8, swa_num_attention_heads=4, swa_num_key_value_heads=4, swa_head_dim=8,
                        sliding_window_size=SLIDING_WINDOW, layer_types=["hybrid_sliding", "hybrid"], d_rel=4,
                        rel_extent=16, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2,
                        unpadded_vocab_size=VOCAB, n_layers_per_attn_res_block=1, conv_kernel_size=3,
                        loop_layer_index_start=1, loop_layer_index_end=2, loop_num_passes=3, loop_gate_rank=4)
    del text["intermediate_size"]
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, patch_size=2, spatial_merge_size=2,
                  posemb_grid_size=4, projection_hidden_dim=32, text_hidden_size=32)
    config = Inkling2LoopConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN)
    model = _build(Inkling2LoopForConditionalGeneration, config, 0)
    calls = [0, 0]
    handles = [layer.self_attn.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, layer in enumerate(model.model.language_model.layers)]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[BOS, 5, 6, 7]]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [1, config.text_config.loop_num_passes], calls
    _refused(model, "looped layers")


# --- group 4: evidence above this line ---


UNSERVED_EVIDENCE: dict[str, Callable[[], None]] = {
    "mllama": _mllama_evidence,
    "idefics": _idefics_evidence,
    "mistral4": _mistral4_evidence,
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
    "gemma3n": _gemma3n_evidence,
    "t5gemma2": _t5gemma2_evidence,
    "diffusion_gemma": _diffusion_gemma_evidence,
    # --- group 3: rows above this line ---
    
    "blip": _blip_evidence,
    **{t: partial(_encoder_decoder_evidence, t)
       for t in ("florence2", "pix2struct", "pp_formulanet", "udop", "vision-encoder-decoder")},
    "git": _git_evidence,
    "kosmos-2": partial(_kosmos_evidence, "kosmos-2", dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                          num_attention_heads=4, image_size=8, patch_size=2)),
    "kosmos-2.5": partial(_kosmos_evidence, "kosmos-2.5", dict(hidden_size=32, patch_embed_hidden_size=16,
                                                              intermediate_size=37, head_dim=8, num_hidden_layers=1,
                                                              num_attention_heads=4, max_num_patches=16)),
    "pi0": partial(_action_model_evidence, "pi0"),
    "pi05": partial(_action_model_evidence, "pi05"),
    "evolla": _evolla_evidence,
    "inkling2_loop": _inkling2_loop_evidence,
    # --- group 4: rows above this line ---
    
}
"""Per model type of :data:`eahlib.models.UNSERVED`: a check that raises ``AssertionError`` unless the
stated reason holds, and that eahlib refuses the model with it."""
