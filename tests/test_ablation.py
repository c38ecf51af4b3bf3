"""Head ablation at the input of the attention output projection."""

from __future__ import annotations

import pytest
import torch

import eahlib as eah
from eahlib.models import attention_module
from tests.conftest import PROMPTS


def o_proj_inputs(model, inputs, layer: int) -> torch.Tensor:
    seen = []
    handle = attention_module(model, layer).o_proj.register_forward_hook(lambda m, a, out: seen.append(a[0]))
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    return seen[0].view(*seen[0].shape[:2], 4, 8)


def test_zero_ablation_silences_exactly_the_chosen_heads(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    stock = o_proj_inputs(model, inputs, 1)
    with eah.ablate_heads(model, {1: [0, 2]}):
        ablated = o_proj_inputs(model, inputs, 1)  # the hook of this test sees the ablated input
    assert torch.equal(ablated[:, :, [0, 2]], torch.zeros_like(ablated[:, :, [0, 2]]))
    assert torch.equal(ablated[:, :, [1, 3]], stock[:, :, [1, 3]])


def test_mean_ablation_uses_real_token_means_and_reuses_them_when_decoding(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    stock = o_proj_inputs(model, inputs, 0)
    with eah.ablate_heads(model, {0: [3]}, mode="mean"):
        ablated = o_proj_inputs(model, inputs, 0)
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    real = inputs["attention_mask"].bool()
    for b in range(len(PROMPTS)):
        want = stock[b, real[b], 3].mean(0)
        torch.testing.assert_close(ablated[b, real[b], 3], want.expand(int(real[b].sum()), -1))
    assert tokens.shape[1] == inputs["input_ids"].shape[1] + 3


def test_ablation_restores_and_validates(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    with torch.no_grad():
        before = model(**inputs).logits
    with pytest.raises(RuntimeError, match="inside"):
        with eah.ablate_heads(model, {0: [1], 1: [2]}):
            raise RuntimeError("inside")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)
    assert not any(m._forward_pre_hooks for m in model.model.language_model.modules())
    with pytest.raises(ValueError, match="heads must be"):
        with eah.ablate_heads(model, {0: [4]}):
            pass
    with pytest.raises(IndexError, match="out of range"):
        with eah.ablate_heads(model, {2: [0]}):
            pass
    with pytest.raises(ValueError, match="mode must be"):
        with eah.ablate_heads(model, {0: [0]}, mode="noise"):
            pass
