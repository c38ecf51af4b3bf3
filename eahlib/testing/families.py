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


# --- group 2: builders above this line ---


def _grid_image_model(model: nn.Module, patch_dim: int, seed: int, mrope: bool = True) -> tuple[nn.Module, InputBuilder]:
    """A Qwen2-VL-style family: one image of 4x4 patches of ``patch_dim`` values, packed as the processor packs them
    (``[total_patches, patch_dim]`` with ``image_grid_thw``), its tokens between the vision start (95) and end (96)
    tokens; with ``mrope``, ``mm_token_type_ids`` mark them for the 3D positions."""
    grid = torch.tensor([[1, 4, 4]])

    def pixels(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        return {"pixel_values": _seeded_images(prompts, (16, patch_dim), seed).flatten(0, 1),
                "image_grid_thw": grid.expand(len(prompts), -1).clone()}

    n_image = _image_features(model, **pixels([[]]))

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand_with(p, [95, *[IMAGE_TOKEN] * n_image, 96]) for p in prompts])
        batch.update(pixels(prompts))
        if mrope:
            batch["mm_token_type_ids"] = (batch["input_ids"] == IMAGE_TOKEN).int()
        return batch

    return model, make_inputs


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
    return _grid_image_model(_build(Ovis2_5ForConditionalGeneration, config, seed), 3 * 2 * 2, seed)


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
    return _grid_image_model(_build(Cosmos3EdgeForConditionalGeneration, config, seed), 3 * 2 * 2, seed)


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
    return _grid_image_model(_build(Cosmos3OmniForConditionalGeneration, config, seed), 3 * 2 * 2 * 2, seed)
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
    patches * patch]``, ``target_sizes``); ``"16x"`` merges patches 4x4 (a window merger inside the tower, then
    the merger), ``"4x"`` 2x2. The image tokens sit between the image start (95) and end (96) tokens; with
    ``mrope``, ``mm_token_type_ids`` mark them for the 3D positions."""
    text = _text_config(num_key_value_heads=2, head_dim=8, layer_types=["linear_attention", "full_attention"],
                        linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                        linear_num_value_heads=4) | {"model_type": "qwen3_5_text"}
    vision = _siglip_vision(image_size) | {"insert_layer_id": 0}
    config = config_cls(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97,
                        downsample_mode=downsample_mode, **extra)
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
    return _grid_image_model(model, 3 * 2 * 2 * 2, seed, mrope=False)
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
    model (a dense layer, then a sparse one). The checkpoint's layers are reference-sliding-window layers, which
    keep the whole prompt visible and slide over generated tokens only: at the prefill they are plain causal, so
    the tiny model uses full-attention layers (the matrix demands that a sliding layer hide prompt tokens)."""
    from transformers import UnlimitedOcrConfig, UnlimitedOcrForConditionalGeneration

    text = _text_config(num_key_value_heads=2, mlp_layer_types=["dense", "sparse"], n_routed_experts=4,
                        n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=16, n_group=1, topk_group=1,
                        sliding_window=SLIDING_WINDOW, layer_types=["full_attention", "full_attention"])
    sam = dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=4, image_size=16,
               patch_size=2, window_size=4, global_attn_indexes=[1], mlp_dim=37, downsample_channels=[16, 32])
    encoder = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=4,
                   patch_size=2)
    config = UnlimitedOcrConfig(text_config=text, vision_config=dict(sam_config=sam, encoder_config=encoder),
                                image_token_id=IMAGE_TOKEN)
    return _one_image_model(_build(UnlimitedOcrForConditionalGeneration, config, seed), (3, 16, 16), seed)
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


# --- group 4: evidence above this line ---


UNSERVED_EVIDENCE: dict[str, Callable[[], None]] = {
    "mllama": _mllama_evidence,
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
    "gemma3n": _gemma3n_evidence,
    "t5gemma2": _t5gemma2_evidence,
    "diffusion_gemma": _diffusion_gemma_evidence,
    # --- group 3: rows above this line ---
    
    # --- group 4: rows above this line ---
    
}
"""Per model type of :data:`eahlib.models.UNSERVED`: a check that raises ``AssertionError`` unless the
stated reason holds, and that eahlib refuses the model with it."""
