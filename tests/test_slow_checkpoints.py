"""Real checkpoints (downloads several GB): run with `pytest -m slow` on a GPU machine."""

from __future__ import annotations

import pytest
import torch

import eahlib as eah

pytestmark = pytest.mark.slow


CHECKPOINTS = (
    "llava-hf/llava-1.5-7b-hf", "llava-hf/llava-v1.6-vicuna-7b-hf", "Salesforce/instructblip-vicuna-7b",
    "Qwen/Qwen2.5-VL-3B-Instruct", "google/gemma-3-4b-it", "HuggingFaceTB/SmolVLM-256M-Instruct",
    "OpenGVLab/InternVL3-1B-hf",
)
"""The paper's families and the small current checkpoints the README gives full-mode commands for (the family
table's own examples include checkpoints of hundreds of billions of parameters)."""


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_real_checkpoint_profile_and_eah(checkpoint: str) -> None:
    from PIL import Image

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = eah.load_model(checkpoint, dtype=torch.bfloat16, device_map=device)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = Image.new("RGB", (336, 336), color=(120, 80, 200))
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(device)
    profile = eah.sink_profile(model, **inputs)
    assert profile.layers == eah.attention_layers(model)
    assert int(profile.image_mask.sum()) > 0
    with eah.enhance_attention_heads(model, preset="paper") as enhanced:
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert enhanced.chosen_heads[0].shape == (1,)
