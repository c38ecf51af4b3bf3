"""Every decoder and intervention by value: one decoding step at a time on a tiny LLaVA.

Each expected value is computed here from plain forward passes (the model on the image, on the
noised image, on the prompt without its image tokens, the candidate layers' hidden states
through the LM head) and the paper's formula, then compared with what the method's processor
produced inside ``generate`` (``output_scores``), to 1e-5.

The tiny model's LM head is sharpened (``SHARPEN``) so that its next-token distributions are
peaked like a real model's: the published plausibility cutoffs (0.1) then drop most tokens,
and a test can tell a cutoff from its absence.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import eahlib as eah
from eahlib.attention import AttentionCall, LayerHook, active_hooks, layer_hooks
from eahlib.methods import resolve_method
from eahlib.methods.vcd import diffusion_noise
from eahlib.models import attention_module
from eahlib.testing import IMAGE_TOKEN, PAD, tiny_llava
from tests.conftest import PROMPTS

SHARPEN = 20.0
"""LM-head scale: next-token logits with a standard deviation of about 2 (a real LVLM's range)."""
STEPS = 2
"""The prefill step and one decoding step (which runs on the KV caches)."""
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
"""``allclose`` at 1e-5 (the largest absolute difference seen is 6e-6, on logits of about 10)."""
SINKS = {"relative_threshold": 1.0}
"""A criterion under which the random tiny models do have sinks, so EAH acts."""


@pytest.fixture(scope="module")
def sharp():
    """``(model, inputs)``: the tiny LLaVA with a sharpened LM head, three left-padded prompts."""
    model, make_inputs = tiny_llava(0)
    with torch.no_grad():
        model.lm_head.weight.mul_(SHARPEN)
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None  # every row runs every step
    return model, make_inputs(PROMPTS)


@contextlib.contextmanager
def recorded(model: nn.Module) -> Iterator[list]:
    """Record the outputs (``sequences``, processed ``scores``, raw ``logits``) of every
    ``model.generate`` call made inside the block, whoever makes it."""
    calls: list = []
    original = model.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs, output_scores=True, output_logits=True, return_dict_in_generate=True)
        calls.append(out)
        return out.sequences

    model.generate = generate
    try:
        yield calls
    finally:
        del model.generate


def run(model: nn.Module, inputs, spec: str, params: dict | None = None, steps: int = STEPS):
    """``(new tokens [B, T], processed scores per step)`` of a method."""
    with recorded(model) as calls:
        tokens = resolve_method(spec, params).generate(model, inputs, steps).tokens
    assert len(calls) == 1
    return tokens, calls[0].scores


def extend(inputs, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The prompt followed by ``tokens`` (its attention mask extended)."""
    mask = inputs["attention_mask"]
    return {**inputs, "input_ids": torch.cat([inputs["input_ids"], tokens], -1),
            "attention_mask": torch.cat([mask, torch.ones_like(tokens, dtype=mask.dtype)], -1)}


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: counted over the real tokens."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def forward(model: nn.Module, inputs, **kwargs):
    """A plain full forward pass (no cache) of a left-padded batch."""
    with torch.no_grad():
        return model(**inputs, position_ids=positions(inputs["attention_mask"]), use_cache=False, **kwargs)


def last_logits(model: nn.Module, inputs) -> torch.Tensor:
    return forward(model, inputs).logits[:, -1].float()


def text_only(inputs, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each prompt without its image tokens, followed by ``tokens``; no pixels, left-padded."""
    rows = [torch.cat([ids[mask.bool() & (ids != IMAGE_TOKEN)], new])
            for ids, mask, new in zip(inputs["input_ids"], inputs["attention_mask"], tokens)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):], mask[i, width - len(row):] = row, 1
    return {"input_ids": ids, "attention_mask": mask}


def implausible(log_probs: torch.Tensor, beta: float) -> torch.Tensor:
    """The adaptive plausibility constraint, as written in the papers: ``p < beta * max p``."""
    probs = log_probs.double().softmax(-1)
    return probs < beta * probs.amax(-1, keepdim=True)


def assert_cutoff_acts(dropped: torch.Tensor) -> None:
    """The cutoff keeps some tokens and drops others in every row (so a test can see it)."""
    assert (~dropped).any(-1).all() and dropped.sum(-1).min() >= 5


# --------------------------------------------------------------------------------------- VCD


def diffusion_reference(noise_step: int) -> float:
    """``abar_t`` from the published schedule (DDPM sigmoid betas, 1000 steps, 0-based ``t``)."""
    betas = 1 / (1 + np.exp(-np.linspace(-6, 6, 1000))) * (0.5e-2 - 1e-5) + 1e-5
    return float(np.prod(1 - betas[: noise_step + 1]))


def test_vcd_noise_is_the_closed_form_of_the_forward_process() -> None:
    """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with the same standard-normal ``eps`` at every ``t``."""
    x0 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    recovered = {}
    for t in (100, 500, 999):
        abar = diffusion_reference(t)
        xt = diffusion_noise(x0, t, seed=7, batch_size=2)
        assert xt.shape == x0.shape and xt.dtype == x0.dtype
        recovered[t] = (xt.double() - math.sqrt(abar) * x0.double()) / math.sqrt(1 - abar)
    eps = recovered[500]
    for t in (100, 999):
        torch.testing.assert_close(recovered[t], eps, **TOLERANCE)
    assert abs(float(eps.mean())) < 0.03 and abs(float(eps.std()) - 1) < 0.03
    assert stats.kstest(eps.flatten().numpy(), "norm").pvalue > 1e-3
    assert not torch.allclose(eps[0], eps[1])  # one noise per image
    assert resolve_method("vcd").decoder.defaults["noise_step"] == 500


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.1), (2.5, 0.3)], ids=["published", "strong"])
def test_vcd_step_equals_contrast_of_two_forward_passes(sharp, alpha: float, beta: float) -> None:
    """``(1 + alpha) l - alpha l'`` on the tokens with ``p >= beta max p`` under ``l``, else ``-inf``."""
    model, inputs = sharp
    seed, noise_step = 3, 500
    tokens, scores = run(model, inputs, "vcd", {"vcd": {"alpha": alpha, "beta": beta, "noise_step": noise_step,
                                                        "seed": seed}})
    noised_pixels = diffusion_noise(inputs["pixel_values"], noise_step, seed, batch_size=3)
    for step in range(STEPS):
        sequence = extend(inputs, tokens[:, :step])
        image = last_logits(model, sequence)
        noised = last_logits(model, {**sequence, "pixel_values": noised_pixels})
        assert not torch.allclose(image, noised, atol=1e-2)
        dropped = implausible(image, beta)
        assert_cutoff_acts(dropped)
        expected = ((1 + alpha) * image - alpha * noised).masked_fill(dropped, -math.inf)
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)
        assert torch.equal(tokens[:, step], expected.argmax(-1))


# --------------------------------------------------------------------------------------- PAI


class RowImageBoost(LayerHook):
    """PAI's boost written out for one full forward (no cache, query row ``i`` = position ``i``):
    in the chosen rows the image-key logits ``a`` become ``a + alpha |a|``, nothing else changes."""

    modifies = True

    def __init__(self, image: torch.Tensor, rows: list[int], alpha: float) -> None:
        self.image, self.rows, self.alpha = image, rows, alpha

    def adjust_scores(self, call: AttentionCall) -> torch.Tensor:
        scores = call.scores
        assert call.is_prefill
        keys = torch.zeros(scores.shape[0], scores.shape[-1], dtype=torch.bool)
        keys[:, : self.image.shape[1]] = self.image
        rows = torch.zeros(scores.shape[2], dtype=torch.bool)
        rows[self.rows] = True
        chosen = keys[:, None, None, :] & rows[None, None, :, None]
        return torch.where(chosen, scores + self.alpha * scores.abs(), scores)


def image_stream(model, inputs, tokens: torch.Tensor, step: int, alpha: float, layers: range,
                 boosted: set[int]) -> torch.Tensor:
    """``[B, V]`` the image stream's logits at decoding step ``step``, from one full forward of the
    prompt and ``tokens[:, :step]`` with the boost in ``layers`` on the rows of the forward passes
    ``boosted``. Generation runs pass 0, the prefill (its last row: the prompt's last position
    ``N - 1``), then pass ``k``, one new row at position ``N - 1 + k``."""
    prompt_length = inputs["input_ids"].shape[1]
    image = (inputs["input_ids"] == IMAGE_TOKEN) & inputs["attention_mask"].bool()
    rows = [prompt_length - 1 + k for k in sorted(boosted) if k <= step]
    with layer_hooks(model, {layer: RowImageBoost(image, rows, alpha) for layer in layers}):
        return last_logits(model, extend(inputs, tokens[:, :step]))


def boosted_passes(step: int, prefill: bool) -> set[int]:
    """The forward passes up to ``step`` that PAI boosts: every decoding step, the prefill if ``prefill``."""
    return set(range(0 if prefill else 1, step + 1))


def assert_pins_passes(expected_with, step: int, prefill: bool) -> None:
    """The expected scores tell the boosted passes apart: toggling the prefill's boost changes
    them at step 0, leaving the newest decoding step unboosted changes them at every later step."""
    expected = expected_with(boosted_passes(step, prefill))
    if step == 0:
        assert not torch.allclose(expected, expected_with(boosted_passes(0, not prefill)), **TOLERANCE)
    else:
        assert not torch.allclose(expected, expected_with(boosted_passes(step, prefill) - {step}), **TOLERANCE)


@pytest.mark.parametrize("boost_guided_prefill", [False, True])
@pytest.mark.parametrize("start_layer", [0, 1])
def test_pai_boost_alone_boosts_every_forward_pass(sharp, start_layer: int, boost_guided_prefill: bool) -> None:
    """``gamma = 1`` (no guidance, no text-only pass): the scores are the image stream's logits
    with the prefill's last row and each step's row boosted, whatever ``boost_guided_prefill``
    says (as the released scripts run without ``--use-cfg``), in layers [start, end) only."""
    model, inputs = sharp
    alpha, steps, layers = 0.5, 3, range(start_layer, 2)
    params = {"pai": {"alpha": alpha, "gamma": 1.0, "start_layer": start_layer,
                      "boost_guided_prefill": boost_guided_prefill}}
    tokens, scores = run(model, inputs, "pai", params, steps)
    for step in range(steps):
        def expected_with(boosted: set[int], layers: range = layers) -> torch.Tensor:
            return image_stream(model, inputs, tokens, step, alpha, layers, boosted)

        expected = expected_with(boosted_passes(step, prefill=True))
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)
        assert_pins_passes(expected_with, step, prefill=True)
        other_layers = range(0, 2) if start_layer else range(1, 2)
        assert not torch.allclose(expected, expected_with(boosted_passes(step, True), other_layers), **TOLERANCE)


@pytest.mark.parametrize("boost_guided_prefill", [False, True], ids=["released", "paper"])
@pytest.mark.parametrize("alpha,gamma,beta", [(0.2, 1.1, 0.1), (0.5, 3.0, 0.1), (0.0, 2.0, 0.4)],
                         ids=["published", "strong", "guidance_only"])
def test_pai_step_equals_guidance_of_two_forward_passes(sharp, alpha: float, gamma: float, beta: float,
                                                        boost_guided_prefill: bool) -> None:
    """``gamma * s - (gamma - 1) * u`` (released ``CFG.py``: ``gamma * (s - u) + u``), ``s`` the
    image stream's and ``u`` the unboosted text-only stream's log-probabilities, on the tokens
    with ``p(y | v, x) >= beta max p`` (the cutoff is taken on ``s``). In ``s`` every decoding
    step's row is boosted, and the prefill's last row only with ``boost_guided_prefill`` (the
    released scripts' ``--use-cfg`` leaves the prefill, the first token, unboosted)."""
    model, inputs = sharp
    steps = 3
    params = {"pai": {"alpha": alpha, "gamma": gamma, "beta": beta, "start_layer": 0,
                      "boost_guided_prefill": boost_guided_prefill}}
    tokens, scores = run(model, inputs, "pai", params, steps)
    for step in range(steps):
        u = last_logits(model, text_only(inputs, tokens[:, :step])).log_softmax(-1)

        def expected_with(boosted: set[int]) -> torch.Tensor:
            s = image_stream(model, inputs, tokens, step, alpha, range(2), boosted).log_softmax(-1)
            return (gamma * s - (gamma - 1) * u).masked_fill(implausible(s, beta), -math.inf)

        s = image_stream(model, inputs, tokens, step, alpha, range(2), boosted_passes(step, boost_guided_prefill))
        dropped = implausible(s.log_softmax(-1), beta)
        assert_cutoff_acts(dropped)
        expected = expected_with(boosted_passes(step, boost_guided_prefill))
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)
        if alpha:
            assert_pins_passes(expected_with, step, boost_guided_prefill)
        guided = gamma * s.log_softmax(-1) - (gamma - 1) * u
        assert not torch.equal(dropped, implausible(guided, beta))  # a cutoff on the guided scores differs
        assert torch.equal(tokens[:, step], expected.argmax(-1))


# -------------------------------------------------------------------------------------- DoLa


def jensen_shannon(final: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
    """Published DoLa code: ``0.5 (KL(m || p_final) + KL(m || p_j))`` with each KL a mean over the vocabulary."""
    mixture = 0.5 * (final.exp() + early.exp())
    kl = nn.functional.kl_div  # kl_div(log q, p) = p (log p - log q), elementwise
    return 0.5 * (kl(final, mixture, reduction="none").mean(-1) + kl(early, mixture, reduction="none").mean(-1))


def repetition_penalty(scores: torch.Tensor, sequences: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty as transformers applies it: every id in the row (prompt, padding and new
    tokens) has its score divided by ``penalty`` if positive, multiplied if negative."""
    out = scores.clone()
    for row, ids in enumerate(sequences):
        seen = torch.unique(ids)
        values = out[row, seen]
        out[row, seen] = torch.where(values < 0, values * penalty, values / penalty)
    return out


@pytest.mark.parametrize("relative_top,penalty", [(0.1, 1.2), (0.3, 1.5)], ids=["published", "strong"])
def test_dola_step_equals_layer_contrast_of_hidden_states(sharp, relative_top: float, penalty: float) -> None:
    """Premature layer = the candidate of maximal JSD from the final layer; scores
    ``log p_final - log p_premature`` on the tokens with ``p_final >= relative_top max p_final``
    (else ``-inf``), then the repetition penalty over the prompt and the generated tokens."""
    model, inputs = sharp
    candidates = [0, 1]
    params = {"dola": {"layers": candidates, "relative_top": relative_top, "repetition_penalty": penalty}}
    tokens, scores = run(model, inputs, "dola", params, steps=3)
    head, chosen_layers, penalized = model.get_output_embeddings(), set(), False
    for step in range(3):
        sequence = extend(inputs, tokens[:, :step])
        out = forward(model, sequence, output_hidden_states=True)
        final = out.logits[:, -1].float().log_softmax(-1)
        with torch.no_grad():  # hidden_states[j] is the input of decoder layer j (0: the embeddings)
            early = torch.stack([head(out.hidden_states[j][:, -1]).float().log_softmax(-1) for j in candidates])
        divergence = torch.stack([jensen_shannon(final, early[j]) for j in range(len(candidates))])  # [L, B]
        chosen = divergence.argmax(0)
        chosen_layers |= set(chosen.tolist())
        dropped = implausible(final, relative_top)
        assert_cutoff_acts(dropped)
        contrast = (final - early[chosen, torch.arange(3)]).masked_fill(dropped, -math.inf)
        expected = repetition_penalty(contrast, sequence["input_ids"], penalty)
        penalized |= bool((torch.isfinite(contrast) & (expected != contrast)).any())
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)
        assert torch.equal(tokens[:, step], expected.argmax(-1))
    assert chosen_layers == {0, 1}  # both candidates are chosen somewhere: the choice is tested
    assert penalized  # the penalty changed a plausible token's score


# --------------------------------------------------------------------------------- ablation


class OProjInput:
    """Forward pre-hook of ``o_proj``: records its input, or replaces some heads' slices in it."""

    def __init__(self, heads: list[int], replace: torch.Tensor | None = None) -> None:
        self.heads, self.replace, self.seen = heads, replace, None

    def __call__(self, module, args):
        hidden = args[0]
        split = hidden.view(*hidden.shape[:2], 4, 8).clone()
        if self.replace is None:
            self.seen = split
            return None
        split[:, :, self.heads] = self.replace.expand(-1, split.shape[1], -1, -1)
        return (split.view_as(hidden),)


def forward_with_heads_replaced(model, inputs, replaced: dict[int, tuple[list[int], torch.Tensor]]):
    handles = [attention_module(model, layer).o_proj.register_forward_pre_hook(OProjInput(heads, value))
               for layer, (heads, value) in replaced.items()]
    try:
        return last_logits(model, inputs)
    finally:
        for handle in handles:
            handle.remove()


def prompt_means(model, inputs, layer: int, heads: list[int], earlier: dict) -> torch.Tensor:
    """``[B, 1, len(heads), d]``: each head's o_proj input averaged over the prompt's real tokens
    (with the earlier layers already ablated)."""
    probe = OProjInput(heads)
    handle = attention_module(model, layer).o_proj.register_forward_pre_hook(probe)
    try:
        forward_with_heads_replaced(model, inputs, earlier)
    finally:
        handle.remove()
    real = inputs["attention_mask"].float()[:, :, None, None]
    return ((probe.seen[:, :, heads] * real).sum(1, keepdim=True) / real.sum(1, keepdim=True))


def test_zero_ablation_at_every_decoding_step(sharp) -> None:
    model, inputs = sharp
    heads = {0: [3], 1: [0, 2]}
    tokens, scores = run(model, inputs, "ablate", {"ablate": {"heads": {str(k): v for k, v in heads.items()}}}, steps=3)
    zeros = {layer: (chosen, torch.zeros(1, 1, len(chosen), 8)) for layer, chosen in heads.items()}
    for step in range(3):
        sequence = extend(inputs, tokens[:, :step])
        expected = forward_with_heads_replaced(model, sequence, zeros)
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)
        assert not torch.allclose(expected, last_logits(model, sequence), **TOLERANCE)


def test_mean_ablation_reuses_the_prompt_mean_at_every_decoding_step(sharp) -> None:
    """Mean ablation = the head's mean over the prompt's real tokens (computed once, at the
    prefill) in place of its output at every position, the decoding steps included."""
    model, inputs = sharp
    heads = {0: [3], 1: [0, 2]}
    tokens, scores = run(model, inputs, "ablate", {"ablate": {"heads": {str(k): v for k, v in heads.items()},
                                                              "mode": "mean"}}, steps=3)
    means: dict[int, tuple[list[int], torch.Tensor]] = {}
    for layer, chosen in heads.items():
        means[layer] = (chosen, prompt_means(model, inputs, layer, chosen, dict(means)))
    for step in range(3):
        sequence = extend(inputs, tokens[:, :step])
        expected = forward_with_heads_replaced(model, sequence, means)
        torch.testing.assert_close(scores[step], expected, **TOLERANCE)
        if step:  # the mean of the sequence so far would be another ablation
            recomputed = {0: (heads[0], prompt_means(model, sequence, 0, heads[0], {}))}
            recomputed[1] = (heads[1], prompt_means(model, sequence, 1, heads[1], recomputed))
            assert not torch.allclose(forward_with_heads_replaced(model, sequence, recomputed), expected, **TOLERANCE)


# --------------------------------------------------------------------------------- sampling


def test_sample_decoder_samples_and_is_seeded(llava) -> None:
    model, make_inputs = llava
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    greedy = resolve_method("greedy").generate(model, inputs, 8).tokens

    def sampled(seed: int) -> torch.Tensor:
        return resolve_method("sample", {"sample": {"seed": seed}}).generate(model, inputs, 8).tokens

    draws = [sampled(seed) for seed in range(4)]
    assert torch.equal(draws[0], sampled(0))  # reproducible
    assert len({tuple(d.flatten().tolist()) for d in draws}) == 4  # each seed draws other tokens
    assert all(not torch.equal(d, greedy) for d in draws)


class FixedHead(nn.Module):
    """An LM head whose logits are one fixed vector at every position."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*hidden.shape[:-1], -1).to(hidden.dtype)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 0.9), (0.7, 0.8)], ids=["published", "other"])
def test_sample_decoder_draws_from_the_nucleus_distribution(temperature: float, top_p: float) -> None:
    """On a fixed logit vector, the draws follow ``softmax(l / T)`` restricted to the nucleus
    (the most likely tokens whose mass first reaches ``top_p``) and renormalised: chi-square."""
    model, _ = tiny_llava(0)
    probs = torch.full((99,), 1e-6)
    probs[10:18] = torch.tensor([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.03, 0.02])
    model.lm_head = FixedHead(probs.log())
    tempered = (probs.double().log() / temperature).softmax(-1)
    order = tempered.argsort(descending=True)
    before = tempered[order].cumsum(0) - tempered[order]  # mass of the more likely tokens
    nucleus = order[before < top_p]
    expected = torch.zeros(99, dtype=torch.float64)
    expected[nucleus] = tempered[nucleus] / tempered[nucleus].sum()
    n = 4000
    inputs = {"input_ids": torch.tensor([[1, 5, 6]] * n), "attention_mask": torch.ones(n, 3, dtype=torch.long)}
    params = {"sample": {"temperature": temperature, "top_p": top_p, "seed": 0}}
    draws = resolve_method("sample", params).generate(model, inputs, 1).tokens[:, 0]
    counts = torch.bincount(draws, minlength=99).double()
    assert set(draws.unique().tolist()) <= set(nucleus.tolist())  # nothing outside the nucleus
    statistic = float((((counts - n * expected) ** 2)[nucleus] / (n * expected[nucleus])).sum())
    assert statistic < stats.chi2.ppf(0.999, df=len(nucleus) - 1)
    assert len(nucleus) >= 4


# -------------------------------------------------------------------------------------- EAH


def test_random_head_covers_every_head_and_follows_the_seed(llava) -> None:
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    chosen = []
    for seed in range(40):
        with eah.enhance_attention_heads(model, layer=1, head="random", seed=seed, **SINKS) as h, \
                eah.capture_attention(model, 1) as cap, torch.no_grad():
            model(**inputs)
        heads = h.chosen_heads[0]
        attention = cap.attentions[1][0]
        for b, head in enumerate(heads.tolist()):  # the drawn head is the one broadcast
            assert torch.equal(attention[b], attention[b, head].expand_as(attention[b]))
        chosen.append(heads)
    chosen = torch.stack(chosen)  # [seeds, B]
    counts = torch.bincount(chosen.flatten(), minlength=4)
    assert (counts >= 15).all(), counts  # 120 draws over 4 heads: each head about 30 times
    for b in range(3):
        assert len(set(chosen[:, b].tolist())) == 4  # every sample gets every head under some seed
    with eah.enhance_attention_heads(model, layer=1, head="random", seed=5, **SINKS) as again, torch.no_grad():
        model(**inputs)
    assert torch.equal(again.chosen_heads[0], chosen[5])


def deep_llava(layers: int = 16):
    """The tiny LLaVA with ``layers`` language-model layers (the release preset's layer 15 exists)."""
    from transformers import LlavaForConditionalGeneration

    model, make_inputs = tiny_llava(0)
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = layers
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval(), make_inputs


@pytest.mark.parametrize("preset,layer,normalizer,head0_never_source", [
    ("paper", 1, "causal", False),  # "Seeing Clearly by Layer Two": the second layer
    ("release", 15, "release", True),  # the released modeling_llama.py
])
def test_presets_have_their_published_values(preset, layer, normalizer, head0_never_source) -> None:
    model, make_inputs = deep_llava()
    inputs = make_inputs(PROMPTS)
    with eah.capture_attention(model, layer) as stock, torch.no_grad():
        model(**inputs)
    with eah.enhance_attention_heads(model, preset=preset) as h:
        assert list(active_hooks(model)) == [layer]
        with torch.no_grad():
            model(**inputs)
    assert h.settings() == {"layer": layer, "absolute_threshold": 8e-4, "normalizer": normalizer, "head": "densest",
                            "decode": "off", "head0_never_source": head0_never_source, "seed": 0}
    image = eah.image_token_mask(model, inputs["input_ids"])
    density = eah.sink_density(stock.attentions[layer][0], image, threshold=8e-4,
                               attention_mask=inputs["attention_mask"], normalizer=normalizer)
    assert torch.equal(h.densities[0], density)


def test_decode_reuse_broadcasts_the_prefill_head_at_every_step(llava) -> None:
    """At each decoding step every head of the layer gets the new query row of the head chosen
    at the prefill: the stock attention row of that head, computed by a full stock forward."""
    model, make_inputs = llava
    inputs = make_inputs(PROMPTS)
    with eah.enhance_attention_heads(model, layer=1, decode="reuse", **SINKS) as h, eah.capture_attention(model, 1) as cap:
        sequences = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    chosen = h.chosen_heads[0]
    assert len(h.chosen_heads) == 1 and (chosen >= 0).all()
    full = extend(inputs, sequences[:, inputs["input_ids"].shape[1]:-1])
    with eah.capture_attention(model, 1) as stock:
        forward(model, full)
    stock_rows = stock.attentions[1][0]  # [B, H, N + 3, N + 3]; layer 1's keys do not depend on EAH at layer 1
    prompt_length = inputs["input_ids"].shape[1]
    steps = cap.attentions[1][1:]
    assert len(steps) == 3
    for t, step in enumerate(steps):
        position = prompt_length + t
        for b, head in enumerate(chosen.tolist()):
            want = stock_rows[b, head, position, : position + 1]
            torch.testing.assert_close(step[b, :, 0], want.expand(4, -1), **TOLERANCE)
        assert not torch.allclose(step[:, :, 0], stock_rows[:, :, position, : position + 1], **TOLERANCE)


MORE_PROMPTS = [*PROMPTS, [15, 16, 17, 18], [19, 20], [21, 22, 23, 24, 25, 26], [27], [28, 29, 30]]
PRECISION_LAYER = 0
"""EAH's layer in the precision tests: its densest heads lead by 1 to 4 sinks on MORE_PROMPTS."""


def fp32_heads(inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B] heads, [B, H] densities)`` chosen by EAH on the fp32 tiny LLaVA."""
    model, _ = tiny_llava(0)
    with eah.enhance_attention_heads(model, layer=PRECISION_LAYER, **SINKS) as h, torch.no_grad():
        model(**inputs)
    return h.chosen_heads[0], h.densities[0]


def untied(densities: torch.Tensor) -> torch.Tensor:
    """``[B]`` the samples whose densest head is unique."""
    top2 = densities.topk(2, -1).values
    return top2[:, 0] > top2[:, 1]


def assert_broadcast(attention: torch.Tensor, heads: list[int], source: torch.Tensor | None = None) -> None:
    """Every head of row ``b`` carries head ``heads[b]``'s attention: ``source[b, heads[b]]``
    when the stock attention ``source`` is given (to 1e-4, half-precision kernels may differ
    between calls; the heads differ by about 1e-2), and no other head's."""
    for row, head in enumerate(heads):
        assert torch.equal(attention[row], attention[row, head].expand_as(attention[row]))
        if source is not None:
            distance = (source[row] - attention[row, 0]).abs().amax((-2, -1))  # [H]
            assert float(distance[head]) < 1e-4 and int(distance.argmin()) == head, (row, head, distance)


def stock_attention(model, inputs) -> torch.Tensor:
    """``[B, H, N, N]`` the precision layer's attention at the prefill, without EAH."""
    with eah.capture_attention(model, PRECISION_LAYER) as cap:
        forward(model, inputs)
    return cap.attentions[PRECISION_LAYER][0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_eah_in_half_precision_chooses_the_fp32_heads(dtype) -> None:
    """Sinks are counted from float32 probabilities, so a half-precision model chooses the fp32
    model's head wherever fp32's densest head is unique; the broadcast shows in the captured attention."""
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(MORE_PROMPTS)
    full_heads, full_densities = fp32_heads(inputs)
    model.to(dtype)
    half_inputs = {**inputs, "pixel_values": inputs["pixel_values"].to(dtype)}
    with eah.enhance_attention_heads(model, layer=PRECISION_LAYER, **SINKS) as half, \
            eah.capture_attention(model, PRECISION_LAYER) as cap, torch.no_grad():
        model(**half_inputs)
    assert int((half.densities[0] - full_densities).abs().max()) <= 1
    clear = untied(full_densities)
    assert int(clear.sum()) >= 5
    assert torch.equal(half.chosen_heads[0][clear], full_heads[clear])
    assert torch.equal(half.chosen_heads[0], half.densities[0].argmax(-1))
    assert_broadcast(cap.attentions[PRECISION_LAYER][0], half.chosen_heads[0].tolist(),
                     stock_attention(model, half_inputs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_eah_under_beam_search_broadcasts_each_samples_fp32_head(dtype) -> None:
    """Beam search expands each sample into beams before the prefill: every beam of a sample
    gets fp32 greedy's head for that sample (where it is unique), and the broadcast shows at the
    prefill and, with decode='reuse', at every decoding step."""
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(MORE_PROMPTS)
    full_heads, full_densities = fp32_heads(inputs)
    model.to(dtype)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    beams = 3
    with eah.enhance_attention_heads(model, layer=PRECISION_LAYER, decode="reuse", **SINKS) as h, \
            eah.capture_attention(model, PRECISION_LAYER) as cap:
        model.generate(**inputs, max_new_tokens=3, num_beams=beams, do_sample=False)
    heads = h.chosen_heads[0].view(-1, beams)
    assert len(h.chosen_heads) == 1 and (heads == heads[:, :1]).all() and (heads >= 0).all()
    clear = untied(full_densities)
    assert torch.equal(heads[clear, 0], full_heads[clear])
    if dtype == torch.float32:
        assert torch.equal(heads[:, 0], full_heads)
    captured = cap.attentions[PRECISION_LAYER]
    assert len(captured) == 3
    stock = stock_attention(model, inputs).repeat_interleave(beams, 0)  # the beams of a sample share its prompt
    assert_broadcast(captured[0], h.chosen_heads[0].tolist(), stock)
    for attention in captured[1:]:  # each decoding step
        assert attention.shape[0] == len(MORE_PROMPTS) * beams
        assert_broadcast(attention, h.chosen_heads[0].tolist())
