"""Shared pieces of the value tests of the pre-softmax logit interventions (VAF, heads-guided attention).

Each expected value comes from generation **without** the KV cache (every step a full forward of the prompt
and the tokens so far, the tokens forced to the method's own), under an attention written here: either a
reference attention implementation on the raw ``QK^T`` (the released formulas, registered in transformers'
``AttentionInterface``), or a layer hook that edits each full forward's logits from that forward's own token ids.
The method itself runs with the cache, so its decoding steps, prompt memory per stream and key alignment are what
is compared.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from transformers import AttentionInterface, LogitsProcessor
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.utils import ModelOutput

from eahlib.attention import AttentionCall, LayerHook, PromptTracker, active_hooks, layer_hooks, track_prompts
from eahlib.bench.runner import Item, generate_records, read_records
from eahlib.methods import resolve_method
from eahlib.models import (
    attention_layers,
    attention_module,
    decoder,
    decoder_layers,
    image_token_ids,
    model_family,
    output_embeddings,
    text_config,
)
from eahlib.testing import IMAGE_TOKEN, PAD, VOCAB, tiny_llava, tiny_llava_pipeline
from tests.conftest import PROMPTS

SHARPEN = 20.0
"""LM-head scale: peaked next-token distributions like a real model's (no near-ties between tokens)."""
STEPS = 3
"""The prefill and two decoding steps."""
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def focused(model: nn.Module) -> nn.Module:
    """Multiply every attention layer's queries by 16: the random tiny models attend almost uniformly, so edits of the
    logits would barely move their tokens; with logits of a trained model's range they do."""
    with torch.no_grad():
        for layer in attention_layers(model):
            attention_module(model, layer).q_proj.weight.mul_(16.0)
    return model


def sharpened(builder: Callable[[int], tuple[nn.Module, Callable]]) -> tuple[nn.Module, Callable]:
    """A tiny model with a sharpened LM head that never chooses a visual token, image or video (its logit is 0, far
    below the best token's: a generated visual token would have no features in a forward of the whole sequence, and
    the methods count it as text while a forward reading ids would count it as image); every row runs every step;
    padding id set."""
    model, make_inputs = builder(0)
    with torch.no_grad():
        head = output_embeddings(model).weight
        head.mul_(SHARPEN)
        head[image_token_ids(model)] = 0.0
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None
    return model, make_inputs


GENERATE = {"do_sample": False, "output_logits": True, "return_dict_in_generate": True}
"""Greedy, raw logits returned."""


def cached_run(model: nn.Module, inputs: dict, steps: int = STEPS, **kwargs) -> tuple[Tensor, Tensor]:
    """``(tokens [B, T], raw logits [T, B, V])`` of ``generate`` with the KV cache."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=steps, **{**GENERATE, **kwargs})
    return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits).float()


class Forced(LogitsProcessor):
    """Forces the given tokens, one per step."""

    def __init__(self, tokens: Tensor, prompt_length: int) -> None:
        self.tokens, self.prompt_length = tokens, prompt_length

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        step = input_ids.shape[1] - self.prompt_length
        chosen = self.tokens[:, step:step + 1].to(scores.device)
        return torch.full_like(scores, -float("inf")).scatter(-1, chosen, 0.0)


def forced_logits(model: nn.Module, inputs: dict, tokens: Tensor, use_cache: bool) -> Tensor:
    """``[T, B, V]`` raw logits of the prompt followed by ``tokens`` (forced), with or without the KV cache."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=tokens.shape[1], use_cache=use_cache,
                             logits_processor=[Forced(tokens, inputs["input_ids"].shape[1])], **GENERATE)
    assert torch.equal(out.sequences[:, inputs["input_ids"].shape[1]:], tokens)
    return torch.stack(out.logits).float()


def uncached_logits(model: nn.Module, inputs: dict, tokens: Tensor) -> Tensor:
    """``[T, B, V]`` raw logits of the prompt followed by ``tokens``, each step a full forward without cache."""
    return forced_logits(model, inputs, tokens, use_cache=False)


def extended(model: nn.Module, inputs: dict, tokens: Tensor) -> dict:
    """The prompt followed by ``tokens``, the other per-token inputs (padding mask, token types) extended as the
    model's own ``generate`` extends them."""
    kwargs = {key: value for key, value in inputs.items() if key != "input_ids"}
    for _ in range(tokens.shape[1]):  # one token at a time, as generate does (some inputs repeat their last value)
        kwargs = model._update_model_kwargs_for_generation(ModelOutput(), kwargs)
    prompt = inputs["input_ids"].shape
    for key, value in kwargs.items():  # token types generate extends elsewhere (ERNIE's expert types): text tokens
        if isinstance(value, Tensor) and value.shape == prompt and tokens.shape[1]:
            kwargs[key] = torch.cat([value, torch.zeros_like(tokens, dtype=value.dtype)], dim=1)
    return {"input_ids": torch.cat([inputs["input_ids"], tokens], dim=1), **kwargs}


def full_forward_logits(model: nn.Module, inputs: dict, tokens: Tensor) -> Tensor:
    """``[T, B, V]``: for each step, the last position's logits of one forward of the prompt and the tokens before
    it, without cache. The prompts must be unpadded (positions are then counted alike by every family)."""
    assert bool(inputs["attention_mask"].all()), "full forwards are compared on unpadded prompts"
    with torch.no_grad():
        return torch.stack([model(**extended(model, inputs, tokens[:, :step]), use_cache=False).logits[:, -1].float()
                            for step in range(tokens.shape[1])])


@contextlib.contextmanager
def reference_attention(model: nn.Module, function: Callable) -> Iterator[None]:
    """Run the language model's attention through ``function`` (eager masks: additive float, ``[B, 1, q, k]``)."""
    name = f"reference_{function.__name__}"
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, eager_mask)
    path = model_family(model).text_config
    model.set_attn_implementation({path: name} if path else name)
    try:
        yield
    finally:
        model.set_attn_implementation({path: "sdpa"} if path else "sdpa")


class FullSequence:
    """The token ids and padding mask of the model's current forward (a forward pre-hook of the full model)."""

    def __init__(self, model: nn.Module) -> None:
        self.input_ids: Tensor | None = None
        self.attention_mask: Tensor | None = None
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.input_ids, self.attention_mask = kwargs["input_ids"], kwargs["attention_mask"]

    def image_span(self, b: int) -> tuple[int, int]:
        """``[start, end)`` of sample ``b``'s image block (one contiguous block, as the released code assumes)."""
        image = (self.input_ids[b] == IMAGE_TOKEN).nonzero()[:, 0]
        start, end = int(image.min()), int(image.max()) + 1
        assert end - start == len(image)
        return start, end

    def first_real(self, b: int) -> int:
        return int(self.attention_mask[b].nonzero()[0, 0])


def repeat_heads(states: Tensor, module: nn.Module) -> Tensor:
    """``[B, H_kv, k, d] -> [B, H, k, d]``: each key/value head serves its group of query heads."""
    return states.repeat_interleave(getattr(module, "num_key_value_groups", 1), dim=1)


def eager_output(module: nn.Module, logits: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax in float32 (as the released forwards), then the values: ``([B, q, H, d], probs)``."""
    probs = nn.functional.softmax(logits, dim=-1, dtype=torch.float32).to(value.dtype)
    return torch.matmul(probs, repeat_heads(value, module)).transpose(1, 2).contiguous(), probs


Edit = Callable[[AttentionCall, Tensor, Tensor], Tensor]
"""``edit(call, ids, real)``: the call's edited logits, from the ids and the padding mask (``[B, T]``) of the whole
sequence so far; the call's keys are its last ``k`` tokens, its queries the last ``q``."""


class FromTokenIds(LayerHook):
    """Edits the logits of each full forward (no cache) with ``edit``, from that forward's own ids."""

    modifies = True

    def __init__(self, tracker: PromptTracker, edit: Edit) -> None:
        self.tracker, self.edit = tracker, edit

    def adjust_scores(self, call: AttentionCall) -> Tensor:
        assert call.is_prefill and self.tracker.input_ids is not None
        return self.edit(call, self.tracker.input_ids.to(call.scores.device), call.real_keys)


@contextlib.contextmanager
def edited_by_token_ids(model: nn.Module, layers: Sequence[int], edit: Edit) -> Iterator[None]:
    """Install :class:`FromTokenIds` on ``layers`` for the block."""
    with track_prompts(model) as tracker, layer_hooks(model, {layer: FromTokenIds(tracker, edit) for layer in layers}):
        yield


class FromSequenceSoFar(LayerHook):
    """Edits the logits of every call, with the KV cache too, with ``edit``, from the ids and padding mask of the
    whole sequence so far, which a forward pre-hook of the full model collects here: a forward on an empty cache
    brings the prompt, each later one its new tokens (none of eahlib's prompt bookkeeping is used)."""

    modifies = True

    def __init__(self, model: nn.Module, edit: Edit) -> None:
        self.edit, self.ids, self.real = edit, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.bool)
        self.handle = model.register_forward_pre_hook(self.saw_forward, with_kwargs=True)

    def saw_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        ids = kwargs["input_ids"]
        self.ids = ids if cache is None or cache.get_seq_length() == 0 else torch.cat([self.ids, ids], dim=1)
        self.real = kwargs["attention_mask"].bool()
        assert self.real.shape == self.ids.shape

    def adjust_scores(self, call: AttentionCall) -> Tensor:
        return self.edit(call, self.ids.to(call.scores.device), self.real.to(call.scores.device))


def cached_reference_logits(model: nn.Module, inputs: dict, tokens: Tensor, layers: Sequence[int], edit: Edit
                            ) -> Tensor:
    """``[T, B, V]``: the cached generation of the batch, its tokens forced to ``tokens``, with ``edit`` applied by
    :class:`FromSequenceSoFar` to ``layers``."""
    hook = FromSequenceSoFar(model, edit)
    try:
        with layer_hooks(model, {layer: hook for layer in layers}):
            return forced_logits(model, inputs, tokens, use_cache=True)
    finally:
        hook.handle.remove()


FAMILY_PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
"""Three lengths; with the image, every prompt is longer than the tiny sliding window (8)."""

NOT_THEIR_FULL_FORWARDS = {
    "hunyuan_vl": ("batch", "its M-RoPE image axis counts the images of the whole batch (get_rope_index's image_index "
                            "is not reset per sample), so a sample's positions depend on its batch mates"),
    "minimax_m3_vl": ("batch", "its indexer anchors key blocks to cache slots but reads the queries' positions "
                               "from the padding, so left padding changes a sample's block selection (in generate, "
                               "a padded sample's first tokens are left no key at all)"),
    "mistral_large4": ("cache", "its DSA indexer's top-k breaks ties among equal (ReLU-zeroed) scores differently "
                                "in a one-row decoding step than in the full forward's matrix"),
    "inkling2": ("cache", "float32 round-off: short-convolution states, L2 clips and log scaling, MoE and pre-cap "
                          "logits up to 60 make its cached run and its full forwards differ by more than the "
                          "tolerance"),
}
"""Families whose stock model, cached, is not the full-forward reference of each sample alone, by what differs
(``"batch"``: a sample in the padded batch from the sample alone; ``"cache"``: a sample alone from its full
forwards) and why. They are compared with :func:`assert_the_batch_equals_its_cached_reference` instead."""


def assert_stock_differs_from_full_forwards(model: nn.Module, make_inputs: Callable, prompts: list[list[int]],
                                            kind: str) -> None:
    """The reason of :data:`NOT_THEIR_FULL_FORWARDS` holds: in the stock model, some sample's cached logits in the
    padded batch differ from its cached logits alone (``"batch"``), or its cached logits alone from its full
    forwards (``"cache"``)."""
    tokens, logits = cached_run(model, make_inputs(prompts))
    differs = False
    for i, prompt in enumerate(prompts):
        alone = make_inputs([prompt])
        cached_alone = forced_logits(model, alone, tokens[i:i + 1], use_cache=True)
        other = logits[:, i:i + 1] if kind == "batch" else full_forward_logits(model, alone, tokens[i:i + 1])
        differs |= not torch.allclose(cached_alone, other, **TOLERANCE)
    assert differs, f"the stock model's {kind} reason no longer holds: compare it with its full forwards again"


def assert_each_sample_equals_its_full_forwards(
    model: nn.Module, make_inputs: Callable, prompts: list[list[int]], intervention: Callable[[], Any],
    layers: Sequence[int], edit_for: Callable[[int], Edit], steps: int = STEPS,
) -> None:
    """The cached run of the padded batch under ``intervention()`` equals, for each sample alone, full forwards of
    its prompt and tokens with ``edit_for(prompt_length)`` applied to ``layers`` from each forward's own ids; and
    the edit changes the decoding steps of some sample."""
    with intervention():
        tokens, logits = cached_run(model, make_inputs(prompts), steps)
    changed = False
    for i, prompt in enumerate(prompts):
        alone = make_inputs([prompt])
        with edited_by_token_ids(model, layers, edit_for(alone["input_ids"].shape[1])):
            expected = full_forward_logits(model, alone, tokens[i:i + 1])
        torch.testing.assert_close(logits[:, i], expected[:, 0], **TOLERANCE)
        stock = full_forward_logits(model, alone, tokens[i:i + 1])
        changed |= not torch.allclose(expected[1:], stock[1:], **TOLERANCE)
    assert changed


def assert_the_batch_equals_its_cached_reference(
    model: nn.Module, make_inputs: Callable, prompts: list[list[int]], intervention: Callable[[], Any],
    layers: Sequence[int], edit_for: Callable[[int], Edit], steps: int = STEPS,
) -> None:
    """The cached run of the padded batch under ``intervention()`` equals the cached run of the same batch, its tokens
    forced, with ``edit_for(prompt_length)`` applied to ``layers`` from the sequence so far as the test tracks it;
    and the edit changes the decoding steps."""
    inputs = make_inputs(prompts)
    with intervention():
        tokens, logits = cached_run(model, inputs, steps)
    expected = cached_reference_logits(model, inputs, tokens, layers, edit_for(inputs["input_ids"].shape[1]))
    torch.testing.assert_close(logits, expected, **TOLERANCE)
    stock = forced_logits(model, inputs, tokens, use_cache=True)
    assert not torch.allclose(expected[1:], stock[1:], **TOLERANCE)


def assert_every_family_equals_its_reference(
    name: str, model: nn.Module, make_inputs: Callable, intervention: Callable[[], Any], layers: Sequence[int],
    edit_for: Callable[[int], Edit],
) -> None:
    """On :data:`FAMILY_PROMPTS`: each sample's full forwards, or for a family of :data:`NOT_THEIR_FULL_FORWARDS`
    (whose reason is checked first) the cached reference of the batch."""
    if name not in NOT_THEIR_FULL_FORWARDS:
        assert_each_sample_equals_its_full_forwards(model, make_inputs, FAMILY_PROMPTS, intervention, layers, edit_for)
        return
    assert_stock_differs_from_full_forwards(model, make_inputs, FAMILY_PROMPTS, NOT_THEIR_FULL_FORWARDS[name][0])
    assert_the_batch_equals_its_cached_reference(model, make_inputs, FAMILY_PROMPTS, intervention, layers, edit_for)


DECODERS = {"greedy": {}, "beam": {"num_beams": 3}, "sample": {}, "vcd": {}, "pai": {"start_layer": 0},
            "dola": {"layers": [0]}, "opera": {"threshold": 1, "warmup": 0, "scale_factor": 5000.0}}
"""Every decoder, with settings the tiny LLaVA serves (PAI from layer 0, DoLa's candidate layer 0, OPERA rolling
back within a few tokens)."""


def assert_composes_with_every_decoder(component: str, params: dict, hook_type: type, moved: Sequence[str]) -> None:
    """On the focused tiny LLaVA, every decoder runs with the intervention's hook installed at each of its forwards
    (a second stream's too) and nothing remains after; the decoders in ``moved`` give other tokens than alone. OPERA
    with rollbacks under the intervention gives each sample what it gives the sample alone."""
    model, make_inputs = tiny_llava(0)
    focused(model)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs(PROMPTS)
    installed: list[bool] = []
    last = attention_layers(model)[-1]
    handle = decoder_layers(model)[last].register_forward_pre_hook(
        lambda module, args: installed.append(any(isinstance(h, hook_type) for h in active_hooks(model).get(last, []))))
    try:
        for decoder, settings in DECODERS.items():
            installed.clear()
            joint = resolve_method(f"{component}+{decoder}", {component: params, decoder: settings}).generate(
                model, inputs, 6)
            assert len(installed) >= 6 and all(installed), decoder
            assert active_hooks(model) == {} and text_config(model)._attn_implementation == "sdpa"
            if decoder in moved:
                alone = resolve_method(decoder, {decoder: settings}).generate(model, inputs, 6)
                assert not torch.equal(joint.tokens, alone.tokens), decoder
    finally:
        handle.remove()
    method = resolve_method(f"{component}+opera", {component: params, "opera": DECODERS["opera"]})
    joint = method.generate(model, inputs, 6).tokens
    for i, prompt in enumerate(PROMPTS):  # rollbacks recompute rows on top of the cache: still per sample
        single = method.generate(model, make_inputs([prompt]), 6).tokens[0]
        assert torch.equal(joint[i, :len(single)], single)


def assert_opera_without_penalty_and_rollback_is_beam_search(component: str, params: dict, prompt: list[int]) -> None:
    """OPERA's candidate forwards extend the cache and crop it back; without penalty and rollback, with every token a
    candidate, it is the intervention's beam search (which, on ``prompt``, differs from plain beam search)."""
    model, make_inputs = tiny_llava(0)
    focused(model)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs([prompt])
    beam = resolve_method(f"{component}+beam", {component: params, "beam": {"num_beams": 5}}).generate(
        model, inputs, 4).tokens
    opera = resolve_method(f"{component}+opera", {component: params, "opera": {
        "penalty_weights": 0.0, "threshold": None, "num_attn_candidates": VOCAB}})
    assert torch.equal(opera.generate(model, inputs, 4).tokens, beam)
    assert not torch.equal(resolve_method("beam", {"beam": {"num_beams": 5}}).generate(model, inputs, 4).tokens, beam)


def assert_a_padded_sample_equals_it_alone(intervention: Callable[[nn.Module], Any]) -> None:
    """Under ``intervention``, each sample of a left-padded batch gets the tokens and logits it gets alone."""
    model, make_inputs = sharpened(tiny_llava)
    inputs = make_inputs(PROMPTS)
    with intervention(model):
        tokens, logits = cached_run(model, inputs)
        for i, prompt in enumerate(PROMPTS):
            alone_tokens, alone_logits = cached_run(model, make_inputs([prompt]))
            assert torch.equal(alone_tokens[0], tokens[i])
            torch.testing.assert_close(alone_logits[:, 0], logits[:, i], **TOLERANCE)


def assert_beam_and_sampling_equal_the_reference_without_cache(
    intervention: Callable[[nn.Module], Any], reference: Callable[[FullSequence, dict], Callable],
) -> None:
    """Beam search (each beam its own row of the cache, reordered every step) and seeded sampling under
    ``intervention``: the same sequences and, at every step, the same logits of every row as the attention function
    ``reference(sequence, inputs)`` gives without cache, and logits other than the stock model's."""
    model, make_inputs = sharpened(tiny_llava)
    focused(model)
    inputs = make_inputs(PROMPTS)
    sequence = FullSequence(model)
    released = reference(sequence, inputs)
    runs = {"beam": {"num_beams": 3, "do_sample": False}, "sample": {"do_sample": True, "top_k": 0}}
    settings = {"max_new_tokens": 4, "output_logits": True, "return_dict_in_generate": True}
    try:
        for decoder_name, decoding in runs.items():
            outputs = {}
            for name, context in (("edited", intervention(model)), ("released", reference_attention(model, released)),
                                  ("stock", contextlib.nullcontext())):
                torch.manual_seed(0)
                with context, torch.no_grad():
                    outputs[name] = model.generate(**inputs, use_cache=name != "released", **settings, **decoding)
            assert torch.equal(outputs["edited"].sequences, outputs["released"].sequences), decoder_name
            edited, expected, stock = (torch.stack(outputs[name].logits) for name in ("edited", "released", "stock"))
            torch.testing.assert_close(edited, expected, **TOLERANCE)
            assert not torch.allclose(stock, edited, **TOLERANCE), decoder_name
    finally:
        sequence.handle.remove()


def assert_restored_when_the_body_raises(intervention: Callable[[nn.Module], Any]) -> None:
    """Inside: hooks on both layers; after a raise: no hook, the attention implementation and the forward pre-hooks
    of the model and its attention modules as before."""
    model, _ = tiny_llava(0)
    modules = [attention_module(model, layer) for layer in attention_layers(model)]
    pre_hooks = [len(module._forward_pre_hooks) for module in modules]
    with pytest.raises(KeyError, match="inside"), intervention(model):
        assert set(active_hooks(model)) == set(attention_layers(model))
        raise KeyError("inside")
    assert active_hooks(model) == {} and text_config(model)._attn_implementation == "sdpa"
    assert [len(module._forward_pre_hooks) for module in modules] == pre_hooks and not model._forward_pre_hooks
    assert not decoder(model)._forward_pre_hooks


def assert_new_tokens_in_one_call_equal_one_at_a_time(intervention: Callable[[nn.Module], Any]) -> None:
    """Several new tokens in one forward on top of the cache (OPERA's rollback) get what one-token steps give them:
    every new token's row is edited, with the prompt's keys."""
    model, make_inputs = sharpened(tiny_llava)
    inputs = make_inputs(PROMPTS[:1])  # unpadded: both paths count positions alike
    new = torch.tensor([[20, 21, 22]])
    mask = inputs["attention_mask"]
    with intervention(model), torch.no_grad():
        cache = model(**inputs).cache
        together = model(input_ids=new, attention_mask=torch.cat([mask, torch.ones_like(new)], -1), cache=cache).logits
        cache = model(**inputs).cache
        apart = torch.cat([model(input_ids=new[:, :t + 1][:, -1:], cache=cache,
                                 attention_mask=torch.cat([mask, torch.ones_like(new[:, :t + 1])], -1)).logits
                           for t in range(new.shape[1])], dim=1)
    torch.testing.assert_close(together, apart, **TOLERANCE)
    with torch.no_grad():
        cache = model(**inputs).cache
        stock = model(input_ids=new, attention_mask=torch.cat([mask, torch.ones_like(new)], -1), cache=cache).logits
    assert not torch.allclose(stock[:, :-1], together[:, :-1], **TOLERANCE)


def assert_runs_in_the_runner(spec: str, folder: Path) -> None:
    """``spec`` generates records for two images in the benchmark runner, and its config records every parameter of
    both components, the intervention's published defaults included."""
    model, processor = tiny_llava_pipeline(0)
    items = []
    for image_id in (1, 2):
        pixels = np.random.default_rng(image_id).integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
        path = folder / f"COCO_val2014_{image_id:012d}.jpg"
        Image.fromarray(pixels).save(path)
        items.append(Item(str(image_id), path, "Please describe this image in detail."))
    method = resolve_method(spec)
    output = generate_records(model, processor, method, items, folder / "out.jsonl", {"task": "t"}, 4, batch_size=2)
    records = read_records(output)
    assert [r["item_id"] for r in records] == ["1", "2"] and all(r["method"] == method.name for r in records)
    config = json.loads((folder / "out.config.json").read_text())
    for component in spec.split("+"):
        assert config[component] == json.loads(json.dumps(resolve_method(component).params[component]))
