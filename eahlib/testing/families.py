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


# --- group 1: builders above this line ---


# --- group 2: builders above this line ---


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
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
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


# --- group 1: evidence above this line ---


# --- group 2: evidence above this line ---


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
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
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
