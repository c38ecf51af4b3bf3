"""Every figure function writes a PNG from real survey output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import eahlib as eah
from eahlib import analysis, plotting, stats
from eahlib.testing import tiny_llava_pipeline

PROMPT = "Please describe this image in detail."


@pytest.fixture(scope="module")
def setup():
    model, processor = tiny_llava_pipeline(0)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(10, 10, 3), dtype=np.uint8)) for _ in range(4)]
    return model, processor, images


def test_figures_are_written(setup, tmp_path) -> None:
    """Each figure function, on real survey output; kept for a look in the test's tmp folder."""
    model, processor, images = setup
    survey = analysis.sink_survey(model, processor, images, PROMPT, relative_threshold=1.0)
    massive = analysis.massive_activation_survey(model, processor, images, PROMPT, tau=2.0, relative_threshold=1.0)
    profile = analysis.sink_profile(model, relative_threshold=1.0,
                                    **analysis.model_inputs(model, processor, images[:1], PROMPT))
    maps = {f"layer {layer}": analysis.attention_map(profile, layer, 0, 0) for layer in (0, 1)}
    maps["prompt order"] = analysis.AttentionMap(np.append(np.arange(13.0), [np.nan] * 3).reshape(4, 4), spatial=False)
    x, y = np.arange(20) % 5, np.arange(20) % 7
    summary = {"condition": ["a", "b"], "CHAIRs": [0.2, 0.3], "CHAIRs_low": [0.1, 0.2], "CHAIRs_high": [0.3, 0.4]}
    written = [
        plotting.plot_density_heatmap(survey, tmp_path / "heat.png"),
        plotting.plot_density_heatmap(profile, tmp_path / "heat_profile.png"),
        plotting.plot_layer_density(survey, tmp_path / "layers.png"),
        plotting.plot_attention_maps(images[0], maps, tmp_path / "maps.png"),
        plotting.plot_sink_overlap(massive, tmp_path / "overlap.png"),
        plotting.plot_correlation(x, y, stats.bootstrap_correlation(x, y), tmp_path / "corr.png", "x", "y"),
        plotting.plot_conditions(pd.DataFrame(summary), "CHAIRs", tmp_path / "cond.png", "conditions"),
    ]
    for path in written:
        with Image.open(path) as figure:
            assert figure.size[0] > 300 and figure.size[1] > 200


def test_head_views_figure_is_written(setup, tmp_path) -> None:
    model, processor, images = setup
    inputs = analysis.model_inputs(model, processor, images[:2], PROMPT)
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    divergence = eah.vision_head_divergence(model, inputs, layers=[0, 1])
    path = plotting.plot_head_views(profile, divergence, tmp_path / "views.png")
    with Image.open(path) as figure:
        assert figure.size[0] > 300 and figure.size[1] > 200
