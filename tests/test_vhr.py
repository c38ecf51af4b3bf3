"""VHR and VHD by value, on tiny random models.

Every expected value is computed here from plain forward passes: the model on the prompt with its image and
on the prompt without its image tokens (left-padded again, positions over its own tokens), each head's output
read at the input of the output projection and the chosen heads multiplied by ``alpha`` by hooks written
here. The paper's rules (Eqs. 4-7) are written again with numpy. Compared at 1e-5.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import eahlib as eah
from eahlib.divergence import HeadDivergence, head_views, token_divergence, vision_head_divergence
from eahlib.interventions import vhr as vhr_module
from eahlib.interventions.vhr import (
    outlier_heads,
    reinforce_vision_heads,
    reinforced_heads,
    reinforced_layers,
)
from eahlib.methods import resolve_method
from eahlib.models import attention_layers, attention_module, head_count, model_family
from eahlib.testing import EOS, IMAGE, IMAGE_TOKEN, PAD, TINY_MODELS, _left_pad, _seeded_images, tiny_llava
from eahlib.testing.families import TINY_FAMILIES
from tests.conftest import PROMPTS

ALPHA = 2.0
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
VALUE_FAMILIES = ("llava", "qwen2_vl", "instructblip")
"""LLaVA; Qwen2-VL (GQA, M-RoPE); InstructBLIP (its prompt without image runs through the language model)."""


# --------------------------------------------------------------------------------------------- references


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def without_image(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each prompt without its image tokens and padding, left-padded again; no pixels."""
    rows = [ids[mask.bool() & (ids != IMAGE_TOKEN)].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    return _left_pad(rows)


def main_forward(name: str) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]:
    """The plain forward with the image of a family, as generate's prefill runs it; returns the logits."""
    def run(model, inputs):
        extra = {"position_ids": positions(inputs["attention_mask"])} if name == "llava" else {}
        with torch.no_grad():
            return model(**inputs, **extra, use_cache=False).logits
    return run


def text_forward(model: nn.Module, text: Mapping[str, torch.Tensor]) -> None:
    """The plain forward without the image: the language model alone where the model needs pixels."""
    runner = model.language_model if model_family(model).name == "instructblip" else model
    with torch.no_grad():
        runner(**text, position_ids=positions(text["attention_mask"]), use_cache=False)


class Heads:
    """Forward pre-hooks on ``o_proj``: record each layer's head outputs at the last position (before any
    change), and multiply the given heads of each row by ``alpha``."""

    def __init__(self, model: nn.Module, scaled: Mapping[int, torch.Tensor], alpha: float = ALPHA) -> None:
        self.model, self.scaled, self.alpha = model, scaled, alpha
        self.seen: dict[int, torch.Tensor] = {}

    @contextmanager
    def on(self) -> Iterator[Heads]:
        heads = head_count(self.model)
        handles = []
        for layer in attention_layers(self.model):
            def hook(module, args, layer=layer):
                batch, length, width = args[0].shape
                split = args[0].reshape(batch, length, heads, width // heads).clone()
                self.seen[layer] = split[:, -1].float()
                for row in range(batch):
                    for head in range(heads):
                        if layer in self.scaled and bool(self.scaled[layer][row, head]):
                            split[row, :, head] = split[row, :, head] * self.alpha
                return (split.reshape(batch, length, width),)
            handles.append(attention_module(self.model, layer).o_proj.register_forward_pre_hook(hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def expected_heads(vhd: np.ndarray, text_outputs: np.ndarray) -> np.ndarray:
    """Eqs. 6-7 with numpy: outliers (VHD and ||A(x_T)||^2 both above mean + sample std) set to 0, then the
    heads above the median."""
    activation = (text_outputs.astype(np.float64) ** 2).sum(-1)

    def above(x: np.ndarray) -> np.ndarray:
        return x > x.mean() + x.std(ddof=1)

    kept = np.where(above(vhd) & above(activation), 0.0, vhd)
    return kept > np.median(kept)


def reference(model, inputs, layers, forward) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    """VHR from plain forward passes, layer by layer: each layer's VHD with the earlier layers' heads
    multiplied in both streams, its heads by the rule, and the logits with every layer's heads multiplied."""
    scaled: dict[int, torch.Tensor] = {}
    vhd: dict[int, torch.Tensor] = {}
    text = without_image(inputs)
    for layer in layers:
        with Heads(model, dict(scaled)).on() as main:
            forward(model, inputs)
        with Heads(model, dict(scaled)).on() as plain:
            text_forward(model, text)
        vhd[layer] = (main.seen[layer].double() - plain.seen[layer].double()).norm(dim=-1).float()
        scaled[layer] = torch.tensor(np.stack([expected_heads(v, t) for v, t in
                                               zip(vhd[layer].numpy(), plain.seen[layer].numpy())]))
    with Heads(model, scaled).on():
        logits = forward(model, inputs)
    return vhd, scaled, logits


# ------------------------------------------------------------------------------------- the rules by hand


def test_outliers_need_both_conditions_and_the_sample_std() -> None:
    """Head 2 has the largest VHD and ``TA``: above mean + std with the population std (2.66) but not with the
    sample std (2.84), so it stays; in row 2 head 0's ``TA`` is no outlier, so its large VHD stays too."""
    vhd = torch.tensor([[0.1, 0.5, 2.7, 2.6], [9.0, 1.0, 1.0, 1.0], [9.0, 1.0, 1.0, 1.0]])
    activation = torch.tensor([[1.0, 1.0, 9.0, 1.0], [1.0, 1.0, 1.0, 1.0], [16.0, 1.0, 1.0, 1.0]])
    text = activation.sqrt().unsqueeze(-1)  # d = 1: ||A||^2 = activation
    expected = np.stack([expected_heads(v, t) for v, t in zip(vhd.numpy(), text.numpy())])
    assert torch.equal(reinforced_heads(vhd, text), torch.tensor(expected))
    assert expected.tolist() == [[False, False, True, True], [True, False, False, False], [False, False, False, False]]
    assert outlier_heads(vhd, text).tolist() == [[False] * 4, [False] * 4, [True, False, False, False]]


def test_published_layers_as_fractions_of_the_attention_layers() -> None:
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from eahlib.testing import _clip_vision, _text_config

    def layers_of(depth: int, **kwargs) -> list[int]:
        config = LlavaConfig(text_config=LlamaConfig(**_text_config() | {"num_hidden_layers": depth}),
                             vision_config=_clip_vision(), image_token_id=IMAGE_TOKEN)
        with torch.device("meta"):
            return reinforced_layers(LlavaForConditionalGeneration(config), **kwargs)

    assert layers_of(32) == [1, *range(18, 32)]  # the second and the last 14 (LLaVA, published)
    assert layers_of(32, last_fraction=18 / 32, second_layer=False) == list(range(14, 32))  # InstructBLIP
    assert layers_of(30) == [1, *range(17, 30)]  # 14/32 * 30 = 13.1 -> 13
    assert layers_of(24, second_layer=False) == list(range(13, 24))  # 14/32 * 24 = 10.5 -> 11 (half up)
    assert layers_of(2) == [1]
    assert layers_of(2, second_layer=False) == [1]  # 14/32 * 2 = 0.875 -> 1
    hybrid, _ = TINY_FAMILIES["lfm2_vl"](0)  # a convolution layer, then the only attention layer
    assert reinforced_layers(hybrid, last_fraction=1.0) == [1]
    with pytest.raises(ValueError, match="no layer to reinforce"):
        reinforce_vision_heads(hybrid).__enter__()
    with pytest.raises(ValueError, match="has no self-attention"):
        reinforce_vision_heads(hybrid, layers=[0]).__enter__()


# ------------------------------------------------------------------------------------------ by value


@pytest.mark.parametrize("name", VALUE_FAMILIES)
def test_vhd_heads_and_outputs_equal_plain_forward_passes(name: str) -> None:
    """Each head's VHD at each layer equals the distance between its outputs in two plain forward passes
    (with and without the image, the earlier layers' chosen heads multiplied in both); the heads are the
    rule applied to those VHD; the logits are those of the model with the chosen heads multiplied."""
    model, make_inputs = TINY_MODELS[name](0)
    inputs = make_inputs(PROMPTS)
    forward, layers = main_forward(name), [0, 1]
    vhd, heads, logits = reference(model, inputs, layers, forward)
    with reinforce_vision_heads(model, ALPHA, layers) as state:
        got = forward(model, inputs)
    assert len(state.vhd) == 1 and state.layers == layers
    for row, layer in enumerate(layers):
        torch.testing.assert_close(state.vhd[0][:, row], vhd[layer], **TOLERANCE)
        assert torch.equal(state.reinforced[0][:, row], heads[layer])
    torch.testing.assert_close(got, logits, **TOLERANCE)
    assert not torch.allclose(got, forward(model, inputs), atol=1e-4)  # the heads do change the model


@pytest.mark.parametrize("name", VALUE_FAMILIES)
def test_text_stream_sees_the_earlier_layers_reinforced(name: str) -> None:
    """Layer 1's VHD differs from the one measured with layer 0 reinforced in the image stream only."""
    model, make_inputs = TINY_MODELS[name](0)
    inputs = make_inputs(PROMPTS)
    forward = main_forward(name)
    _, heads, _ = reference(model, inputs, [0], forward)
    with Heads(model, heads).on() as main:
        forward(model, inputs)
    with Heads(model, {}).on() as plain:
        text_forward(model, without_image(inputs))
    one_sided = (main.seen[1] - plain.seen[1]).norm(dim=-1)
    with reinforce_vision_heads(model, ALPHA, [0, 1]) as state:
        forward(model, inputs)
    assert not torch.allclose(state.vhd[0][:, 1], one_sided, atol=1e-4)


def test_decoding_steps_reuse_the_prefill_heads() -> None:
    """Each step of a cached greedy generation equals a full forward of the prompt and the tokens so far with
    the prefill's heads multiplied at every position."""
    model, make_inputs = tiny_llava(0)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = PAD, None
    inputs = make_inputs(PROMPTS)
    with reinforce_vision_heads(model, ALPHA, [0, 1]) as state, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    assert len(state.reinforced) == 1  # one prefill; the steps chose nothing new
    heads = {layer: state.reinforced[0][:, row] for row, layer in enumerate(state.layers)}
    prompt_length = inputs["input_ids"].shape[1]
    for step, got in enumerate(out.logits):
        sequence = out.sequences[:, :prompt_length + step]
        full = {**inputs, "input_ids": sequence, "attention_mask": torch.cat(
            [inputs["attention_mask"], torch.ones(len(sequence), step, dtype=torch.long)], -1)}
        with Heads(model, heads).on():
            expected = main_forward("llava")(model, full)[:, -1]
        torch.testing.assert_close(got, expected, **TOLERANCE)


def test_each_kv_cache_keeps_the_heads_of_its_own_prefill() -> None:
    """Two streams prefilled one after the other (as a contrastive decoder's) decode with their own heads."""
    model, make_inputs = tiny_llava(0)
    first, second = make_inputs(PROMPTS[:2]), make_inputs([[30, 31, 32], [33, 34]])
    token = torch.full((2, 1), 5)

    def step(inputs, cache):
        mask = torch.cat([inputs["attention_mask"], torch.ones(2, 1, dtype=torch.long)], -1)
        position = positions(mask)[:, -1:]
        return model(input_ids=token, attention_mask=mask, position_ids=position, cache=cache).logits[:, -1]

    with reinforce_vision_heads(model, ALPHA, [0, 1]) as state, torch.no_grad():
        caches = [model(**inputs, position_ids=positions(inputs["attention_mask"])).cache for inputs in (first, second)]
        got = [step(first, caches[0]), step(second, caches[1])]
    for inputs, logits, chosen in zip((first, second), got, state.reinforced):
        full = {**inputs, "input_ids": torch.cat([inputs["input_ids"], token], -1),
                "attention_mask": torch.cat([inputs["attention_mask"], torch.ones(2, 1, dtype=torch.long)], -1)}
        with Heads(model, {layer: chosen[:, row] for row, layer in enumerate(state.layers)}).on():
            expected = main_forward("llava")(model, full)[:, -1]
        torch.testing.assert_close(logits, expected, **TOLERANCE)
    assert not torch.equal(state.reinforced[0], state.reinforced[1])


def test_a_sample_in_a_padded_batch_equals_it_alone() -> None:
    model, make_inputs = tiny_llava(0)
    forward = main_forward("llava")
    batch = make_inputs(PROMPTS)
    with reinforce_vision_heads(model, ALPHA, [0, 1]) as state:
        together = forward(model, batch)
        alone = [forward(model, make_inputs([prompt]))[0, -1] for prompt in PROMPTS]
    for row, prompt_logits in enumerate(alone):
        torch.testing.assert_close(together[row, -1], prompt_logits, **TOLERANCE)
        torch.testing.assert_close(state.vhd[0][row], state.vhd[row + 1][0], **TOLERANCE)
        assert torch.equal(state.reinforced[0][row], state.reinforced[row + 1][0])


def test_a_sample_without_image_tokens_is_unchanged() -> None:
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs([[5, 6, 7], [IMAGE, 8, 9]])
    inputs["input_ids"][0, inputs["input_ids"][0] == IMAGE_TOKEN] = 3  # first sample: no image tokens
    inputs["pixel_values"] = inputs["pixel_values"][1:]
    forward = main_forward("llava")
    stock = forward(model, inputs)
    with reinforce_vision_heads(model, ALPHA, [0, 1]) as state:
        got = forward(model, inputs)
    torch.testing.assert_close(got[0], stock[0], **TOLERANCE)
    assert not state.reinforced[0][0].any() and state.vhd[0][0].isnan().all()
    assert state.reinforced[0][1].any()
    only_text = {"input_ids": inputs["input_ids"][:1], "attention_mask": inputs["attention_mask"][:1]}
    with reinforce_vision_heads(model, ALPHA, [0, 1]), pytest.warns(UserWarning, match="without image tokens"):
        unchanged = forward(model, only_text)
    assert torch.equal(unchanged, forward(model, only_text))


# -------------------------------------------------------------------------------- neutral, decoders


def generate(model, inputs, **kwargs):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=3, output_logits=True, return_dict_in_generate=True, **kwargs)


@pytest.mark.parametrize("decoding", [{"do_sample": False}, {"do_sample": False, "num_beams": 3}])
def test_factor_one_is_the_stock_model_bit_for_bit(decoding) -> None:
    model, make_inputs = tiny_llava(0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    stock = generate(model, inputs, **decoding)
    with reinforce_vision_heads(model, 1.0, [0, 1]) as state:
        same = generate(model, inputs, **decoding)
    assert state.reinforced[0].any()  # heads were chosen, and multiplied by 1
    assert torch.equal(same.sequences, stock.sequences)
    assert all(torch.equal(a, b) for a, b in zip(same.logits, stock.logits))


@pytest.mark.parametrize("decoding", [{"num_beams": 3, "do_sample": False}, {"do_sample": True, "top_p": 0.9}])
def test_beam_search_and_sampling_follow_each_samples_heads(decoding) -> None:
    """Under beam search (rows reordered every step) and sampling, VHR equals the model whose heads are fixed
    to those VHR chose at the prefill, which all rows of a sample share."""
    model, make_inputs = tiny_llava(0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    torch.manual_seed(0)
    with reinforce_vision_heads(model, ALPHA, [0, 1]) as state:
        got = generate(model, inputs, **decoding)
    chosen = state.reinforced[0]
    copies = chosen.shape[0] // len(PROMPTS)
    assert torch.equal(chosen, chosen[::copies].repeat_interleave(copies, 0))
    torch.manual_seed(0)
    with Heads(model, {layer: chosen[:, row] for row, layer in enumerate(state.layers)}).on():
        expected = generate(model, inputs, **decoding)
    assert torch.equal(got.sequences, expected.sequences)
    for a, b in zip(got.logits, expected.logits):
        torch.testing.assert_close(a, b, **TOLERANCE)


@pytest.mark.parametrize("spec", ["vhr", "vhr+beam", "vhr+sample", "vhr+vcd", "vhr+pai", "vhr+dola", "vhr+opera"])
def test_composes_with_every_decoder_and_records_each_samples_heads(spec: str) -> None:
    model, make_inputs = tiny_llava(0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    decoder_params = {"pai": {"pai": {"start_layer": 0}}}.get(spec.split("+")[-1], {})
    method = resolve_method(spec, {"vhr": {"layers": [0, 1]}, **decoder_params})
    with warnings.catch_warnings():
        if "pai" in spec:  # PAI's stream without the image reaches VHR too, which leaves it unchanged
            warnings.filterwarnings("ignore", "A batch without image tokens reached VHR")
        generation = method.generate(model, inputs, 2)
    assert generation.tokens.shape[0] == len(PROMPTS)
    with reinforce_vision_heads(model, ALPHA, [0, 1]) as alone:
        main_forward("llava")(model, inputs)
    for row, extras in enumerate(generation.extras):
        expected = {str(layer): alone.reinforced[0][row, i].nonzero().flatten().tolist()
                    for i, layer in enumerate([0, 1])}
        assert extras["vhr_heads"] == expected


def test_published_defaults_are_recorded() -> None:
    settings = resolve_method("vhr+beam").settings()
    assert settings["vhr"] == {"alpha": 2.0, "layers": None, "last_fraction": 14 / 32, "second_layer": True}


@pytest.mark.parametrize("model_type", sorted(TINY_FAMILIES))
def test_every_family(model_type: str) -> None:
    """Factor 1 equals the stock model bit for bit and factor 2 changes it, on every family; a family whose
    attention has no output projection is refused, naming it."""
    model, make_inputs = TINY_FAMILIES[model_type](0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    layers = attention_layers(model)
    projection = model_family(model).output_projection
    if any(getattr(attention_module(model, layer), projection, None) is None for layer in layers):
        with pytest.raises(ValueError, match="no output projection"):
            reinforce_vision_heads(model, ALPHA, layers).__enter__()
        return
    stock = generate(model, inputs, do_sample=False)
    with reinforce_vision_heads(model, 1.0, layers):
        same = generate(model, inputs, do_sample=False)
    assert all(torch.equal(a, b) for a, b in zip(same.logits, stock.logits))
    with reinforce_vision_heads(model, ALPHA, layers) as state:
        changed = generate(model, inputs, do_sample=False)
    assert state.reinforced[0].shape == (len(PROMPTS), len(layers), head_count(model))
    assert state.reinforced[0].any(-1).all()
    assert not torch.allclose(changed.logits[0], stock.logits[0])


# ------------------------------------------------------------------------------------ hygiene, errors


def hook_state(model) -> list[tuple[list[int], list[int]]]:
    return [(list(m._forward_pre_hooks), list(m._forward_hooks)) for m in model.modules()]


def test_the_model_is_restored_and_no_thread_is_left() -> None:
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(PROMPTS)
    forward = main_forward("llava")
    before, hooks, threads = forward(model, inputs), hook_state(model), threading.active_count()
    with reinforce_vision_heads(model, ALPHA, [0, 1]):
        forward(model, inputs)
    assert hook_state(model) == hooks and threading.active_count() == threads
    with pytest.raises(KeyError, match="boom"), reinforce_vision_heads(model, ALPHA, [0, 1]):
        raise KeyError("boom")
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs["input_ids"])
    with pytest.raises(ValueError, match="inputs_embeds only"), reinforce_vision_heads(model, ALPHA, [0, 1]):
        model.model.language_model(inputs_embeds=embeds)
    assert hook_state(model) == hooks and threading.active_count() == threads
    assert torch.equal(forward(model, inputs), before)
    assert vhr_module.active_reinforcement(model) is None


def test_a_failing_stream_without_the_image_raises_and_leaves_nothing(monkeypatch) -> None:
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(PROMPTS)
    before = main_forward("llava")(model, inputs)  # transformers installs its own output hooks at a first forward
    hooks, threads = hook_state(model), threading.active_count()

    def broken(model, text):
        raise OSError("no text stream")

    monkeypatch.setattr(vhr_module, "run_without_image", broken)
    with pytest.raises(RuntimeError, match="failed before layer 0") as caught:
        with reinforce_vision_heads(model, ALPHA, [0, 1]):
            main_forward("llava")(model, inputs)
    assert isinstance(caught.value.__cause__, OSError)
    assert hook_state(model) == hooks and threading.active_count() == threads
    monkeypatch.undo()
    assert torch.equal(main_forward("llava")(model, inputs), before)


def test_the_stream_without_the_image_is_hidden_from_other_hooks() -> None:
    """EAH's tracker and capture hooks see the main forward only, though the other stream runs mid-way."""
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(PROMPTS)
    with eah.capture_attention(model, [0, 1]) as capture, reinforce_vision_heads(model, ALPHA, [0, 1]):
        main_forward("llava")(model, inputs)
    assert [len(capture.attentions[layer]) for layer in (0, 1)] == [1, 1]
    assert capture.attentions[1][0].shape[-1] == inputs["input_ids"].shape[1]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"alpha": -1.0}, ValueError, "alpha must be a finite number"),
    ({"alpha": float("inf")}, ValueError, "alpha must be a finite number"),
    ({"last_fraction": 1.5}, ValueError, "last_fraction must be in"),
    ({"second_layer": "yes"}, ValueError, "second_layer must be true or false"),
    ({"layers": [7]}, IndexError, "out of range"),
])
def test_bad_arguments(kwargs, error, message) -> None:
    model, _ = tiny_llava(0)
    with pytest.raises(error, match=message):
        reinforce_vision_heads(model, **kwargs).__enter__()


def test_nesting_and_unknown_caches_raise() -> None:
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(PROMPTS)
    with torch.no_grad():
        cache = model(**inputs, use_cache=True).cache  # a prefill VHR did not see
    step = {"input_ids": torch.full((len(PROMPTS), 1), 5),
            "attention_mask": torch.cat([inputs["attention_mask"], torch.ones(len(PROMPTS), 1, dtype=torch.long)], -1)}
    with reinforce_vision_heads(model, ALPHA, [0, 1]):
        with pytest.raises(RuntimeError, match="already active"), reinforce_vision_heads(model, ALPHA, [0]):
            pass
        with pytest.raises(RuntimeError, match="whose prefill it did not see"), torch.no_grad():
            model(**step, cache=cache)
    image_only = {"input_ids": torch.full((1, 16), IMAGE_TOKEN), "attention_mask": torch.ones(1, 16, dtype=torch.long),
                  "pixel_values": _seeded_images([[0]], (3, 8, 8), 0)}
    with pytest.raises(ValueError, match="text besides the image"), reinforce_vision_heads(model, ALPHA, [0, 1]):
        model(**image_only)


# ----------------------------------------------------------------------------------------- analysis


ANSWERS = torch.tensor([[20, 21, 22, 23], [24, EOS, 25, 26], [27, 28, 29, 30]])
"""Answer tokens to score; the second sample ends after its second token."""


def per_sample_reference(model, prompt: list[int], answer: list[int], make_inputs) -> torch.Tensor:
    """``[S, L, H]`` VHD at every step of one sample alone: the prompt and the answer so far, with and without
    the image, stock model."""
    sample = make_inputs([prompt])
    steps = len(answer)
    full = {**sample, "input_ids": torch.cat([sample["input_ids"], torch.tensor([answer[:steps - 1]])], -1)}
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    text = without_image(full)
    seen = {}
    for key, run in (("with", lambda: model(**full, use_cache=False)), ("without", lambda: text_forward(model, text))):
        record, handles = {}, []
        for layer in attention_layers(model):
            def hook(module, args, layer=layer, record=record):
                record[layer] = args[0][0, -steps:].reshape(steps, head_count(model), -1).double()
            handles.append(attention_module(model, layer).o_proj.register_forward_pre_hook(hook))
        with torch.no_grad():
            run()
        for handle in handles:
            handle.remove()
        seen[key] = torch.stack([record[layer] for layer in attention_layers(model)], 1)
    return (seen["with"] - seen["without"]).norm(dim=-1).float()


def test_vision_head_divergence_equals_two_plain_forward_passes_per_step() -> None:
    model, make_inputs = tiny_llava(0)
    model.generation_config.eos_token_id = EOS
    inputs = make_inputs(PROMPTS)
    divergence = vision_head_divergence(model, inputs, tokens=ANSWERS, top_k=2, layers=[0, 1])
    assert divergence.vhd.shape == (4, 2, len(PROMPTS), head_count(model))
    for row, prompt in enumerate(PROMPTS):
        expected = per_sample_reference(model, prompt, ANSWERS[row].tolist(), make_inputs)
        valid = 2 if row == 1 else 4  # after the end of sequence: NaN
        torch.testing.assert_close(divergence.vhd[:valid, :, row], expected[:valid], **TOLERANCE)
        assert divergence.vhd[valid:, :, row].isnan().all()
        token = np.array([np.sort(expected[s].numpy(), -1)[:, -2:].sum() for s in range(valid)])
        np.testing.assert_allclose(divergence.token_vhd()[row, :valid].numpy(), token, rtol=1e-5)
        with Heads(model, {}).on() as plain:
            text_forward(model, without_image(make_inputs([prompt])))
        stock_rule = expected_heads(expected[0, 0].numpy(), plain.seen[0][0].numpy())
        assert divergence.reinforced[0, row].numpy().tolist() == stock_rule.tolist()  # layer 0: nothing before it
    assert torch.equal(divergence.tokens, ANSWERS)
    with pytest.raises(ValueError, match="image-token id"):
        vision_head_divergence(model, inputs, tokens=torch.full((3, 2), IMAGE_TOKEN))


def test_token_divergence_sums_each_layers_top_k() -> None:
    vhd = torch.tensor([[[1.0, 5.0, 3.0], [2.0, 0.0, 4.0]]])
    assert token_divergence(vhd, 1).tolist() == [9.0]
    assert token_divergence(vhd, 2).tolist() == [14.0]
    with pytest.raises(ValueError, match="top_k must be in 1..3"):
        token_divergence(vhd, 4)


def test_generated_answers_are_greedy_without_image_tokens() -> None:
    model, make_inputs = tiny_llava(0)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = PAD, None
    inputs = make_inputs(PROMPTS[:1])
    divergence = vision_head_divergence(model, inputs, max_new_tokens=3, layers=[0, 1])
    with torch.no_grad():
        greedy = model.generate(**inputs, max_new_tokens=3, do_sample=False, suppress_tokens=[IMAGE_TOKEN])
    assert torch.equal(divergence.tokens, greedy[:, inputs["input_ids"].shape[1]:])
    assert divergence.vhd.shape[0] == 3 and not divergence.vhd.isnan().any()


def test_head_views_rank_correlation_and_eahs_head() -> None:
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(PROMPTS)
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    divergence = vision_head_divergence(model, inputs, layers=[1])
    frame = head_views(profile, divergence)
    assert len(frame) == 2 * len(PROMPTS)
    for record in frame.itertuples():
        layer = profile.layers.index(record.layer)
        density = profile.density[layer, record.sample].numpy()
        vhd = divergence.vhd[0, layer, record.sample].numpy()
        expected_rho = stats.spearmanr(density, vhd).statistic if np.ptp(density) > 0 else np.nan
        np.testing.assert_allclose(record.spearman_rho, expected_rho, rtol=1e-12)
        densest = int(np.argmax(density)) if density.max() > 0 else -1
        assert record.densest_head == densest
        assert record.densest_reinforced == (densest >= 0 and bool(divergence.reinforced[layer, record.sample, densest]))
        assert record.vhr_layer == (record.layer == 1)
    with eah.enhance_attention_heads(model, layer=1, relative_threshold=1.0) as chosen:
        main_forward("llava")(model, inputs)
    assert frame[frame.layer == 1].densest_head.tolist() == chosen.chosen_heads[0].tolist()


def test_head_views_without_sinks_or_ranking() -> None:
    model, make_inputs = tiny_llava(0)
    inputs = make_inputs(PROMPTS[:1])
    profile = eah.sink_profile(model, relative_threshold=1.0, **inputs)
    profile.density = torch.zeros_like(profile.density)
    divergence = HeadDivergence(torch.rand(1, 2, 1, 4), torch.ones(2, 1, 4, dtype=torch.bool), torch.full((1, 1), -1),
                                [0, 1], [0, 1], 1)
    frame = head_views(profile, divergence)
    assert frame.spearman_rho.isna().all() and (frame.densest_head == -1).all() and not frame.densest_reinforced.any()
    with pytest.raises(ValueError, match="same batch"):
        head_views(profile, HeadDivergence(torch.rand(1, 2, 2, 4), torch.ones(2, 2, 4, dtype=torch.bool),
                                           torch.full((2, 1), -1), [0, 1], [0, 1], 1))
