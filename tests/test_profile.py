"""sink_profile against attention captured layer by layer."""

from __future__ import annotations

import pytest
import torch

import eahlib as eah
from tests.conftest import PROMPTS


@pytest.mark.parametrize("criterion", [{"threshold": 0.02}, {"relative_threshold": 1.5}])
@pytest.mark.parametrize("normalizer", ["causal", "release"])
def test_profile_equals_metrics_on_captured_attention(llava, criterion, normalizer) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    with eah.capture_attention(model) as cap, torch.no_grad():
        model(**inputs)
    profile = eah.sink_profile(model, normalizer=normalizer, **criterion, **inputs)
    image = eah.image_token_mask(model, inputs["input_ids"])
    for layer in range(2):
        attn = cap.attentions[layer][0]
        want = eah.sink_density(attn, image, attention_mask=inputs["attention_mask"], normalizer=normalizer, **criterion)
        assert torch.equal(profile.density[layer], want)
        scores = eah.received_attention(attn, inputs["attention_mask"], normalizer, image)
        torch.testing.assert_close(profile.scores[layer], scores)
    assert profile.criterion == eah.sink_criterion(**criterion)
    assert profile.image_scores(1, 0).shape == (4, 16)


def test_profile_frame_and_layer_subset(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    frame = profile.to_frame()
    assert len(frame) == 2 * 3 * 4
    assert set(frame.columns) >= {"layer", "sample", "head", "density", "criterion", "criterion_value"}
    assert frame.groupby("layer").density.sum().tolist() == profile.density.sum((1, 2)).tolist()
    only_last = eah.sink_profile(model, relative_threshold=1.0, layers=[1], **inputs)
    assert torch.equal(only_last.density[0], profile.density[1])
    assert only_last.to_frame().layer.unique().tolist() == [1]
    assert torch.equal(profile.densest_heads(), profile.density.argmax(-1))


def test_profile_needs_input_ids(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    with pytest.raises(ValueError, match="needs input_ids"):
        eah.sink_profile(model, attention_mask=inputs["attention_mask"])


def test_threshold_sweep_matches_separate_profiles(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    sweep = eah.threshold_sweep(model, relative_thresholds=[1.0, 3.0], **inputs)
    assert sorted(sweep.k.unique()) == [1.0, 3.0]
    for k in (1.0, 3.0):
        single = eah.sink_profile(model, relative_threshold=k, **inputs).to_frame()
        assert sweep[sweep.k == k].density.tolist() == single.density.tolist()
    totals = sweep.groupby("k").density.sum()
    assert totals[1.0] >= totals[3.0]  # a higher bound never finds more sinks


def test_a_layer_that_runs_its_attention_twice_is_refused(llava) -> None:
    model, make_inputs = llava
    layer = eah.decoder_layers(model)[1]
    once = layer.forward

    def looped(*args, **kwargs):
        once(*args, **kwargs)
        return once(*args, **kwargs)

    layer.forward = looped
    with pytest.raises(RuntimeError, match=r"this many times in one forward: \{1: 2\}"):
        eah.sink_profile(model, relative_threshold=1.0, **make_inputs(PROMPTS))


def test_a_misspelled_argument_is_refused_not_passed_to_the_model(llava) -> None:
    model, make_inputs = llava
    with pytest.raises(TypeError, match=r"sink_profile got \['threshhold'\]"):
        eah.sink_profile(model, threshhold=8e-4, **make_inputs(PROMPTS))
