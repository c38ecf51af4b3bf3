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
    grid = analysis.attention_map(profile, layer=1, sample=1, head=2)
    assert grid.shape == (4, 4)
    assert np.allclose(grid.ravel(), profile.image_scores(1, 1)[2].numpy())
    with pytest.raises(ValueError, match="square grid"):
        analysis.image_grid(12)


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
