"""The baselines next to EAH: PAI, VCD and DoLa on a tiny LLaVA, in the runner and against direct computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eahlib as eah
from eahlib.attention import AttentionCall, LayerHook, layer_hooks
from eahlib.bench.runner import Item, generate_records, read_records
from eahlib.methods import resolve_method
from eahlib.methods.contrastive import FollowerStream
from eahlib.methods.dola import candidate_layers, contrast_layers, layer_contrast
from eahlib.methods.pai import ImageAttentionBoost, boost_image_attention, text_only_prompt
from eahlib.methods.vcd import VisualContrast, diffusion_alpha_bar, diffusion_noise
from eahlib.testing import IMAGE_TOKEN, PAD, tiny_instructblip, tiny_llava_pipeline

TOKENS = 6
STRONG = {
    "pai": {"pai": {"alpha": 2.0, "gamma": 3.0, "start_layer": 0}},
    "vcd": {"vcd": {"alpha": 3.0, "beta": 1e-3}},
    "dola": {"dola": {"layers": [0, 1]}},
}
"""Settings under which each method visibly acts on the random tiny model."""
QUESTIONS = ["Please describe this image in detail.", "Is there a dog in the image?", "Is there a cat?"]


@pytest.fixture(scope="module")
def pipeline():
    return tiny_llava_pipeline(0)


@pytest.fixture(scope="module")
def batch(pipeline) -> dict[str, torch.Tensor]:
    """Three left-padded prompts of different lengths, each with its own random image."""
    _, processor = pipeline
    processor.tokenizer.padding_side = "left"
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)) for _ in QUESTIONS]
    prompts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                             add_generation_prompt=True) for q in QUESTIONS]
    return dict(processor(images=images, text=prompts, return_tensors="pt", padding=True))


def generate(model, inputs, spec: str, params: dict | None = None) -> torch.Tensor:
    return resolve_method(spec, params).generate(model, inputs, TOKENS).tokens


def one(inputs: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Sample ``i`` alone, its padding removed."""
    real = inputs["attention_mask"][i].bool()
    return {"input_ids": inputs["input_ids"][i:i + 1, real], "attention_mask": inputs["attention_mask"][i:i + 1, real],
            "pixel_values": inputs["pixel_values"][i:i + 1]}


@pytest.mark.filterwarnings("ignore:A batch without image tokens reached EAH")  # EAH sees PAI's text-only pass
@pytest.mark.parametrize("spec", ["pai", "vcd", "dola", "eah+vcd", "eah+pai", "eah+dola"])
def test_each_method_runs_in_the_runner(pipeline, tmp_path: Path, spec: str) -> None:
    model, processor = pipeline
    for image_id in (1, 2):
        pixels = np.random.default_rng(image_id).integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"COCO_val2014_{image_id:012d}.jpg")
    items = [Item(str(i), tmp_path / f"COCO_val2014_{i:012d}.jpg", QUESTIONS[i]) for i in (1, 2)]
    params = {"pai": {"start_layer": 0}} if "pai" in spec else {}
    method = resolve_method(spec, params)
    output = generate_records(model, processor, method, items, tmp_path / "out.jsonl", {"task": "t"}, 4, batch_size=2)
    records = read_records(output)
    assert [r["item_id"] for r in records] == ["1", "2"] and all(r["method"] == method.name for r in records)
    decoder = spec.split("+")[-1]
    config = json.loads((tmp_path / "out.config.json").read_text())
    assert config[decoder] == {**resolve_method(decoder).decoder.defaults, **params.get(decoder, {})}


def test_published_defaults_are_recorded() -> None:
    assert resolve_method("vcd", {"vcd": {"alpha": 1.0}}).settings() == {
        "method": "vcd", "vcd": {"alpha": 1.0, "beta": 0.1, "noise_step": 500, "seed": 0}}
    assert resolve_method("pai").settings()["pai"] == {
        "alpha": 0.2, "gamma": 1.1, "beta": 0.1, "start_layer": 2, "end_layer": None, "boost_guided_prefill": False}
    assert resolve_method("dola").settings()["dola"] == {"layers": "low", "relative_top": 0.1, "repetition_penalty": 1.2}
    assert resolve_method("eah+vcd").name == "eah+vcd"


def test_neutral_settings_equal_plain_greedy(pipeline, batch) -> None:
    model, _ = pipeline
    greedy = generate(model, batch, "greedy")
    # gamma = 1 is PAI's neutral guidance: gamma * (s - u) + u = s
    assert torch.equal(generate(model, batch, "pai", {"pai": {"alpha": 0.0, "gamma": 1.0, "start_layer": 0}}), greedy)
    assert torch.equal(generate(model, batch, "vcd", {"vcd": {"alpha": 0.0}}), greedy)


@pytest.mark.parametrize("spec", sorted(STRONG))
def test_each_method_changes_outputs(pipeline, batch, spec: str) -> None:
    model, _ = pipeline
    assert not torch.equal(generate(model, batch, spec, STRONG[spec]), generate(model, batch, "greedy"))


def test_pai_guidance_alone_changes_outputs(pipeline, batch) -> None:
    model, _ = pipeline
    guided = generate(model, batch, "pai", {"pai": {"alpha": 0.0, "gamma": 3.0, "start_layer": 0}})
    assert not torch.equal(guided, generate(model, batch, "greedy"))


def test_vcd_noise_is_seeded_and_follows_the_schedule(pipeline, batch) -> None:
    pixels = batch["pixel_values"]
    noised = diffusion_noise(pixels, 500, seed=3, batch_size=3)
    assert torch.equal(noised, diffusion_noise(pixels, 500, seed=3, batch_size=3))
    assert not torch.equal(noised, diffusion_noise(pixels, 500, seed=4, batch_size=3))
    assert torch.equal(noised[1:2], diffusion_noise(pixels[1:2], 500, seed=3, batch_size=1))  # batch-independent
    betas = 1 / (1 + np.exp(-np.linspace(-6, 6, 1000))) * (5e-3 - 1e-5) + 1e-5
    assert diffusion_alpha_bar(500) == pytest.approx(float(np.prod(1 - betas[:501])), rel=1e-9)
    zeros = diffusion_noise(torch.zeros(64, 3, 32, 32), 999, seed=0, batch_size=64)
    assert float(zeros.std()) == pytest.approx((1 - diffusion_alpha_bar(999)) ** 0.5, rel=0.02)
    model, _ = pipeline
    assert torch.equal(generate(model, batch, "vcd", STRONG["vcd"]), generate(model, batch, "vcd", STRONG["vcd"]))


def test_follower_stream_equals_a_fresh_forward_per_sample(pipeline, batch) -> None:
    """The second stream (left-padded, own cache) gives each sample's logits of a full forward alone."""
    model, _ = pipeline
    text = text_only_prompt(model, batch, PAD)
    stream = FollowerStream(model, text, batch["input_ids"].shape[1])
    sequences = batch["input_ids"]
    for step in range(3):
        logits = stream.next_logits(sequences)
        for i in range(3):
            real = text["input_ids"][i][text["attention_mask"][i].bool()]
            alone = torch.cat([real, sequences[i, batch["input_ids"].shape[1]:]]).unsqueeze(0)
            with torch.no_grad():
                expected = model(input_ids=alone).logits[0, -1]
            torch.testing.assert_close(logits[i], expected, rtol=1e-4, atol=1e-4)
        sequences = torch.cat([sequences, torch.tensor([[10 + step], [20 + step], [30 + step]])], dim=-1)
    with pytest.raises(RuntimeError, match="out of step"):
        stream.next_logits(sequences[:, :-2])


def test_text_only_prompt_drops_image_tokens_and_repads(pipeline, batch) -> None:
    model, _ = pipeline
    text = text_only_prompt(model, batch, PAD)
    for i in range(3):
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        expected = ids[ids != IMAGE_TOKEN]
        row = text["input_ids"][i]
        assert torch.equal(row[text["attention_mask"][i].bool()], expected)
        assert torch.equal(row[: row.shape[0] - expected.shape[0]], torch.full((row.shape[0] - expected.shape[0],), PAD))
    assert int(text["attention_mask"].sum(-1).max()) == text["input_ids"].shape[1]


class RawScores(LayerHook):
    """Records a layer's logits before any later hook adjusts them."""

    modifies = True

    def __init__(self) -> None:
        self.scores: list[torch.Tensor] = []

    def adjust_scores(self, call: AttentionCall) -> torch.Tensor:
        self.scores.append(call.scores.clone())
        return call.scores


def test_pai_boost_equals_a_direct_computation(pipeline, batch) -> None:
    """Captured attention = softmax of the raw logits with the last row's image logits a -> a + alpha|a|."""
    model, _ = pipeline
    alpha, layer = 0.7, 1
    raw = RawScores()
    with layer_hooks(model, {layer: raw}), boost_image_attention(model, alpha, 0, None), \
            eah.capture_attention(model, layer) as cap:
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    image = eah.image_token_mask(model, batch["input_ids"]) & batch["attention_mask"].bool()
    for scores, probs in zip(raw.scores, cap.attentions[layer]):  # prefill, then one decoding step
        expected = scores.clone()
        for b in range(3):
            keys = torch.nonzero(image[b]).flatten()
            expected[b, :, -1, keys] = scores[b, :, -1, keys] + alpha * scores[b, :, -1, keys].abs()
        torch.testing.assert_close(probs, torch.softmax(expected, -1))
    assert len(raw.scores) == 2 and raw.scores[1].shape[2] == 1
    assert not torch.allclose(cap.attentions[layer][0][:, :, -1], torch.softmax(raw.scores[0], -1)[:, :, -1])


def test_pai_boost_follows_a_sliding_window_and_skips_layers_without_attention() -> None:
    """Gemma 3's second layer keeps the last 8 tokens: at each decoding step the boosted keys are the prompt's image
    tokens among them (at their cache positions), and a masked image key stays masked even with alpha > 1."""
    from eahlib.testing.families import TINY_FAMILIES

    model, make_inputs = TINY_FAMILIES["gemma3"](0)
    model.generation_config.pad_token_id = PAD
    inputs = make_inputs([[1, 5, 6, 7, 8, -1, 9], [1, 10, -1]])  # the image (16 tokens) near the prompt's end
    alpha, layer, window = 1.5, 1, model.config.text_config.sliding_window
    raw = RawScores()
    with layer_hooks(model, {layer: raw}), boost_image_attention(model, alpha, 0, None), \
            eah.capture_attention(model, layer) as cap:
        model.generate(**inputs, max_new_tokens=4, do_sample=False)
    image = eah.image_token_mask(model, inputs["input_ids"]) & inputs["attention_mask"].bool()
    length = image.shape[1]
    for step, (scores, probs) in enumerate(zip(raw.scores, cap.attentions[layer])):
        keys = scores.shape[-1]
        first = 0 if step == 0 else max(length + step - keys, 0)  # absolute position of the call's first key
        prompt = torch.nn.functional.pad(image, (0, step))[:, first:first + keys]
        visible = scores[:, 0, -1] > torch.finfo(torch.float32).min / 2
        boosted = prompt & visible
        expected = scores.clone()
        expected[:, :, -1] = torch.where(boosted[:, None], scores[:, :, -1] + alpha * scores[:, :, -1].abs(),
                                         scores[:, :, -1])
        torch.testing.assert_close(probs, torch.softmax(expected, -1))
        if step:
            assert keys < length and bool(boosted.any()), "the window shows part of the image at each step"
    assert (cap.attentions[layer][0][:, :, -1][~(raw.scores[0][:, 0, -1] > -1e30)[:, None].expand(-1, 4, -1)] == 0).all()
    hybrid, make_hybrid = TINY_FAMILIES["lfm2_vl"](0)  # a convolution layer, then an attention layer
    with boost_image_attention(hybrid, alpha, 0, None) as hook:
        hybrid.generate(**make_hybrid([[5, 6]]), max_new_tokens=2, do_sample=False)
    assert eah.models.attention_layers(hybrid) == [1]
    with pytest.raises(ValueError, match=r"hold no attention layer.*\[1\]"):
        with boost_image_attention(hybrid, alpha, 0, 1):
            pass


def test_pai_hook_on_a_synthetic_call() -> None:
    """Only the last row's image keys change, and only those it attends; a decoding step boosts the image keys its
    stream's prompt keys give, also when the prefill itself is left unboosted."""

    class Prompts:
        def keys(self, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor]:
            image = torch.tensor([[False, True, True, False]])
            image = torch.nn.functional.pad(image, (0, call.scores.shape[-1] - 4))
            return image, torch.zeros_like(image)

    hook = ImageAttentionBoost(0.5, Prompts())  # type: ignore[arg-type]
    scores = torch.tensor([[[[1.0, -2.0, 4.0, 0.5]] * 4]])
    prefill = AttentionCall(torch.nn.Identity(), scores, None, torch.ones(1, 4, 4, dtype=torch.bool), True)
    out = hook.adjust_scores(prefill)
    assert torch.equal(out[0, 0, :3], scores[0, 0, :3])
    assert torch.equal(out[0, 0, 3], torch.tensor([1.0, -1.0, 6.0, 0.5]))
    step = torch.tensor([[[[2.0, -4.0, 1.0, 3.0, -1.0]]]])
    decode = AttentionCall(torch.nn.Identity(), step, None, torch.ones(1, 1, 5, dtype=torch.bool), False)
    assert torch.equal(hook.adjust_scores(decode), torch.tensor([[[[2.0, -2.0, 1.5, 3.0, -1.0]]]]))
    minimum = torch.finfo(torch.float32).min
    hidden = torch.tensor([[[True, False, True, True, True]]])  # image key 1 out of the query's view (a window)
    masked = torch.tensor([[[[2.0, minimum, 1.0, 3.0, -1.0]]]])
    boosted = ImageAttentionBoost(1.5, Prompts()).adjust_scores(  # type: ignore[arg-type]
        AttentionCall(torch.nn.Identity(), masked, None, hidden, False))
    assert torch.equal(boosted, torch.tensor([[[[2.0, minimum, 2.5, 3.0, -1.0]]]]))
    with hook.suspend():
        assert not hook.wants_probabilities(False)
    steps_only = ImageAttentionBoost(0.5, Prompts(), boost_prefill=False)  # type: ignore[arg-type]
    assert torch.equal(steps_only.adjust_scores(prefill), scores)
    assert torch.equal(steps_only.adjust_scores(decode), torch.tensor([[[[2.0, -2.0, 1.5, 3.0, -1.0]]]]))


def test_dola_candidate_layers_mirror_transformers_4() -> None:
    assert candidate_layers(32, False, "low") == list(range(0, 16, 2))
    assert candidate_layers(32, True, "low") == list(range(2, 16, 2))
    assert candidate_layers(32, False, "high") == list(range(16, 32, 2))
    assert candidate_layers(48, False, "high") == list(range(28, 48, 2))
    assert candidate_layers(48, True, "low") == list(range(2, 20, 2))
    assert candidate_layers(2, True, "low") == [1]
    assert candidate_layers(2, False, "low") == [0]
    assert candidate_layers(4, False, [3, 1]) == [1, 3]
    with pytest.raises(ValueError, match=r"indices in \[0, 4\)"):
        candidate_layers(4, False, [4])
    with pytest.raises(ValueError, match="'low', 'high'"):
        candidate_layers(4, False, "middle")


def test_dola_contrast_equals_a_direct_computation(pipeline, batch) -> None:
    model, _ = pipeline
    with layer_contrast(model, [0, 1], 0.1) as contrast, torch.no_grad():
        outputs = model(**batch, output_hidden_states=True)
        scores = contrast(batch["input_ids"], outputs.logits[:, -1].float())
    head = model.get_output_embeddings()
    for b in range(3):
        final = outputs.logits[b, -1].float().log_softmax(-1)
        early = {j: head(outputs.hidden_states[j][b, -1]).float().log_softmax(-1) for j in (0, 1)}
        divergence = {}
        for j, p in early.items():
            m = 0.5 * (final.exp() + p.exp())
            kl = torch.nn.functional.kl_div  # kl_div(log q, p) = KL(p || q), elementwise
            divergence[j] = 0.5 * (kl(final, m, reduction="none").mean() + kl(p, m, reduction="none").mean())
        chosen = max(divergence, key=divergence.get)
        assert int(contrast.chosen_layers[0][b]) == chosen
        keep = final >= final.max() + np.log(0.1)
        torch.testing.assert_close(scores[b][keep], (final - early[chosen])[keep])
        assert torch.isinf(scores[b][~keep]).all()
    final_logits, premature = outputs.logits[:, -1].float(), torch.randn(2, 3, outputs.logits.shape[-1])
    joint, chosen = contrast_layers(final_logits, premature, 0.1)
    alone, chosen_alone = contrast_layers(final_logits[1:2], premature[:, 1:2], 0.1)
    assert torch.equal(joint[1:2], alone) and chosen[1] == chosen_alone[0]


@pytest.mark.parametrize("spec", ["vcd", "pai", "dola"])
def test_a_sample_in_a_padded_batch_equals_it_alone(pipeline, batch, spec: str) -> None:
    model, _ = pipeline
    joint = generate(model, batch, spec, STRONG[spec])
    for i in (0, 2):  # the longest prompt (no padding) and a padded one
        assert torch.equal(joint[i:i + 1], generate(model, one(batch, i), spec, STRONG[spec]))


def test_unsupported_combinations_and_bad_input_raise(pipeline, batch) -> None:
    model, _ = pipeline
    for spec in ("vcd+beam", "pai+vcd", "dola+sample"):
        with pytest.raises(ValueError, match="at most one intervention and one decoder"):
            resolve_method(spec)
    with pytest.raises(ValueError, match="decode='reuse' cannot run with a contrastive decoder"):
        generate(model, batch, "eah+vcd", {"eah": {"decode": "reuse"}})
    with pytest.raises(ValueError, match="greedy decoding only"):
        stream = FollowerStream(model, batch, batch["input_ids"].shape[1])
        model.generate(**batch, max_new_tokens=2, num_beams=2, logits_processor=[VisualContrast(stream, 1.0, 0.1)])
    with pytest.raises(ValueError, match="needs the image"):
        generate(model, {k: v for k, v in batch.items() if k != "pixel_values"}, "vcd")
    with pytest.raises(ValueError, match="boost_guided_prefill must be true or false, got 'yes'"):
        generate(model, batch, "pai", {"pai": {"start_layer": 0, "boost_guided_prefill": "yes"}})
    with pytest.raises(ValueError, match="start_layer < end_layer <= 2"):
        generate(model, batch, "pai")  # published start_layer=2 on a 2-layer model
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\]"):
        generate(model, batch, "vcd", {"vcd": {"beta": 0.0}})
    with pytest.raises(ValueError, match="noise_step must be in"):
        generate(model, batch, "vcd", {"vcd": {"noise_step": 1000}})
    with pytest.raises(ValueError, match="Unknown parameter"):
        resolve_method("dola", {"dola": {"dola_layers": "low"}})
    blip, make_inputs = tiny_instructblip(0)
    with pytest.raises(NotImplementedError, match="requires pixel_values at every step"):
        generate(blip, make_inputs([[5, 6]]), "vcd")
