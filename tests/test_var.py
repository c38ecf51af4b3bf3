"""VAR (Visual Attention Redistribution) by value on tiny models.

Every expected value is computed here, independently of :mod:`eahlib.interventions.var`: sink tokens from the
layers' input hidden states (captured by our own forward pre-hooks), and the redistribution by the released
code's recipe (``src/logic/logic.py`` of VisAttnSink: ``portion <= rho_code``, sinks ``*= p_code``, the budget
to the non-sink image tokens by their share), one (sample, head, row) at a time in float64, on the attention
captured *before* VAR edits it (a modifying hook installed first). That is compared with the attention VAR
hands to the values (an observer installed after it), at the prefill and at every decoding step.

The tiny models' hidden size is 32, so ``|x_d / rms(x)| <= sqrt(32) ~ 5.7``: the published ``tau=20`` finds
no sink there, and the tests pass a small ``tau``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest import mock

import pytest
import torch
from torch import nn

import eahlib as eah
import eahlib.attention as attention
from eahlib.attention import AttentionCall, LayerHook, layer_hooks
from eahlib.interventions.var import FIRST_TOKEN, redistribute_attention, var_sink_tokens
from eahlib.methods import resolve_method
from eahlib.models import attention_layers, attention_module, decoder_layers, image_token_mask
from eahlib.testing import PAD, tiny_llava, tiny_qwen2_vl
from eahlib.testing.families import TINY_FAMILIES
from tests.conftest import PROMPTS

TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}
ACTING = {"tau": 2.0, "start_layer": 0}
"""On the tiny LLaVA (first-token rule): visual sinks in some layers of every sample, none in others."""


# ------------------------------------------------------------------------------------ the expected values


def expected_sinks(hidden: torch.Tensor, real: torch.Tensor, image: torch.Tensor, dims, tau: float) -> torch.Tensor:
    """``[B, N]`` sink tokens, token by token: ``|x_d| / sqrt(mean(x^2) + 1e-6) > tau`` in a sink dimension; with
    the first-token rule the dimensions are those where the first real non-image token passes ``tau``."""
    batch, length, size = hidden.shape
    out = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        if dims == FIRST_TOKEN:
            first = next(j for j in range(length) if real[b, j] and not image[b, j])
            x = hidden[b, first].float()
            scale = math.sqrt(float(x.pow(2).mean()) + 1e-6)
            chosen = [d for d in range(size) if abs(float(x[d])) / scale > tau]
        else:
            chosen = list(dims)
        for j in range(length):
            x = hidden[b, j].float()
            scale = math.sqrt(float(x.pow(2).mean()) + 1e-6)
            out[b, j] = bool(real[b, j]) and any(abs(float(x[d])) / scale > tau for d in chosen)
    return out


def released_redistribution(probs: torch.Tensor, image: torch.Tensor, sinks: torch.Tensor, rows: torch.Tensor,
                            rho: float, p: float, summ: float, text_sinks: bool = True) -> tuple[torch.Tensor, int]:
    """The released recipe in the released parameters (``rho_code = 1 - rho``, ``p_code = 1 - p``), row by row.

    Returns the edited ``[B, H, q, k]`` attention and the number of edited rows per sample ``[B]``.
    """
    rho_code, p_code = 1 - rho, 1 - p
    out = probs.double().clone()
    edited = torch.zeros(probs.shape[0], dtype=torch.long)
    for b in range(probs.shape[0]):
        img = [j for j in range(probs.shape[-1]) if image[b, j]]
        vis_sinks = [j for j in img if sinks[b, j]]
        donors = [j for j in range(probs.shape[-1]) if sinks[b, j] and (text_sinks or image[b, j])]
        others = [j for j in img if not sinks[b, j]]
        if not vis_sinks:
            continue
        for h in range(probs.shape[1]):
            for i in range(probs.shape[2]):
                if not rows[b, i]:
                    continue
                a = probs[b, h, i].double()
                portion = float(a[vis_sinks].sum()) / sum(float(a[j]) + 1e-6 for j in img)
                summation = float(a[img].sum())
                if not (portion <= rho_code and summation >= summ) or float(a[others].sum()) == 0:
                    continue
                row = a.clone()
                budget = float(a[donors].sum()) * (1 - p_code)
                row[donors] *= p_code
                row[others] += budget * a[others] / a[others].sum()
                out[b, h, i] = row
                edited[b] += 1
    return out, edited


# ------------------------------------------------------------------------------------ observing a model


class _Probe(LayerHook):
    """Records a layer's attention (modifies=True only to run before VAR when installed first)."""

    def __init__(self, calls: list[torch.Tensor], modifies: bool) -> None:
        self.calls, self.modifies = calls, modifies

    def __call__(self, call: AttentionCall) -> torch.Tensor:
        self.calls.append(call.probs.detach().clone())
        return call.probs


@dataclass
class Observed:
    """Per layer: the decoder layer's input at every forward, the attention before and after VAR."""

    hidden: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    before: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    after: dict[int, list[torch.Tensor]] = field(default_factory=dict)


@contextlib.contextmanager
def observed(model: nn.Module, layers: list[int]) -> Iterator[Observed]:
    """Enter before VAR: our probe runs first on each layer, the observer after VAR."""
    seen = Observed()
    handles = []

    def keep(layer: int):
        def hook(module, args, kwargs):
            hidden = (args[0] if args else kwargs["hidden_states"]).detach().clone()
            seen.hidden.setdefault(layer, []).append(hidden.flatten(2))  # hyper-connection streams side by side
        return hook

    try:
        for layer in layers:
            handles.append(decoder_layers(model)[layer].register_forward_pre_hook(keep(layer), with_kwargs=True))
        probes = {layer: _Probe(seen.before.setdefault(layer, []), True) for layer in layers}
        with layer_hooks(model, probes):
            observers = {layer: _Probe(seen.after.setdefault(layer, []), False) for layer in layers}
            with layer_hooks(model, observers):
                yield seen
    finally:
        for handle in handles:
            handle.remove()


def check_layer(seen: Observed, layer: int, image: torch.Tensor, real: torch.Tensor, dims, tau: float,
                rho: float = 0.5, p: float = 0.4, summ: float = 0.2, text_sinks: bool = True) -> tuple[torch.Tensor, ...]:
    """Compare every call of ``layer`` (prefill, then one decoding step per call) with the released recipe.

    Returns the sink tokens and the edited rows per sample at the prefill and over the decoding steps.
    """
    hidden, before, after = seen.hidden[layer], seen.before[layer], seen.after[layer]
    length = image.shape[1]
    sinks = expected_sinks(hidden[0], real, image, dims, tau)
    positions = torch.arange(length)
    last_image = torch.where(image, positions, -1).amax(-1, keepdim=True)
    prefill_rows = (positions > last_image) & real
    expected, prefill_edits = released_redistribution(before[0], image, sinks, prefill_rows, rho, p, summ, text_sinks)
    torch.testing.assert_close(after[0].double(), expected, **TOLERANCE)
    decoding_edits = torch.zeros_like(prefill_edits)
    for step in range(1, len(before)):
        total, keys = length + step, before[step].shape[-1]  # keys: the last `keys` positions (sliding windows)
        pad = lambda mask: nn.functional.pad(mask, (0, step))[:, total - keys:]  # noqa: E731
        rows = torch.ones(before[step].shape[0], before[step].shape[2], dtype=torch.bool)
        expected, edits = released_redistribution(before[step], pad(image), pad(sinks), rows, rho, p, summ, text_sinks)
        torch.testing.assert_close(after[step].double(), expected, **TOLERANCE)
        decoding_edits += edits
    return sinks, prefill_edits, decoding_edits


def masks(model: nn.Module, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    return image_token_mask(model, inputs["input_ids"]), inputs["attention_mask"].bool()


def generate(model: nn.Module, inputs, steps: int = 3, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, **{"do_sample": False, **kwargs})


def logits(model: nn.Module, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


# ------------------------------------------------------------------------------------ the formulas alone


def test_redistribution_formula_by_hand() -> None:
    """One row: a text sink (key 0), a visual sink (key 1), two other image tokens, one text token."""
    row = torch.tensor([0.40, 0.10, 0.20, 0.20, 0.10])
    probs = row.view(1, 1, 1, 5)
    image = torch.tensor([[False, True, True, True, False]])
    sinks = torch.tensor([[True, True, False, False, False]])
    rows = torch.ones(1, 1, dtype=torch.bool)
    out, selected = redistribute_attention(probs, image, sinks, rows, rho=0.5, p=0.4, min_image_attention=0.2)
    # p = 0.4 of each sink's attention (0.16 + 0.04) goes to keys 2 and 3 in proportion (equal here)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.24, 0.06, 0.30, 0.30, 0.10]))
    assert bool(selected.all())
    only_visual, _ = redistribute_attention(probs, image, sinks, rows, 0.5, 0.4, 0.2, text_sinks=False)
    torch.testing.assert_close(only_visual.flatten(), torch.tensor([0.40, 0.06, 0.22, 0.22, 0.10]))
    # the visual non-sink ratio is 0.4 / 0.5 = 0.8 (less 1e-6 per image token in the released denominator)
    assert bool(redistribute_attention(probs, image, sinks, rows, 0.79, 0.4, 0.2)[1].all())
    assert not bool(redistribute_attention(probs, image, sinks, rows, 0.81, 0.4, 0.2)[1].any())
    # attention on the image is 0.5
    assert bool(redistribute_attention(probs, image, sinks, rows, 0.5, 0.4, 0.5)[1].all())
    assert not bool(redistribute_attention(probs, image, sinks, rows, 0.5, 0.4, 0.51)[1].any())
    # the released denominator adds 1e-6 per image token: with a sink share of exactly 1/2 the ratio is 0.500003
    half = torch.tensor([0.25, 0.25, 0.25, 0.0, 0.25]).view(1, 1, 1, 5)
    assert bool(redistribute_attention(half, image, sinks, rows, 0.5 + 2e-6, 0.4, 0.2)[1].all())
    assert not bool(redistribute_attention(half, image, sinks, rows, 0.5 + 4e-6, 0.4, 0.2)[1].any())
    # a visual sink that gets no attention: the ratio is exactly 1, and rho = 1 still selects the row
    unseen = torch.tensor([0.40, 0.0, 0.30, 0.20, 0.10]).view(1, 1, 1, 5)
    moved, chosen = redistribute_attention(unseen, image, sinks, rows, 1.0, 0.4, 0.2)
    assert bool(chosen.all())
    torch.testing.assert_close(moved.flatten(), torch.tensor([0.24, 0.0, 0.396, 0.264, 0.10]))
    every = image | sinks  # no image token left to receive: nothing moves
    assert torch.equal(redistribute_attention(probs, image, every, rows, 0.0, 0.4, 0.0)[0], probs)
    kept, chosen = redistribute_attention(probs, image, sinks, ~rows, 0.5, 0.4, 0.2)
    assert torch.equal(kept, probs) and not bool(chosen.any())
    no_visual_sink, chosen = redistribute_attention(probs, image, sinks & ~image, rows, 0.0, 0.4, 0.0)
    assert torch.equal(no_visual_sink, probs) and not bool(chosen.any())


def test_redistribution_matches_the_released_recipe_and_keeps_row_sums() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(2, 3, 5, 9, generator=generator), -1)
    image = torch.zeros(2, 9, dtype=torch.bool)
    image[:, 2:7] = True
    sinks = torch.zeros(2, 9, dtype=torch.bool)
    sinks[0, [0, 3]] = True
    sinks[1, [0, 5, 6]] = True
    rows = torch.rand(2, 5, generator=generator) > 0.3
    for rho, p, summ, text in [(0.5, 0.4, 0.2, True), (0.3, 0.9, 0.1, False), (0.0, 1.0, 0.0, True)]:
        out, selected = redistribute_attention(probs, image, sinks, rows, rho, p, summ, text)
        expected, edited = released_redistribution(probs, image, sinks, rows, rho, p, summ, text)
        torch.testing.assert_close(out.double(), expected, **TOLERANCE)
        assert torch.equal(selected.sum((1, 2)), edited) and int(edited.sum()) > 0
        torch.testing.assert_close(out.sum(-1), probs.sum(-1))


def test_sink_tokens_by_hand() -> None:
    hidden = torch.ones(2, 4, 8)
    hidden[0, 0, 3] = hidden[1, 1, 3] = 60.0  # the first real non-image token, massive in dimension 3
    hidden[0, 2, 3] = hidden[1, 3, 3] = 40.0  # an image token massive in the same dimension
    hidden[0, 3, 5] = 60.0  # massive in another dimension
    hidden[1, 0, 3] = 60.0  # padding
    real = torch.tensor([[True] * 4, [False, True, True, True]])
    image = torch.tensor([[False, False, True, True], [False, False, True, True]])
    # |x_d| / rms: 60 / sqrt((60^2 + 7) / 8) ~ 2.8, 40 / sqrt((40^2 + 7) / 8) ~ 2.8, 1 / rms ~ 0.05
    first = var_sink_tokens(hidden, real, image, FIRST_TOKEN, tau=2.0)
    assert first.tolist() == [[True, False, True, False], [False, True, False, True]]
    explicit = var_sink_tokens(hidden, real, image, [5], tau=2.0)
    assert explicit.tolist() == [[False, False, False, True], [False] * 4]
    assert not var_sink_tokens(hidden, real, image, FIRST_TOKEN, tau=3.0).any()
    assert not var_sink_tokens(hidden, real, image & False, FIRST_TOKEN, 2.0)[1, 0]  # padding never
    # PaliGemma: the image comes first; the rule reads the first text token (dimension 3), not the image's (5)
    prefix = torch.ones(1, 4, 8)
    prefix[0, 0, 5] = prefix[0, 2, 3] = 60.0
    prefix[0, 1, 3] = 40.0
    image_first = torch.tensor([[True, True, False, False]])
    sinks = var_sink_tokens(prefix, torch.ones(1, 4, dtype=torch.bool), image_first, FIRST_TOKEN, 2.0)
    assert sinks.tolist() == [[False, True, True, False]]


# ------------------------------------------------------------------------------------ by value in a model


EXPLICIT = {"llava": (1, 4, 9, 17, 30), "qwen2_vl_gqa": tuple(range(0, 32, 2))}
"""Sink dimensions under which every sample of each tiny model has visual sinks at ``tau=2``."""


@pytest.mark.parametrize("name, build", [("llava", tiny_llava), ("qwen2_vl_gqa", tiny_qwen2_vl)],
                         ids=["llava", "qwen2_vl_gqa"])
@pytest.mark.parametrize("rule", ["first_token", "explicit"])
def test_attention_equals_the_released_recipe_at_prefill_and_decoding(name, build, rule) -> None:
    model, make_inputs = build(0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    layers = attention_layers(model)
    dims, tau = (FIRST_TOKEN if rule == "first_token" else EXPLICIT[name]), 2.0
    with observed(model, layers) as seen, eah.redistribute_visual_attention(
            model, sink_dims=dims, tau=tau, start_layer=0) as var:
        generate(model, inputs, steps=3)
    image, real = masks(model, inputs)
    record = var.records[0]
    image_sinks = torch.zeros(len(PROMPTS), dtype=torch.long)
    prefill_rows, decoding_rows = torch.zeros_like(image_sinks), torch.zeros_like(image_sinks)
    for layer in layers:
        sinks, prefill, decoding = check_layer(seen, layer, image, real, dims, tau)
        image_sinks += (sinks & image).sum(-1)
        prefill_rows += prefill
        decoding_rows += decoding
    assert torch.equal(record.image_sinks, image_sinks) and torch.equal(record.rows_prefill, prefill_rows)
    assert torch.equal(record.rows_decoding, decoding_rows)
    assert int(prefill_rows.min()) > 0 and int(decoding_rows.sum()) > 0  # VAR acted on every sample


def test_every_examined_layer_and_only_those(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    with observed(model, [0, 1]) as seen, eah.redistribute_visual_attention(model, tau=2.0, start_layer=1):
        logits(model, inputs)
    assert torch.equal(seen.after[0][0], seen.before[0][0])  # before start_layer
    image, real = masks(model, inputs)
    assert int(check_layer(seen, 1, image, real, FIRST_TOKEN, 2.0)[1].sum()) > 0
    with observed(model, [0, 1]) as seen, eah.redistribute_visual_attention(model, tau=2.0, start_layer=0,
                                                                            edit_last_layer=False):
        logits(model, inputs)
    assert torch.equal(seen.after[1][0], seen.before[1][0])  # the last layer, excluded
    assert int(check_layer(seen, 0, image, real, FIRST_TOKEN, 2.0)[1].sum()) > 0


def test_parameters_reach_the_formula(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    image, real = masks(model, inputs)
    settings = {"rho": 0.7, "p": 0.9, "min_image_attention": 0.5, "text_sinks": False}
    with observed(model, [0, 1]) as seen, eah.redistribute_visual_attention(model, **ACTING, **settings):
        logits(model, inputs)
    edits = [check_layer(seen, layer, image, real, FIRST_TOKEN, 2.0, rho=0.7, p=0.9, summ=0.5,
                         text_sinks=False)[1] for layer in (0, 1)]
    assert int(sum(edits).sum()) > 0


def test_batch_rows_are_independent(llava) -> None:
    model, make_inputs = llava
    model.generation_config.pad_token_id = PAD
    with eah.redistribute_visual_attention(model, **ACTING) as var:
        batched = generate(model, make_inputs(PROMPTS), steps=4, output_scores=True, return_dict_in_generate=True)
        singles = [generate(model, make_inputs([p]), steps=4, output_scores=True, return_dict_in_generate=True)
                   for p in PROMPTS]
    for i, single in enumerate(singles):
        assert torch.equal(batched.sequences[i, -4:], single.sequences[0, -4:])
        for step in range(4):
            torch.testing.assert_close(batched.scores[step][i], single.scores[step][0], rtol=1e-5, atol=1e-5)
    for name in ("image_sinks", "text_sinks", "sink_layers", "rows_prefill", "rows_decoding"):
        assert torch.equal(getattr(var.records[0], name), torch.cat([getattr(r, name) for r in var.records[1:]]))


def test_intervention_changes_the_output(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    stock = logits(model, inputs)
    with eah.redistribute_visual_attention(model, **ACTING):
        changed = logits(model, inputs)
    real = inputs["attention_mask"].bool()
    assert not torch.allclose(stock[real], changed[real], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("neutral", [{"p": 0.0}, {"tau": 1e9}, {"tau": 2.0, "sink_dims": [3]}],
                         ids=["nothing_moved", "no_sink", "no_visual_sink"])
def test_neutral_settings_equal_the_stock_model_bit_for_bit(llava, neutral) -> None:
    model, make_inputs = llava
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    stock_logits, stock_tokens = logits(model, inputs), generate(model, inputs, steps=4)
    seen: list[nn.Module] = []
    sdpa = attention.sdpa_attention_forward

    def spy(module, *args, **kwargs):
        seen.append(module)
        return sdpa(module, *args, **kwargs)

    with mock.patch.object(attention, "sdpa_attention_forward", spy), eah.redistribute_visual_attention(
            model, start_layer=0, **neutral) as var:
        var_logits, var_tokens = logits(model, inputs), generate(model, inputs, steps=4)
    assert torch.equal(var_logits, stock_logits) and torch.equal(var_tokens, stock_tokens)
    assert set(seen) == {attention_module(model, 0), attention_module(model, 1)}  # no layer went explicit
    assert all(int(r.rows_prefill.sum() + r.rows_decoding.sum()) == 0 for r in var.records)
    if "sink_dims" in neutral:  # sinks, but none in the image
        assert int(var.records[0].text_sinks.sum()) > 0 and int(var.records[0].image_sinks.sum()) == 0


@pytest.mark.parametrize("decoding", [{"num_beams": 3}, {"do_sample": True, "top_k": 0}], ids=["beam", "sample"])
def test_beam_search_and_sampling_by_value(llava, decoding) -> None:
    model, make_inputs = llava
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    torch.manual_seed(0)
    with observed(model, [0, 1]) as seen, eah.redistribute_visual_attention(model, **ACTING) as var:
        generate(model, inputs, steps=3, **decoding)
    rows = 3 if "num_beams" in decoding else 1
    expand = lambda t: t.repeat_interleave(rows, 0)  # noqa: E731  generate expands each sample before the prefill
    image, real = masks(model, inputs)
    decoding_rows = sum(check_layer(seen, layer, expand(image), expand(real), FIRST_TOKEN, 2.0)[2] for layer in (0, 1))
    assert int(decoding_rows.sum()) > 0
    extras = resolve_method("var+beam" if rows > 1 else "var+sample", {"var": ACTING}).generate(model, inputs, 3).extras
    assert [e["var_image_sinks"] for e in extras] == var.records[0].image_sinks[::rows].tolist()


def test_decoding_steps_follow_their_own_prefill_on_the_kv_cache(llava) -> None:
    """Two streams interleaved (a contrastive decoder's pattern): each decoding step uses its own prefill's sinks."""
    model, make_inputs = llava
    first, second = make_inputs(PROMPTS[:2]), make_inputs(PROMPTS[1:])
    with observed(model, [0, 1]) as seen, eah.redistribute_visual_attention(model, **ACTING) as var, torch.no_grad():
        out_a = model(**first, use_cache=True)
        out_b = model(**second, use_cache=True)
        for out, inputs in ((out_a, first), (out_b, second)):
            token = out.logits[:, -1:].argmax(-1)
            mask = torch.cat([inputs["attention_mask"], torch.ones_like(token)], 1)
            model(input_ids=token, attention_mask=mask, cache=out.past_key_values, use_cache=True)
    assert len(var.records) == 2
    for layer in (0, 1):
        calls = {k: getattr(seen, k)[layer] for k in ("hidden", "before", "after")}
        for index, inputs in ((0, first), (1, second)):  # prefills 0, 1; decoding steps 2, 3
            one = Observed(*({layer: [calls[k][index], calls[k][index + 2]]} for k in ("hidden", "before", "after")))
            check_layer(one, layer, *masks(model, inputs), FIRST_TOKEN, 2.0)


# ------------------------------------------------------------------------------------ families, decoders


@contextlib.contextmanager
def distinct_prefill_tokens(model: nn.Module) -> Iterator[None]:
    """Add fixed noise to the prefill's input of the first decoder layer. Some tiny families give every image
    token the same features (Gemma 3's, InstructBLIP's query tokens); VAR then finds all or none of them
    sinks and, rightly, moves nothing."""

    def perturb(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] == 1:
            return None
        noise = torch.randn(hidden.shape[1:], generator=torch.Generator().manual_seed(0))
        hidden = hidden + 0.5 * hidden.float().pow(2).mean().sqrt().to(hidden.dtype) * noise.to(hidden.dtype)
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    handle = decoder_layers(model)[0].register_forward_pre_hook(perturb, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_every_family_by_value(family) -> None:
    model, make_inputs = TINY_FAMILIES[family](0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS[:2])
    layers = attention_layers(model)
    image, real = masks(model, inputs)
    with distinct_prefill_tokens(model), observed(model, layers) as stock:
        logits(model, inputs)
    magnitude = [eah.normalised_magnitude(stock.hidden[layer][0])[image] for layer in layers]
    tau = 0.97 * float(max(m.max() for m in magnitude))  # the largest image activations become sinks
    dims = list(range(model.config.get_text_config().hidden_size))
    with distinct_prefill_tokens(model), observed(model, layers) as seen, eah.redistribute_visual_attention(
            model, sink_dims=dims, tau=tau, start_layer=0, min_image_attention=0.0) as var:
        generate(model, inputs, steps=3)
    rows = sum(sum(check_layer(seen, layer, image, real, dims, tau, summ=0.0)[1:]) for layer in layers)
    assert int(rows.sum()) > 0 and torch.equal(rows, var.records[0].rows_prefill + var.records[0].rows_decoding)


def test_sliding_window_layers_align_the_prefill_sinks_with_the_keys_they_keep() -> None:
    """Gemma 3's sliding layer keeps only the last ``window`` keys at a decoding step: the prefill's sinks and
    image tokens must be those of these positions, not of the prompt's first ones."""
    model, make_inputs = TINY_FAMILIES["gemma3"](0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS[:2])
    image, real = masks(model, inputs)
    window, length = model.config.text_config.sliding_window, image.shape[1]
    with distinct_prefill_tokens(model), observed(model, [0, 1]) as stock:
        logits(model, inputs)
    kept = torch.zeros_like(image)
    kept[:, length + 1 - window:] = True  # the prompt keys the sliding layer still holds at the first step
    tau = 0.99 * float(eah.normalised_magnitude(stock.hidden[1][0])[image & kept].max())
    dims = list(range(model.config.text_config.hidden_size))
    with distinct_prefill_tokens(model), observed(model, [1]) as seen, eah.redistribute_visual_attention(
            model, sink_dims=dims, tau=tau, start_layer=1, rho=0.0, min_image_attention=0.0) as var:
        generate(model, inputs, steps=2)
    assert all(before.shape[-1] == window for before in seen.before[1][1:])
    _, _, decoding = check_layer(seen, 1, image, real, dims, tau, rho=0.0, summ=0.0)
    assert int(decoding.sum()) > 0 and torch.equal(decoding, var.records[0].rows_decoding)


def test_recorder_extras_through_the_method_registry(llava) -> None:
    model, make_inputs = llava
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    method = resolve_method("var", {"var": ACTING})
    assert method.name == "var+greedy" and method.settings()["var"]["p"] == 0.4
    generation = method.generate(model, inputs, 3)
    with eah.redistribute_visual_attention(model, **ACTING) as var:
        generate(model, inputs, steps=3)
    record = var.records[0]
    assert generation.extras == [
        {"var_image_sinks": int(record.image_sinks[i]), "var_text_sinks": int(record.text_sinks[i]),
         "var_sink_layers": int(record.sink_layers[i]), "var_rows_prefill": int(record.rows_prefill[i]),
         "var_rows_decoding": int(record.rows_decoding[i])} for i in range(len(PROMPTS))]
    assert all(e["var_rows_prefill"] > 0 for e in generation.extras)


@pytest.mark.parametrize("decoder", ["vcd", "pai", "dola", "opera"])
def test_composes_with_the_other_decoders_and_records_the_main_stream(llava, decoder) -> None:
    model, make_inputs = llava
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS[:2])
    params = {"var": ACTING, **{"opera": {"opera": {"num_beams": 2, "threshold": 20}},
                                 "pai": {"pai": {"start_layer": 0}}}.get(decoder, {})}
    extras = resolve_method(f"var+{decoder}", params).generate(model, inputs, 3).extras
    with eah.redistribute_visual_attention(model, **ACTING) as var:
        logits(model, inputs)
    assert [e["var_image_sinks"] for e in extras] == var.records[0].image_sinks.tolist()
    assert [e["var_rows_prefill"] for e in extras] == var.records[0].rows_prefill.tolist()


# ------------------------------------------------------------------------------------ hygiene, errors


def hook_state(model: nn.Module) -> list:
    return [(list(m._forward_pre_hooks), list(m._forward_hooks)) for m in model.modules()]


@pytest.mark.parametrize("raises", [False, True], ids=["normal_exit", "body_raises"])
def test_restores_the_model(llava, raises) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    before, hooks_before = logits(model, inputs), hook_state(model)
    with contextlib.suppress(KeyError):
        with eah.redistribute_visual_attention(model, **ACTING):
            logits(model, inputs)
            if raises:
                raise KeyError("boom")
    assert hook_state(model) == hooks_before
    assert not any(module in attention._LAYER_HOOKS for module in model.modules())
    assert model.config.text_config._attn_implementation == "sdpa"
    assert torch.equal(logits(model, inputs), before)


@pytest.mark.parametrize("bad, message", [
    ({"rho": 1.5}, "rho must be a number in"),
    ({"p": -0.1}, "p must be a number in"),
    ({"min_image_attention": "a"}, "min_image_attention must be"),
    ({"tau": 0}, "tau must be a positive"),
    ({"sink_dims": "gpt-2"}, "is unknown"),
    ({"sink_dims": "llava-1.5-7b"}, "hidden size is 32"),
    ({"sink_dims": [3, 32]}, r"0\.\.31"),
    ({"sink_dims": []}, "non-empty"),
    ({"text_sinks": 1}, "text_sinks must be true or false"),
    ({"start_layer": 2}, "no layer to examine"),
    ({"start_layer": 1, "edit_last_layer": False}, "no layer to examine"),
])
def test_bad_settings_are_refused(llava, bad, message) -> None:
    model, _ = llava
    with pytest.raises(ValueError, match=message):
        with eah.redistribute_visual_attention(model, **bad):
            pass


def test_a_decoding_step_without_its_prefill_is_refused(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(token)], 1)
    with pytest.raises(RuntimeError, match="whose prefill it did not see"):
        with eah.redistribute_visual_attention(model, **ACTING), torch.no_grad():
            model(input_ids=token, attention_mask=mask, cache=out.past_key_values, use_cache=True)
