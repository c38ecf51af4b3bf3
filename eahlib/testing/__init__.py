"""Tiny random models of every supported family, built in code (no downloads).

Used by the test suite, the benchmark script and the offline demo. Sizes follow the
transformers testers: text 32-d, 2 layers, 4 heads, vocabulary 99; vision 8-16 px.
Each builder returns ``(model, make_inputs)``; ``make_inputs(prompts)`` turns a list of text-token
id lists into a left-padded batch with one image per prompt, the image tokens placed first
after ``<bos>`` (or where a prompt holds the placeholder ``IMAGE``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import zlib

import torch
from torch import Tensor, nn

IMAGE = -1
"""Placeholder in a prompt for the image-token block."""
PAD, BOS, EOS, IMAGE_TOKEN = 0, 1, 2, 98
VOCAB = 99

InputBuilder = Callable[[Sequence[Sequence[int]]], dict[str, Tensor]]


def _text_config(num_key_value_heads: int = 4, **extra: Any) -> dict[str, Any]:
    return dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=512, pad_token_id=PAD,
        bos_token_id=BOS, eos_token_id=EOS, **extra,
    )


def _clip_vision(image_size: int = 8) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=image_size, patch_size=2, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=32,
    )


def _left_pad(rows: list[list[int]]) -> dict[str, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _expand(prompt: Sequence[int], n_image: int) -> list[int]:
    tokens = list(prompt) if IMAGE in prompt else [BOS, IMAGE, *prompt]
    out: list[int] = []
    for token in tokens:
        out.extend([IMAGE_TOKEN] * n_image if token == IMAGE else [token])
    return out


def _seeded_images(prompts: Sequence[Sequence[int]], shape: Sequence[int], seed: int) -> Tensor:
    """One random image per prompt, the same for the same prompt in any batch: ``[B, *shape]``."""
    images = [
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed + zlib.crc32(str(list(p)).encode())))
        for p in prompts
    ]
    return torch.stack(images)


def tiny_llava(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LLaVA-1.5 architecture: CLIP 8 px / patch 2 (16 image tokens) + Llama."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        text_config=LlamaConfig(**_text_config()), vision_config=_clip_vision(), image_token_id=IMAGE_TOKEN,
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand(p, 16) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (3, 8, 8), seed)
        return batch

    return model, make_inputs


def tiny_llava_next(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """LLaVA-NeXT: any-resolution tiles; the image-token count depends on the image size."""
    from transformers import LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    config = LlavaNextConfig(
        text_config=LlamaConfig(**_text_config()), vision_config=_clip_vision(), image_token_index=IMAGE_TOKEN,
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_grid_pinpoints=[[8, 8], [8, 16], [16, 8]],
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_size = torch.tensor([12, 8])  # height, width: best fit [16, 8] -> 2 tiles + base
    with torch.no_grad():
        features = model.model.get_image_features(
            _seeded_images([[]], (3, 3, 8, 8), seed), image_size.unsqueeze(0), return_dict=True
        )
    pooled = features.pooler_output if hasattr(features, "pooler_output") else features
    n_image = int(pooled[0].shape[0])

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand(p, n_image) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (3, 3, 8, 8), seed)
        batch["image_sizes"] = image_size.unsqueeze(0).expand(len(prompts), -1).clone()
        return batch

    return model, make_inputs


def _tiny_qwen(config_cls: Any, model_cls: Any, vision: dict[str, Any], seed: int) -> tuple[nn.Module, InputBuilder]:
    text = _text_config(num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]})
    config = config_cls(
        text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=97,
        vision_start_token_id=95, vision_end_token_id=96,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    grid = torch.tensor([[1, 4, 4]])  # t, h, w patches
    merge = config.vision_config.spatial_merge_size
    n_image = int(grid.prod()) // merge**2
    patch_dim = 3 * config.vision_config.temporal_patch_size * config.vision_config.patch_size**2

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        rows = [_expand([95, IMAGE, 96, *p], n_image) if IMAGE not in p else _expand(p, n_image) for p in prompts]
        batch = _left_pad(rows)
        batch["pixel_values"] = _seeded_images(prompts, (int(grid.prod()), patch_dim), seed).flatten(0, 1)
        batch["image_grid_thw"] = grid.expand(len(prompts), -1).clone()
        batch["mm_token_type_ids"] = (batch["input_ids"] == IMAGE_TOKEN).int()
        return batch

    return model, make_inputs


def tiny_qwen2_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen2-VL: GQA (4 query / 2 key-value heads), M-RoPE, 2x2 patch merging."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=2,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    return _tiny_qwen(Qwen2VLConfig, Qwen2VLForConditionalGeneration, vision, seed)


def tiny_qwen2_5_vl(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """Qwen2.5-VL: GQA, M-RoPE, windowed vision attention."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=8,
                  fullatt_block_indexes=[1])
    return _tiny_qwen(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, vision, seed)


def tiny_instructblip(seed: int = 0) -> tuple[nn.Module, InputBuilder]:
    """InstructBLIP: ViT + Q-Former (4 query tokens = 4 image tokens) + a Llama language model."""
    from transformers import (
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
        LlamaConfig,
    )

    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(image_size=8, patch_size=2, hidden_size=32, intermediate_size=37,
                                               num_hidden_layers=2, num_attention_heads=4),
        qformer_config=InstructBlipQFormerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=37,
                                                 encoder_hidden_size=32),
        text_config=LlamaConfig(**_text_config()).to_dict() | {"model_type": "llama"},
        num_query_tokens=4, image_token_index=IMAGE_TOKEN,
    )
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()

    def make_inputs(prompts: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        batch = _left_pad([_expand(p, 4) for p in prompts])
        batch["pixel_values"] = _seeded_images(prompts, (3, 8, 8), seed)
        batch["qformer_input_ids"] = torch.tensor([[BOS, 5, 6, 7]] * len(prompts))
        batch["qformer_attention_mask"] = torch.ones_like(batch["qformer_input_ids"])
        return batch

    return model, make_inputs


TINY_MODELS: dict[str, Callable[[int], tuple[nn.Module, InputBuilder]]] = {
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
    "instructblip": tiny_instructblip,
}
"""One tiny builder per family of :data:`eahlib.models.FAMILIES`, by family name."""


TINY_WORDS = (
    "user assistant : please describe this image in detail . is there a an the in ? yes no "
    "person dog cat car bicycle chair table cup bottle bird on with and of"
).split()
"""Word vocabulary of the tiny processor (ids 4..; 0-3 are pad, bos, eos, unk; 98 is <image>)."""

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def tiny_llava_processor() -> Any:
    """A real ``LlavaProcessor`` for :func:`tiny_llava`: word-level tokenizer, 8 px images.

    Text is lower-cased and split on spaces and punctuation; unknown words map to ``<unk>``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import LlavaProcessor, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab = {word: i for i, word in enumerate(["<pad>", "<s>", "</s>", "<unk>", *TINY_WORDS])}
    vocab["<image>"] = IMAGE_TOKEN
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    images = CLIPImageProcessorPil(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    return LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=2, num_additional_image_tokens=1,
                          vision_feature_select_strategy="default", chat_template=TINY_CHAT_TEMPLATE)


def tiny_llava_pipeline(seed: int = 0) -> tuple[nn.Module, Any]:
    """``(model, processor)`` of the tiny random LLaVA, shaped like :func:`eahlib.load_model`'s."""
    model, _ = tiny_llava(seed)
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = EOS
    return model, tiny_llava_processor()
