"""Evaluate the organism on a fresh shapes-world set through the project's own benchmark code.

The set is exported in COCO/CHAIR/POPE formats (:mod:`eahlib.organism.export`) and read back like a
real benchmark: captions are scored by :class:`~eahlib.bench.ChairEvaluator` built from the exported
COCO annotations and vocabulary, yes/no answers by :func:`~eahlib.bench.pope_metrics`. On top:

* exact-set accuracy (the caption names exactly the image's objects) and the same with the images
  shuffled across prompts (blind control: what the language prior alone achieves);
* partner fraction: the share of hallucinated objects that are the co-occurrence partner of an object
  in the image, against the share expected if hallucinations were uniform over absent classes;
* vision sinks of the caption prefill with :func:`eahlib.sink_profile` (relative threshold 4), where
  they sit (object vs background patches), the ``<bos>`` received score relative to uniform
  attention, and massive activations (:func:`eahlib.massive_activation_sinks`, all dimensions).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from eahlib.bench import ChairEvaluator, load_pope_questions, pope_metrics
from eahlib.bench.runner import chat_prompt
from eahlib.metrics import massive_activation_sinks, sink_criterion
from eahlib.organism.export import POPE_SPLITS, EvaluationSet, export_evaluation_set
from eahlib.organism.tokenizer import CAPTION_REQUEST
from eahlib.organism.world import CLASS_NAMES, GENERATOR_VERSION, PARTNER
from eahlib.profile import sink_profile
from eahlib.progress import progress

SINK_RELATIVE_THRESHOLD = 4.0
TOKEN_TYPES = ("bos", "system", "image", "text")


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


@torch.no_grad()
def generate_answers(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, images: Sequence[Image.Image],
    questions: Sequence[str], batch_size: int = 50, max_new_tokens: int = 24, desc: str = "generate",
) -> list[str]:
    """Greedy answers to one question per image, in left-padded batches.

    Args:
        model: the organism.
        processor: its processor (left padding).
        images: one image per question.
        questions: the user texts (templated with the processor's chat template).
        batch_size: prompts per ``generate`` call.
        max_new_tokens: generation budget per answer.
        desc: progress-bar label.

    Returns:
        The decoded answers, special tokens removed.
    """
    if len(images) != len(questions):
        raise ValueError(f"Got {len(images)} images but {len(questions)} questions; pass one image per question.")
    answers: list[str] = []
    pairs = list(zip(images, questions))
    for batch in progress(_batches(pairs, batch_size), desc=desc):
        inputs = processor(images=[image for image, _ in batch], text=[chat_prompt(processor, q) for _, q in batch],
                           return_tensors="pt", padding=True)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answers.extend(processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return [answer.strip() for answer in answers]


def _caption_scores(evaluator: ChairEvaluator, image_ids: list[int], captions: list[str]) -> dict[str, Any]:
    """CHAIR metrics, exact-set accuracy and partner statistics of one caption per image."""
    result = evaluator.evaluate([{"image_id": i, "caption": c} for i, c in zip(image_ids, captions)])
    exact, partner_hits, partner_chance, hallucinated = [], [], [], 0
    for sentence in result.sentences:
        truth = set(sentence["mscoco_gt_words"])
        exact.append(set(sentence["mscoco_generated_words"]) == truth)
        partners = {PARTNER[name] for name in truth} - truth
        absent = len(CLASS_NAMES) - len(truth)
        for _, node in sentence["mscoco_hallucinated_words"]:
            hallucinated += 1
            partner_hits.append(node in partners)
            partner_chance.append(len(partners) / absent)
    return {
        "exact_set_accuracy": float(np.mean(exact)),
        "chair_s": result.overall["CHAIRs"],
        "chair_i": result.overall["CHAIRi"],
        "recall": result.overall["Recall"],
        "precision": result.overall["Precision"],
        "n_hallucinated_objects": hallucinated,
        "partner_fraction": float(np.mean(partner_hits)) if partner_hits else 0.0,
        "partner_fraction_chance": float(np.mean(partner_chance)) if partner_chance else 0.0,
    }


def _token_types(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """``[B, N]`` index into :data:`TOKEN_TYPES`: ``<bos>``, system prompt (before the image), image, text after."""
    image = input_ids == image_token_id
    before_image = image.long().cumsum(-1) == 0
    types = torch.where(image, 2, torch.where(before_image, 1, 3))
    types[:, 0] = 0
    return types


@torch.no_grad()
def sink_statistics(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, evaluation: EvaluationSet,
    images: Sequence[Image.Image], batch_size: int = 50,
) -> dict[str, Any]:
    """Vision sinks, ``<bos>`` attention and massive activations on the caption prefill.

    Args:
        model: the organism.
        processor: its processor.
        evaluation: the set (object-patch masks of its scenes).
        images: the set's images, in order.
        batch_size: prompts per forward pass.

    Returns:
        Per-layer lists (index = decoder layer): ``density`` (mean vision sinks per head and image),
        ``density_per_head`` (``[L][H]``), ``object_patch_share`` (share of sink events on object
        patches), ``bos_received_over_uniform`` (mean and max over heads of ``s_bos / u_bos``),
        ``massive_activation_share`` per token type and ``max_normalised_activation`` per token type
        (``max_d |x_d| / rms(x)`` of each layer's input), plus the criterion and base rates.
    """
    density, on_object, sinks, bos_ratio = [], [], [], []
    flagged = {kind: [] for kind in TOKEN_TYPES}
    peak = {kind: [] for kind in TOKEN_TYPES}
    patches = np.stack([scene.object_patches.reshape(-1) for scene in evaluation.scenes])
    for start in progress(range(0, len(images), batch_size), desc="sink profile"):
        batch = images[start : start + batch_size]
        inputs = processor(images=list(batch), text=[chat_prompt(processor, CAPTION_REQUEST)] * len(batch), return_tensors="pt")
        profile = sink_profile(model, relative_threshold=SINK_RELATIVE_THRESHOLD, **inputs)
        events = profile.sinks()
        image_events = torch.stack([events[:, b][..., profile.image_mask[b]] for b in range(len(batch))], 1)
        objects = torch.from_numpy(patches[start : start + len(batch)])[None, :, None, :]
        density.append(profile.density.float())
        on_object.append((image_events & objects).sum(dim=(1, 2, 3)).float())
        sinks.append(image_events.sum(dim=(1, 2, 3)).float())
        bos_ratio.append(profile.scores[..., 0] / profile.uniform[..., 0, None])
        hidden = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
        types = _token_types(inputs["input_ids"], model.config.image_token_id)
        for kind_index, kind in enumerate(TOKEN_TYPES):
            where = types == kind_index
            flagged[kind].append(torch.stack([massive_activation_sinks(h, dims=None)[where].float().sum() for h in hidden]))
            normalised = [(h.abs() / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()).amax(-1)[where].max() for h in hidden]
            peak[kind].append(torch.stack(normalised))
    all_density = torch.cat(density, 1)  # [L, B, H]
    all_bos = torch.cat(bos_ratio, 1).mean(1)  # [L, H]
    counts = _token_types(inputs["input_ids"][:1], model.config.image_token_id)[0].bincount(minlength=len(TOKEN_TYPES))
    n_images = len(images)
    return {
        "criterion": f"{sink_criterion(relative_threshold=SINK_RELATIVE_THRESHOLD).describe()} "
                     "(causal normalizer, caption-prompt prefill)",
        "density": all_density.mean(dim=(1, 2)).tolist(),
        "density_per_head": all_density.mean(1).tolist(),
        "object_patch_share": (torch.stack(on_object).sum(0) / torch.stack(sinks).sum(0).clamp(min=1)).tolist(),
        "object_patch_base_rate": float(patches.mean()),
        "sink_events_per_image": (torch.stack(sinks).sum(0) / n_images).tolist(),
        "bos_received_over_uniform_mean": all_bos.mean(-1).tolist(),
        "bos_received_over_uniform_max_head": all_bos.amax(-1).tolist(),
        "massive_activation_share": {
            kind: (torch.stack(flagged[kind]).sum(0) / (counts[i] * n_images)).tolist()
            for i, kind in enumerate(TOKEN_TYPES)
        },
        "max_normalised_activation": {kind: torch.stack(peak[kind]).amax(0).tolist() for kind in TOKEN_TYPES},
        "hidden_state_rows": "input of layer 0..L-1, then the final normed output",
    }


def evaluate_organism(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, n: int = 400, seed: int = 4321,
    workdir: str | os.PathLike | None = None, batch_size: int = 50,
) -> dict[str, Any]:
    """Caption, answer and profile a fresh evaluation set of ``n`` images generated with ``seed``.

    Args:
        model: the organism (eval mode).
        processor: its processor.
        n: number of images.
        seed: evaluation-set seed (keep it away from training seeds' data: training uses ``[seed, stage, step]``).
        workdir: where the set is exported (default: a temporary folder, removed afterwards).
        batch_size: prompts per forward/generate call.

    Returns:
        The metrics (see the module docstring and :func:`sink_statistics`).
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="organism-eval-") as folder:
            return evaluate_organism(model, processor, n, seed, folder, batch_size)
    evaluation = export_evaluation_set(n, seed, workdir)
    ids = evaluation.image_ids
    images = [Image.open(evaluation.image_path(i)).convert("RGB") for i in ids]
    evaluator = ChairEvaluator.from_coco(evaluation.annotation_dir, vocabulary=evaluation.vocabulary_file)
    captions = generate_answers(model, processor, images, [CAPTION_REQUEST] * n, batch_size, desc="captions")
    order = np.random.default_rng([seed, 2]).permutation(n)
    shuffled = [images[order[(k + 1) % n]] for k in np.argsort(order)]  # a derangement: no image keeps its slot
    blind = generate_answers(model, processor, shuffled, [CAPTION_REQUEST] * n, batch_size, desc="blind captions")
    results: dict[str, Any] = {"n": n, "seed": seed, "generator_version": GENERATOR_VERSION}
    results.update(_caption_scores(evaluator, ids, captions))
    blind_scores = _caption_scores(evaluator, ids, blind)
    results["blind_exact_set_accuracy"] = blind_scores["exact_set_accuracy"]
    results["blind_chair_s"] = blind_scores["chair_s"]
    by_name = {evaluation.image_path(i).name: image for i, image in zip(ids, images)}
    splits = {split: load_pope_questions(evaluation.pope_file(split)) for split in POPE_SPLITS}
    # A question shared by several splits (every present-object question is) is answered once.
    unique = list(dict.fromkeys((q["image"], q["text"]) for questions in splits.values() for q in questions))
    replies = generate_answers(model, processor, [by_name[name] for name, _ in unique], [text for _, text in unique],
                               batch_size, max_new_tokens=3, desc="POPE")
    reply = dict(zip(unique, replies))
    for split, questions in splits.items():
        answers = [reply[(q["image"], q["text"])] for q in questions]
        metrics = pope_metrics([q["label"] for q in questions], answers)
        for key in ("accuracy", "f1", "yes_ratio"):
            results[f"pope_{split}_{key}"] = metrics[key]
        results[f"pope_{split}_absent_accuracy"] = metrics["tn"] / (metrics["tn"] + metrics["fp"])
    results["pope_present_accuracy"] = metrics["tp"] / (metrics["tp"] + metrics["fn"])
    results["sinks"] = sink_statistics(model, processor, evaluation, images, batch_size)
    results["examples"] = [{"truth": s.caption(), "caption": c} for s, c in zip(evaluation.scenes[:8], captions)]
    return results


def summarize_evaluations(evaluations: Sequence[dict[str, Any]], confidence: float = 0.95) -> pd.DataFrame:
    """Mean and Student-t interval over evaluation seeds of every scalar metric.

    Each seed is one draw of a fresh evaluation set, so the interval describes how a metric moves from one
    set of ``n`` images to another (not the item-level uncertainty within a set).

    Args:
        evaluations: results of :func:`evaluate_organism`, one per seed (at least two, distinct seeds, equal ``n``).
        confidence: coverage of the interval.

    Returns:
        One row per metric: ``mean``, ``sd`` (over seeds), ``ci_low``, ``ci_high`` and one column per seed.
    """
    from scipy import stats

    seeds = [e["seed"] for e in evaluations]
    if len(evaluations) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"Need evaluations of at least two distinct seeds, got seeds {seeds}.")
    sizes = {e["n"] for e in evaluations}
    if len(sizes) != 1:
        raise ValueError(f"Evaluations of different sizes ({sorted(sizes)} images) cannot be pooled; use one --n.")
    metrics = [k for k, v in evaluations[0].items() if isinstance(v, float)]
    values = pd.DataFrame({f"seed {s}": [e[m] for m in metrics] for s, e in zip(seeds, evaluations)}, index=metrics)
    mean, sd = values.mean(axis=1), values.std(axis=1, ddof=1)
    half = stats.t.ppf((1 + confidence) / 2, df=len(seeds) - 1) * sd / np.sqrt(len(seeds))
    summary = pd.DataFrame({"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half})
    return pd.concat([summary, values], axis=1)
