"""Surveys over image sets, on the tiny LLaVA pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import eahlib as eah
from eahlib import analysis
from eahlib.testing import tiny_llava_pipeline

PROMPT = "Please describe this image in detail."


@pytest.fixture(scope="module")
def pipeline():
    return tiny_llava_pipeline(0)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, size=(10, 10, 3), dtype=np.uint8)) for _ in range(5)]


def test_sink_survey_matches_profiles(pipeline, images) -> None:
    model, processor = pipeline
    frame = analysis.sink_survey(model, processor, images, PROMPT, relative_threshold=1.0, batch_size=2)
    assert len(frame) == 5 * 2 * 4 and sorted(frame.image.unique()) == [0, 1, 2, 3, 4]
    single = eah.sink_profile(model, relative_threshold=1.0, **analysis.model_inputs(model, processor, images[3:4], PROMPT))
    assert frame[frame.image == 3].density.tolist() == single.density[:, 0].reshape(-1).tolist()


def test_attention_map_is_the_patch_grid(pipeline, images) -> None:
    model, processor = pipeline
    profile = eah.sink_profile(model, **analysis.model_inputs(model, processor, images[:2], PROMPT))
    attention = analysis.attention_map(profile, layer=1, sample=1, head=2)
    assert attention.spatial and attention.grid.shape == (4, 4)
    assert np.allclose(attention.grid.ravel(), profile.image_scores(1, 1)[2].numpy())
    wide = analysis.attention_map(profile, layer=1, sample=1, head=2, grid=(2, 8))
    assert wide.spatial and np.array_equal(wide.grid.ravel(), attention.grid.ravel())
    with pytest.raises(ValueError, match="holds 12 tokens"):
        analysis.attention_map(profile, layer=1, sample=1, head=2, grid=(3, 4))


def test_a_layout_without_square_grid_is_shown_in_prompt_order(pipeline, images) -> None:
    model, processor = pipeline
    profile = eah.sink_profile(model, **analysis.model_inputs(model, processor, images[:1], PROMPT))
    profile.image_mask[0, profile.image_mask[0].nonzero()[-3:, 0]] = False  # 13 image tokens left
    attention = analysis.attention_map(profile, layer=0, sample=0, head=1)
    assert not attention.spatial and attention.grid.shape == (4, 4)
    assert np.array_equal(attention.grid.ravel()[:13], profile.image_scores(0, 0)[1].numpy())
    assert np.isnan(attention.grid.ravel()[13:]).all()
    assert analysis.image_grid(13) is None and analysis.image_grid(16) == (4, 4)


def test_massive_activation_survey(pipeline, images) -> None:
    model, processor = pipeline
    frame = analysis.massive_activation_survey(model, processor, images[:3], PROMPT, dims=None, tau=2.0,
                                               relative_threshold=1.0)
    assert len(frame) == 3 * 2
    assert (frame.overlap <= frame[["attention_sinks", "massive_image_sinks"]].min(1)).all()
    inputs = analysis.model_inputs(model, processor, images[:1], PROMPT)
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    want = int(eah.massive_activation_sinks(hidden[1], None, 2.0).sum())
    assert frame[(frame.image == 0) & (frame.layer == 1)].massive_sinks.item() == want
