"""Every supported family: image mask, sink profile, EAH and a short generate."""

from __future__ import annotations

import torch

import eahlib as eah
from eahlib.models import FAMILIES, model_family
from eahlib.testing import IMAGE_TOKEN, TINY_MODELS
from tests.conftest import PROMPTS

EXPECTED_IMAGE_TOKENS = {"llava": 16, "qwen2_vl": 4, "qwen2_5_vl": 4, "instructblip": 4}
"""Image tokens per prompt of the tiny builders: 8 px / patch 2 (LLaVA), a 4x4 grid merged 2x2
(Qwen), 4 Q-Former queries (InstructBLIP). LLaVA-NeXT's count is asked from the model itself."""


def test_table_covers_every_tiny_model() -> None:
    assert sorted(f.name for f in FAMILIES) == sorted(TINY_MODELS)


def test_family_end_to_end(family_model) -> None:
    name, model, make_inputs = family_model
    assert model_family(model).name == name
    inputs = make_inputs(PROMPTS)
    image = eah.image_token_mask(model, inputs["input_ids"])
    counts = image.sum(-1)
    assert torch.equal(counts, (inputs["input_ids"] == IMAGE_TOKEN).sum(-1))
    if name in EXPECTED_IMAGE_TOKENS:
        assert counts.tolist() == [EXPECTED_IMAGE_TOKENS[name]] * len(PROMPTS)
    else:
        assert int(counts[0]) > 16  # any-resolution: base tile + high-resolution tiles + newlines

    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    assert profile.density.shape == (2, len(PROMPTS), 4)
    assert int(profile.density.sum()) > 0
    assert (profile.density <= counts.view(1, -1, 1)).all()

    with torch.no_grad():
        stock = model(**inputs).logits
    with eah.enhance_attention_heads(model, layer=1, threshold=1e9), torch.no_grad():
        same = model(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(same[real], stock[real], rtol=1e-5, atol=1e-5)

    with eah.enhance_attention_heads(model, layer=0, relative_threshold=1.0) as h:
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert tokens.shape[0] == len(PROMPTS)
    assert h.densities[0].shape == (len(PROMPTS), 4)
    assert torch.equal(h.densities[0], profile.density[0])
    assert torch.equal(h.chosen_heads[0], profile.density[0].argmax(-1))
