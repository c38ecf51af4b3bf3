"""The support matrix: every image-text-to-text family of the installed transformers, served or why not.

For a served family, a tiny random model (eahlib.testing.families) must: be found by its explicit table row;
have its image tokens found; give sink densities at every attention layer equal to an independent count from
the captured probabilities (visibility read off the probabilities themselves, real tokens from the padding
mask, the definitions restated as loops), including a sliding-window layer shorter than the prompt where the
family has one; equal the stock model under EAH with nothing to broadcast; let EAH choose the head the
independent count says; generate under EAH; and switch only the language model's attention. For a family
that is not served, the reason must hold (eahlib.testing.families.UNSERVED_EVIDENCE) and eahlib must refuse it
with that reason.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import eahlib as eah
from eahlib import docgen, support
from eahlib.attention import eahlib_attention
from eahlib.metrics import RELATIVE_TOLERANCE
from eahlib.models import GENERIC_FAMILY, attention_layers, family_of_model_type, model_family, text_config
from eahlib.testing.families import SLIDING_WINDOW, TINY_FAMILIES, UNSERVED_EVIDENCE

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
"""Text prompts of three lengths (left padding); with the image, every prompt is longer than the window."""
K = 1.0


def independent_density(probs: torch.Tensor, real: torch.Tensor, image: torch.Tensor, k: float) -> np.ndarray:
    """``[B, H]`` vision sinks per head, from the definitions, one key at a time.

    Args:
        probs: ``[B, H, N, N]`` captured post-softmax attention (a masked key gets exactly 0).
        real: ``[B, N]`` the padding mask.
        image: ``[B, N]`` image tokens.
        k: relative threshold.
    """
    attn = probs.double().numpy()
    batch, heads = attn.shape[:2]
    density = np.zeros((batch, heads), dtype=np.int64)
    for b in range(batch):
        tokens = [t for t in range(attn.shape[-1]) if real[b, t]]
        padding = [t for t in range(attn.shape[-1]) if not real[b, t]]
        # a head whose row gives padding mass has every key masked (the softmax spreads the row over all keys): it
        # sees none (a block-sparse indexer can leave a left-padded query nothing, as MiniMax-M3's does in generate)
        sees = {i: [j for j in tokens if any(attn[b, h, i, j] > 0 and not (attn[b, h, i, padding] > 0).any()
                                             for h in range(heads))] for i in tokens}
        for j in tokens:
            queries = [i for i in tokens if i != j and j in sees[i]]
            if not image[b, j] or not queries:
                continue
            uniform = np.mean([1.0 / len(sees[i]) for i in queries])
            received = attn[b][:, queries, j].mean(-1)
            density[b] += received > k * (1 + RELATIVE_TOLERANCE) * uniform
    return density


def implementations(model: nn.Module) -> dict[int, tuple[object, str]]:
    """Every distinct config object of the model's modules and its attention implementation, by identity."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}
    return {key: (config, config._attn_implementation) for key, config in configs.items()}


SERVED = sorted(t for t in support.installed_model_types() if support.support_row(t).status == "served")
NOT_SERVED = sorted(t for t in support.installed_model_types() if support.support_row(t).status != "served")


def test_every_installed_model_type_has_a_row() -> None:
    unknown = [row.model_type for row in support.support_matrix() if row.status == "unknown"]
    assert not unknown, f"model types in neither eahlib.models.FAMILIES nor UNSERVED: {unknown}"
    assert sorted(TINY_FAMILIES) == SERVED, "one tiny builder per served model type"


def test_the_documentation_shows_the_matrix() -> None:
    sections = [page for page in docgen.pages() if "<!-- generated:support-matrix -->" in page.read_text()]
    assert sections, "a documentation page holds the generated support matrix"
    assert not [s for s in docgen.stale() if s.endswith(": support-matrix")], "run `python -m eahlib.docgen --write`"


@pytest.mark.parametrize("model_type", SERVED)
def test_served_family(model_type: str) -> None:
    model, make_inputs = TINY_FAMILIES[model_type](0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the generic fallback warns: a served family has its own row
        family = model_family(model)
    assert family is not GENERIC_FAMILY and model_type in family.model_types
    assert family is family_of_model_type(model.config.model_type)
    inputs = make_inputs(PROMPTS)
    real = inputs["attention_mask"].bool()

    image = eah.image_token_mask(model, inputs["input_ids"])
    assert (image.sum(-1) > 0).all() and not (image & ~real).any()

    layers = attention_layers(model)
    profile = eah.sink_profile(model, relative_threshold=K, **inputs)
    assert profile.layers == layers
    with eah.capture_attention(model, layers) as capture, torch.no_grad():
        model(**inputs, use_cache=False)
    windowed = []
    for row, layer in enumerate(layers):
        probs = capture.attentions[layer][0]
        want = independent_density(probs, real, image, K)
        assert np.array_equal(profile.density[row].numpy(), want), f"layer {layer}"
        last_row_sees = (probs[:, :, -1] > 0).any(1)
        windowed.append(bool((real & ~last_row_sees).any()))
    assert int(profile.density.sum()) > 0
    config = text_config(model)
    if getattr(config, "sliding_window", None) is not None and "sliding_attention" in getattr(config, "layer_types", []):
        assert config.sliding_window == SLIDING_WINDOW and any(windowed), "a sliding layer must hide real tokens"

    with torch.no_grad():
        stock = model(**inputs).logits
    with eah.enhance_attention_heads(model, layer=layers[-1], threshold=1e9), torch.no_grad():
        same = model(**inputs).logits
    torch.testing.assert_close(same[real], stock[real], rtol=1e-5, atol=1e-5)

    before = implementations(model)
    with eahlib_attention(model):
        during = implementations(model)
    changed = {key for key in before if before[key][1] != during[key][1]}
    assert changed == {id(text_config(model))}, "only the language model's attention is switched"
    assert implementations(model) == before

    layer = layers[0]
    with eah.capture_attention(model, [layer]) as capture, torch.no_grad():  # the prefill as generate runs it: its
        model.generate(**inputs, max_new_tokens=1, do_sample=False)  # own position ids (a block-sparse indexer reads them)
    density = torch.from_numpy(independent_density(capture.attentions[layer][0], real, image, K))
    with eah.enhance_attention_heads(model, layer=layer, relative_threshold=K) as enhanced:
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert tokens.shape[0] == len(PROMPTS)
    assert torch.equal(enhanced.densities[0], density)
    expected = torch.where(density.amax(-1) > 0, density.argmax(-1), -1)
    assert torch.equal(enhanced.chosen_heads[0], expected)


@pytest.mark.parametrize("model_type", NOT_SERVED)
def test_unserved_family_says_why(model_type: str) -> None:
    row = support.support_row(model_type)
    assert row.status == "not served", row.detail
    assert model_type in UNSERVED_EVIDENCE, "each reason comes with evidence that it holds"
    UNSERVED_EVIDENCE[model_type]()
    with pytest.raises(ValueError, match="eahlib cannot serve"):
        family_of_model_type(model_type)
