"""The organism's architecture, built from configs in code, and the loader of the shipped weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from eahlib.organism.tokenizer import IMAGE
from eahlib.organism.world import IMAGE_SIZE, PATCH_SIZE

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "organism"
"""Where the project ships the trained organism (weights, config, processor files, model card)."""


def organism_config(processor: LlavaProcessor) -> LlavaConfig:
    """The architecture: CLIP tower (64-d, 3 layers, patch 8), GELU projector, Llama LM (128-d, 8 layers, 8 heads)."""
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


def build_model(processor: LlavaProcessor, seed: int) -> LlavaForConditionalGeneration:
    """A randomly initialised organism (seeded), with generation ids set from the tokenizer."""
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(organism_config(processor))
    tokenizer = processor.tokenizer
    model.generation_config.update(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=24, do_sample=False,
    )
    return model


def load_organism(path: str | os.PathLike | None = None) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Load the trained organism like a hub checkpoint.

    Example:
        >>> model, processor = load_organism()  # doctest: +SKIP
        >>> inputs = processor(images=image, text=prompt(CAPTION_REQUEST), return_tensors="pt")  # doctest: +SKIP

    Args:
        path: a folder written by ``python -m eahlib.organism train`` (default: the shipped ``data/organism``).

    Returns:
        ``(model, processor)``, the model in eval mode (float32, SDPA attention).
    """
    folder = DEFAULT_PATH if path is None else Path(path)
    missing = [name for name in ("config.json", "model.safetensors", "processor_config.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a trained organism (missing {missing}); train one with "
            "`python -m eahlib.organism train --seed 0 --out DIR`."
        )
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), LlavaProcessor.from_pretrained(folder)
