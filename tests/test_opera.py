"""OPERA as a decoder: beam search when switched off, the paper's formulas on a hand-made attention
pattern (computed here directly, independently of the module), batches, composition with EAH, and
the model left as it was after an exception."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import DynamicCache, LogitsProcessor, MistralConfig

from eahlib.attention import (
    AttentionCall,
    LayerHook,
    PromptTracker,
    active_hooks,
    capture_attention,
    layer_hooks,
    track_prompts,
)
from eahlib.bench.runner import Item, generate_records, read_records
from eahlib.eah import EnhancedHeads
from eahlib.methods import resolve_method
from eahlib.methods.opera import (
    LastLayerRows,
    OperaSettings,
    _rollable_cache,
    candidate_log_scores,
    lineage_window,
    most_frequent,
    opera_generate,
    over_trust_penalty,
    penalised_log_probs,
    rejecting_log_probs,
    retrospection_triggered,
    rollback_location,
    rollback_position,
    watch_last_layer,
)
from eahlib.models import decoder_layers, language_model, text_config
from eahlib.testing import IMAGE_TOKEN, VOCAB, tiny_llava, tiny_llava_pipeline

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
OFF = {"penalty_weights": 0.0, "threshold": None}
"""No penalty, no retrospection."""
EAGER = {"threshold": 1, "warmup": 0, "scale_factor": 5000.0}
"""Settings under which the tiny random models roll back within a few tokens."""


@pytest.fixture
def tiny():
    model, make_inputs = tiny_llava(0)
    model.generation_config.pad_token_id = 0
    return model, make_inputs


def alone(make_inputs, prompt):
    return make_inputs([prompt])


def test_published_defaults_are_recorded() -> None:
    assert resolve_method("opera").settings() == {"method": "opera", "opera": {
        "num_beams": 5, "scale_factor": 50.0, "threshold": 15, "num_attn_candidates": 5, "penalty_weights": 1.0,
        "window_size": 512, "max_rollbacks": 5, "warmup": 10}}
    both = resolve_method("eah+opera", {"eah": {"layer": 1}, "opera": {"threshold": 20}}).settings()
    assert both["method"] == "eah+opera" and both["eah"]["layer"] == 1 and both["opera"]["threshold"] == 20


# ---------------------------------------------------------------------------------------------
# Switched off, OPERA is beam search.


def test_without_penalty_and_retrospection_it_is_beam_search(tiny) -> None:
    """Every token a candidate: plain beam search; 5 candidates: beam search over the top 5."""
    model, make_inputs = tiny
    for prompt in PROMPTS[1:]:
        inputs = alone(make_inputs, prompt)
        beam = resolve_method("beam").generate(model, inputs, 6).tokens
        opera = resolve_method("opera", {"opera": {**OFF, "num_attn_candidates": VOCAB}}).generate(model, inputs, 6)
        assert torch.equal(opera.tokens, beam)

    class KeepTop(LogitsProcessor):
        """The candidate restriction written directly: the top 5 log-probs kept, -999 elsewhere, renormalised."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            top = scores.topk(5, dim=-1).indices
            kept = torch.full_like(scores, -999.0).scatter(-1, top, scores.gather(-1, top))
            return kept.log_softmax(-1)

    joint = resolve_method("opera", {"opera": OFF}).generate(model, make_inputs(PROMPTS), 8).tokens
    for i, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            inputs = alone(make_inputs, prompt)
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False, num_beams=5, logits_processor=[KeepTop()])
        expected = out[0, inputs["input_ids"].shape[1]:]
        assert torch.equal(joint[i, :len(expected)], expected)
        assert (joint[i, len(expected):] == 0).all()


# ---------------------------------------------------------------------------------------------
# The formulas on a hand-made attention pattern.

J, IMAGE_SHARE, SUMMARY = 6, 0.2, 0.5
HANDMADE = OperaSettings(num_beams=3, num_attn_candidates=3, threshold=3, warmup=4, max_rollbacks=2)


class Pattern:
    """Attention of the last layer by position: even heads put 0.2 on the image, 0.5 on the response
    token J (once it exists) and spread the rest; odd heads are uniform over the visible keys. With
    ``by_token``, the weight on J depends on the query's own token instead (0.3 + 0.1 * (token % 4))."""

    def __init__(self, ids: list[int], by_token: bool = False) -> None:
        self.image = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN]
        self.prompt_length = len(ids)
        self.by_token = by_token

    def heads(self, query: int, keys: int, n_heads: int, token: int = 0) -> list[list[float]]:
        summary = self.prompt_length + J if query >= self.prompt_length + J else None
        weight = 0.3 + 0.1 * (token % 4) if self.by_token else SUMMARY
        image = [j for j in self.image if j <= query]
        others = [j for j in range(query + 1) if j not in image and j != summary]
        focused = [0.0] * keys
        rest = 1.0 - IMAGE_SHARE * bool(image) - weight * (summary is not None)
        for j in image:
            focused[j] = IMAGE_SHARE / len(image)
        if summary is not None:
            focused[summary] = weight
        for j in others:
            focused[j] = rest / len(others)
        uniform = [1.0 / (query + 1) if j <= query else 0.0 for j in range(keys)]
        return [focused if h % 2 == 0 else uniform for h in range(n_heads)]

    def row(self, query: int, token: int = 0) -> list[float]:
        """What OPERA reads: the maximum over heads, renormalised to sum 1."""
        top = [max(column) for column in zip(*self.heads(query, query + 1, 4, token))]
        return [value / sum(top) for value in top]


class Handmade(LayerHook):
    """Replaces the last layer's attention by the pattern (reading each query's token from ``tracker``)."""

    modifies = True

    def __init__(self, pattern: Pattern, tracker: PromptTracker | None = None) -> None:
        self.pattern, self.tracker = pattern, tracker

    def __call__(self, call: AttentionCall) -> torch.Tensor:
        batch, heads, queries, keys = call.probs.shape
        tokens = self.tracker.input_ids[:, -queries:] if self.tracker is not None else torch.zeros(batch, queries)
        rows = [[self.pattern.heads(keys - queries + r, keys, heads, int(tokens[b, r])) for r in range(queries)]
                for b in range(batch)]
        return torch.tensor(rows, dtype=call.probs.dtype).permute(0, 2, 1, 3).contiguous()


def expected_step(pattern: Pattern, s: int, settings: OperaSettings) -> tuple[float, int]:
    """The paper's penalty and location of any candidate at response length s, computed directly."""
    n = pattern.prompt_length
    rows = {i: pattern.row(n + i) for i in range(s + 1)}
    scores = [1e-7 * math.prod(settings.scale_factor * rows[i][n + j] for i in range(j, s + 1)) for j in range(s + 1)]
    start = max(0, s + 1 - settings.window_size)  # the local window: the last window_size tokens
    location = max(range(start, s + 1), key=lambda j: (scores[j], -j))
    if s + 1 <= settings.warmup:
        return -sum(rows[s][j] for j in pattern.image), location
    return scores[location], location


def expected_rollbacks(pattern: Pattern, tokens: int, settings: OperaSettings) -> tuple[list[int], list[tuple[int, int]]]:
    """The retrospection rule simulated directly: penalised steps and (step, position) of each rollback."""
    s, history, done, steps, events = 0, [], {}, [], []
    while s < tokens:
        location = expected_step(pattern, s, settings)[1]
        steps.append(s)
        history.append(location)
        if history.count(location) > settings.threshold and location >= settings.warmup:
            position = location + 1
            if done.get(position, 0) >= settings.max_rollbacks:
                position -= 1
            if done.get(position, 0) < settings.max_rollbacks:
                done[position] = done.get(position, 0) + 1
                if s + 1 - position > settings.window_size + 1:  # at most window_size tokens back
                    position = s - settings.window_size
                events.append((s, position))
                history, s = history[:position + 1], position + 1
                continue
        s += 1
    return steps, events


@pytest.mark.parametrize("window", [512, 5])
def test_penalty_and_rollback_equal_the_formulas_on_a_handmade_pattern(tiny, window: int) -> None:
    model, make_inputs = tiny
    model.generation_config.eos_token_id = None  # every beam runs to the end
    inputs = make_inputs([[5, 6, 7]])
    pattern = Pattern(inputs["input_ids"][0].tolist())
    settings = replace(HANDMADE, window_size=window)
    traces = []
    with layer_hooks(model, {len(decoder_layers(model)) - 1: Handmade(pattern)}):
        opera_generate(model, inputs, 20, settings, traces)
    trace = traces[0]
    steps, events = expected_rollbacks(pattern, 20, settings)
    assert trace.steps == steps
    assert [(s, position) for s, position, _ in trace.rollbacks] == events
    # the limits shift the target once; a short window drops the older columns, so J wins a step earlier
    assert [p for _, p in events] == [J + 1, J + 1, J, J] and events[0][0] == (11 if window == 512 else 10)
    assert any(s + 1 <= settings.warmup for s in steps) and max(steps) > 12
    for s, penalty, location in zip(trace.steps, trace.penalties, trace.locations):
        value, where = expected_step(pattern, s, settings)
        torch.testing.assert_close(penalty, torch.full_like(penalty, value), rtol=1e-4, atol=1e-6)
        assert (location == where).all(), s
    for first, second in zip(trace.rollbacks[::2], trace.rollbacks[1::2]):  # same position twice
        assert second[1] == first[1] and second[2][:3] == first[2]
        assert not set(second[2][3:]) & set(first[2])  # the second rollback never re-chose a rejected pair


def test_each_beam_keeps_its_own_window_through_rollbacks(tiny) -> None:
    """Attention that depends on each query's token: every beam's window differs, so each candidate's
    penalty must come from its own beam's response tokens (as recorded), also after rollbacks."""
    model, make_inputs = tiny
    model.generation_config.eos_token_id = None
    inputs = make_inputs([[5, 6, 7]])
    pattern = Pattern(inputs["input_ids"][0].tolist(), by_token=True)
    traces = []
    with track_prompts(model) as tracker, layer_hooks(model, {1: Handmade(pattern, tracker)}):
        opera_generate(model, inputs, 20, HANDMADE, traces)
    trace, n = traces[0], pattern.prompt_length
    assert max(position for _, position, _ in trace.rollbacks) >= 2
    rows = functools.cache(lambda i, token: pattern.row(n + i, token))
    differ = 0
    for s, beams, candidates, penalty in zip(trace.steps, trace.sequences, trace.candidates, trace.penalties):
        if s + 1 <= HANDMADE.warmup:
            continue
        for k in range(candidates.shape[0]):
            for c in range(candidates.shape[1]):
                tokens = [*beams[k].tolist(), int(candidates[k, c])]
                scores = [1e-7 * math.prod(50.0 * rows(i, tokens[i])[n + j] for i in range(j, s + 1))
                          for j in range(s + 1)]
                assert float(penalty[k, c]) == pytest.approx(max(scores), rel=1e-4), (s, k, c)
        differ += len(set(penalty[:, 0].tolist())) > 1
    assert differ > 3  # the beams' windows do differ


@pytest.mark.parametrize("warmup", [0, 3])
def test_penalty_equals_the_formula_on_the_models_own_attention(tiny, warmup: int) -> None:
    """Every beam's window rebuilt from scratch: a plain forward of prompt + beam + candidate, the last
    layer's attention captured, max over heads, renormalised; then the penalty computed directly
    (warmup 0: with rollbacks; 3: the image term first)."""
    model, make_inputs = tiny
    inputs = make_inputs([[5, 6, 7]])
    settings = OperaSettings(threshold=2, warmup=warmup, scale_factor=5000.0)
    traces = []
    opera_generate(model, inputs, 8, settings, traces)
    trace, n = traces[0], inputs["input_ids"].shape[1]
    assert bool(trace.rollbacks) == (warmup == 0)
    image = inputs["input_ids"][0] == IMAGE_TOKEN
    lm, prompt = language_model(model), {}
    handle = lm.register_forward_pre_hook(lambda m, a, kw: prompt.update(embeds=kw["inputs_embeds"]), with_kwargs=True)
    with torch.no_grad():
        model(**inputs)  # the prompt's embeddings, image features merged
    handle.remove()
    for s, beams, candidates, penalty in zip(trace.steps, trace.sequences, trace.candidates, trace.penalties):
        k, c = candidates.shape
        response = torch.cat([beams.repeat_interleave(c, 0), candidates.reshape(-1, 1)], dim=-1)
        embeds = torch.cat([prompt["embeds"].expand(k * c, -1, -1), model.get_input_embeddings()(response)], dim=1)
        with capture_attention(model, 1) as captured, torch.no_grad():
            lm(inputs_embeds=embeds)
        top = captured.attentions[1][0].double().amax(1)  # [K*C, L, L]
        rows = top / top.sum(-1, keepdim=True)
        for b in range(k * c):
            window = rows[b, n:, n:]
            if s + 1 <= settings.warmup:
                expected = -float(rows[b, -1, :n][image].sum())
            else:
                expected = max(1e-7 * math.prod(5000.0 * float(window[i, j]) for i in range(j, s + 1))
                               for j in range(s + 1))
            assert float(penalty.flatten()[b]) == pytest.approx(expected, rel=1e-3, abs=1e-6), (s, b)


def test_formulas_on_hand_made_tensors() -> None:
    torch.manual_seed(0)
    previous = torch.rand(2, 4, 4).tril()
    candidates = torch.rand(2, 3, 5)
    got = candidate_log_scores(previous, candidates, 50.0)
    for k in range(2):
        for c in range(3):
            window = torch.zeros(5, 5, dtype=torch.float64)
            window[:4, :4], window[4] = previous[k].double(), candidates[k, c].double()
            for j in range(5):
                direct = 1e-7 * math.prod(50.0 * float(window[i, j]) for i in range(j, 5))
                assert math.exp(float(got[k, c, j])) == pytest.approx(direct, rel=1e-9)
    image = torch.tensor([[0.1, 0.4, 0.2], [0.3, 0.0, 0.5]])
    penalty, location = over_trust_penalty(got, image, warmup=5)
    assert torch.equal(penalty, -image) and torch.equal(location, got.argmax(-1))
    penalty, _ = over_trust_penalty(got, image, warmup=4)
    torch.testing.assert_close(penalty.double(), got.max(-1).values.exp())

    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 4.0, 1.0]])
    candidates, penalty = torch.tensor([[0, 2], [1, 2]]), torch.tensor([[0.5, 0.0], [2000.0, 1.0]])
    expected = torch.full((2, 4), -999.0)
    expected[0, 0], expected[0, 2], expected[1, 1], expected[1, 2] = 3.0 - 0.5, 2.0, 5.0 - 2000.0, 4.0 - 1.0
    torch.testing.assert_close(penalised_log_probs(logits, candidates, penalty, 1.0), expected.log_softmax(-1))
    assert torch.isfinite(penalised_log_probs(logits, candidates, torch.full((2, 2), math.inf), 0.0)).all()
    rejected = logits.clone()
    rejected[0, 0], rejected[1, 2] = 0.0, 0.0  # lowered to their row's minimum
    torch.testing.assert_close(rejecting_log_probs(logits, [(0, 0), (1, 2)]), rejected.log_softmax(-1))

    rows = [torch.rand(3, j + 1) for j in range(5)]
    parents = [torch.randint(3, (3,)) for _ in range(5)]
    window = lineage_window(rows, parents)
    for k in range(3):
        ancestor = k  # follow the beam back: its ancestor at step j + 1 recorded the row of position j
        for j in reversed(range(5)):
            assert torch.equal(window[k, j, :j + 1], rows[j][ancestor]) and not window[k, j, j + 1:].any()
            ancestor = int(parents[j][ancestor])

    assert torch.equal(most_frequent(torch.tensor([[4, 2, 4, 2, 1], [7, 7, 3, 3, 3]])), torch.tensor([2, 3]))
    assert rollback_location(torch.tensor([[5, 5, 9], [9, 9, 5], [2, 9, 9]])) == 9
    history = torch.tensor([[3, 3, 3, 1], [3, 3, 2, 3]])
    assert retrospection_triggered(history, 3, 2) and not retrospection_triggered(history, 3, 3)
    assert not retrospection_triggered(torch.tensor([[3, 3, 3], [3, 1, 1]]), 3, 1)  # every beam slot
    settings, done = OperaSettings(max_rollbacks=2, warmup=10, window_size=8), {}
    assert rollback_position(9, 40, done, settings) is None  # inside the warmup
    assert [rollback_position(30, 39, done, settings) for _ in range(5)] == [31, 31, 30, 30, None]
    assert rollback_position(12, 40, done, settings) == 31  # at most window_size back
    assert done == {31: 2, 30: 2, 13: 1}


# ---------------------------------------------------------------------------------------------
# Batches, families, composition, errors.


def test_a_sample_does_not_depend_on_its_batch(family_model) -> None:
    name, model, make_inputs = family_model
    model.generation_config.pad_token_id = 0
    settings = OperaSettings(**EAGER)
    traces = []
    joint = opera_generate(model, make_inputs(PROMPTS), 8, settings, traces)
    assert len(traces) == 3 and sum(len(t.rollbacks) for t in traces) > 0, name
    for i, prompt in enumerate(PROMPTS):
        single_trace = []
        single = opera_generate(model, alone(make_inputs, prompt), 8, settings, single_trace)
        assert torch.equal(joint[i, :single.shape[1]], single[0]), (name, i)
        assert traces[i].rollbacks == single_trace[0].rollbacks
        assert all(torch.equal(a, b) for a, b in zip(traces[i].penalties, single_trace[0].penalties))  # bit for bit


def test_eah_plus_opera_runs_and_records_both(tiny) -> None:
    model, make_inputs = tiny
    params = {"eah": {"layer": 1, "relative_threshold": 1.0, "decode": "reuse"}, "opera": EAGER}
    seen: list[dict[int, list[str]]] = []
    handle = decoder_layers(model)[0].register_forward_pre_hook(
        lambda module, args: seen.append({k: [type(h).__name__ for h in v] for k, v in active_hooks(model).items()}))
    method = resolve_method("eah+opera", params)
    joint = method.generate(model, make_inputs(PROMPTS), 6)
    handle.remove()
    assert {"EnhancedHeads", "LastLayerRows"} <= set(seen[0][1])  # both on the last layer, EAH first
    assert seen[0][1].index("EnhancedHeads") < seen[0][1].index("LastLayerRows")
    for i, prompt in enumerate(PROMPTS):
        single = method.generate(model, alone(make_inputs, prompt), 6)
        assert torch.equal(joint.tokens[i, :single.tokens.shape[1]], single.tokens[0])
        assert joint.extras[i] == single.extras[0] and joint.extras[i]["eah_head"] >= 0
    plain = resolve_method("opera", {"opera": EAGER}).generate(model, make_inputs(PROMPTS), 6).tokens
    assert not torch.equal(plain, joint.tokens)
    assert active_hooks(model) == {}


def test_opera_and_eah_plus_opera_in_the_runner(tmp_path: Path) -> None:
    model, processor = tiny_llava_pipeline(0)
    for image_id in (1, 2):
        pixels = np.random.default_rng(image_id).integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"COCO_val2014_{image_id:012d}.jpg")
    items = [Item(str(i), tmp_path / f"COCO_val2014_{i:012d}.jpg", "Please describe this image in detail.")
             for i in (1, 2)]
    for spec in ("opera", "eah+opera"):
        method = resolve_method(spec, {"eah": {"layer": 1}} if spec.startswith("eah") else None)
        output = generate_records(model, processor, method, items, tmp_path / spec / "out.jsonl", {"task": "t"}, 4,
                                  batch_size=2)
        records = read_records(output)
        assert [r["item_id"] for r in records] == ["1", "2"] and all(r["method"] == spec for r in records)
        config = json.loads((tmp_path / spec / "out.config.json").read_text())
        assert config["opera"] == resolve_method("opera").decoder.defaults
    from eahlib.bench.__main__ import methods_table

    assert "opera  [decoder]" in methods_table()


def test_the_model_is_restored_when_the_decoder_or_the_body_raises(tiny) -> None:
    model, make_inputs = tiny
    inputs = make_inputs(PROMPTS[:2])
    before = resolve_method("beam").generate(model, inputs, 4).tokens
    calls = {"n": 0}

    def fail_later(module, args):
        calls["n"] += 1
        if calls["n"] == 12:  # inside a candidate forward of the second step
            raise RuntimeError("boom")

    handle = decoder_layers(model)[0].register_forward_pre_hook(fail_later)
    try:
        for spec in ("opera", "eah+opera"):
            calls["n"] = 0
            with pytest.raises(RuntimeError, match="boom"):
                resolve_method(spec).generate(model, inputs, 4)
            assert active_hooks(model) == {} and text_config(model)._attn_implementation == "sdpa"
    finally:
        handle.remove()
    with pytest.raises(KeyError, match="inside"):
        with watch_last_layer(model) as watcher:
            assert isinstance(active_hooks(model)[1][0], LastLayerRows) and watcher.calls == 0
            raise KeyError("inside")
    assert active_hooks(model) == {} and text_config(model)._attn_implementation == "sdpa"
    assert torch.equal(resolve_method("beam").generate(model, inputs, 4).tokens, before)
    assert not any(isinstance(h, EnhancedHeads) for hooks in active_hooks(model).values() for h in hooks)
    resolve_method("eah+opera").generate(model, inputs, 2)  # EAH can be entered again


def test_bad_settings_and_unsupported_caches_raise() -> None:
    for bad in ({"num_attn_candidates": 0}, {"threshold": -1}, {"scale_factor": 0.0}, {"window_size": 0},
                {"penalty_weights": -1.0}):
        with pytest.raises(ValueError, match="opera's"):
            OperaSettings(**bad)
    with pytest.raises(ValueError, match="Unknown parameter"):
        resolve_method("opera", {"opera": {"beams": 5}})
    sliding = MistralConfig(num_hidden_layers=2, sliding_window=4, hidden_size=32, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB)
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        _rollable_cache({"cache": DynamicCache(config=sliding)})


@pytest.mark.filterwarnings("ignore:No caption mentions an object")  # the random tiny model names none
def test_benchmark_table_limits_opera_and_sets_published_numbers_beside_ours(coco_dir: Path, pope_file: Path,
                                                                              tmp_path: Path) -> None:
    import pandas as pd

    from eahlib.bench import ChairEvaluator
    from eahlib.bench.runner import chair_items
    from eahlib.experiments import PUBLISHED, Setup, benchmark_table, published_comparison
    from tests.conftest import GROUND_TRUTH

    model, processor = tiny_llava_pipeline(0)
    prompt = "Please describe this image in detail."
    setup = Setup("small", "tiny", model, processor, coco_dir, chair_items(coco_dir, 3, seed=0, prompt=prompt), prompt,
                  ChairEvaluator.from_ground_truth(GROUND_TRUTH), {"adversarial": pope_file}, tmp_path / "results")
    methods = {"greedy": resolve_method("greedy"), "opera": resolve_method("opera")}
    table = benchmark_table(setup, methods, setup.caption_items, pope_limit=4, max_new_tokens=4, limits={"opera": 2})
    assert table.n_captions.tolist() == [3, 2] and table["POPE adversarial n"].tolist() == [4, 2]
    assert "opera(num_beams=5" in table.loc["opera", "parameters"]

    ours = pd.DataFrame({"CHAIRs": [50.0, 47.0, 40.0, 45.0], "CHAIRi": [14.0, 13.0, 11.0, 12.0],
                         "POPE random f1": [80.0, 81.0, 82.0, 83.0], "POPE adversarial f1": [70.0, 71.0, 72.0, 75.0]},
                        index=pd.Index(["greedy", "beam", "eah", "opera"], name="method"))
    side = published_comparison(ours)
    assert side.index.tolist() == [("VHR", "greedy"), ("VHR", "eah"), ("VHR", "opera"), ("VAR", "greedy")]
    assert side.loc[("VHR", "opera"), ["CHAIRs", "CHAIRi"]].tolist() == [44.28, 13.36]  # VHR's OPERA, LLaVA-1.5-7B
    assert side.loc[("VHR", "eah"), "CHAIRs (ours)"] == 40.0 and side.loc[("VHR", "opera"), "POPE F1 (ours)"] == 79.0
    assert side.loc[("VAR", "greedy"), "CHAIRs (ours)"] == 50.0  # each paper beside its own greedy baseline
    assert PUBLISHED.loc[("VHR", "greedy")].tolist() == [49.68, 14.32, 84.98]
    assert PUBLISHED.loc[("VHR", "vhr")].tolist() == [33.32, 9.71, 85.47]  # VHR's own row (issue 19)
    assert PUBLISHED.loc[("VAR", "var")].tolist() == [43.2, 13.8, 86.53]  # VAR's Table 2
