"""The sink facts of a model, as tables: what the model cards report and the notebooks can plot.

Everything is measured with eahlib's own functions on the caption prompt of a set of images:

* :func:`first_token_attention`: per layer, the mean attention the first real token receives from the
  later queries (``sink_profile``'s received score at that position), over heads and images;
* :func:`massive_activations`: per layer, the largest hidden-state magnitude on the first token and on
  image tokens, and the share of each that :func:`eahlib.massive_activation_sinks` flags;
* :func:`sink_density_by_layer`: vision sinks per head by layer for several relative thresholds
  ``k`` (:func:`eahlib.threshold_sweep`), with the densest head of each layer;
* :func:`eah_conditions` and :func:`eah_effects`: EAH at several layers for the densest, sparsest and a
  random head, and a threshold sweep, against greedy, with 95% bootstrap intervals over items
  (CHAIRs, CHAIRi, Recall, Len and POPE accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from eahlib.analysis import ImageLike, model_inputs
from eahlib.methods import Method, resolve_method
from eahlib.metrics import massive_activation_sinks
from eahlib.profile import sink_profile, threshold_sweep


def _chunks(images: Sequence[ImageLike], size: int) -> list[Sequence[ImageLike]]:
    return [images[start:start + size] for start in range(0, len(images), size)]


@torch.no_grad()
def first_token_attention(
    model: nn.Module, processor: Any, images: Sequence[ImageLike], prompt: str, batch_size: int = 8
) -> pd.DataFrame:
    """Mean attention received by the first real token, per layer.

    Returns:
        Columns ``layer, first_token_share`` (mean over images and heads of the mean attention the
        later queries give the first token), ``max_head_share`` (the head with the largest mean),
        ``image_token_share`` (the same mean for an average image token) and ``uniform`` (what a
        uniform attention under the layer's mask would give the first token).
    """
    shares, image_shares, uniform = [], [], []
    for chunk in _chunks(images, batch_size):
        inputs = model_inputs(model, processor, chunk, prompt)
        profile = sink_profile(model, relative_threshold=4.0, **inputs)
        first = profile.attention_mask.float().argmax(-1)
        shares.append(torch.stack([profile.scores[:, b, :, first[b]] for b in range(len(chunk))], 1))  # [L, B, H]
        image = profile.image_mask[None, :, None, :]
        image_shares.append((profile.scores * image).sum(-1) / image.sum(-1))
        uniform.append(torch.stack([profile.uniform[:, b, first[b]] for b in range(len(chunk))], 1))  # [L, B]
    share = torch.cat(shares, 1)
    return pd.DataFrame({
        "layer": range(share.shape[0]),
        "first_token_share": share.mean(dim=(1, 2)).numpy(),
        "max_head_share": share.mean(1).amax(-1).numpy(),
        "image_token_share": torch.cat(image_shares, 1).mean(dim=(1, 2)).numpy(),
        "uniform": torch.cat(uniform, 1).mean(1).numpy(),
    })


@torch.no_grad()
def massive_activations(
    model: nn.Module, processor: Any, images: Sequence[ImageLike], prompt: str, batch_size: int = 8, tau: float = 20.0
) -> pd.DataFrame:
    """Hidden-state magnitudes of the first token against image tokens, per layer input.

    Returns:
        Columns ``layer`` (the input of decoder layer ``layer``; the last row is the final normed
        output), ``first_token_max`` (largest ``|x_d|`` on the first token, max over images),
        ``image_max`` (largest on any image token), ``image_median`` (median over image tokens of
        their largest ``|x_d|``), ``first_token_flagged`` and ``image_flagged`` (shares flagged by
        :func:`eahlib.massive_activation_sinks` with all dimensions and ``tau``).
    """
    from eahlib.models import image_token_mask

    rows: dict[int, dict[str, list[torch.Tensor]]] = {}
    for chunk in _chunks(images, batch_size):
        inputs = model_inputs(model, processor, chunk, prompt)
        hidden = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
        image = image_token_mask(model, inputs["input_ids"]).cpu()
        first = inputs["attention_mask"].float().argmax(-1).cpu()
        batch = torch.arange(len(chunk))
        for layer, h in enumerate(hidden):
            h = h.float().cpu()
            peak = h.abs().amax(-1)
            flagged = massive_activation_sinks(h, None, tau)
            entry = rows.setdefault(layer, {k: [] for k in ("first", "image", "first_flag", "image_flag")})
            entry["first"].append(peak[batch, first])
            entry["image"].append(peak[image])
            entry["first_flag"].append(flagged[batch, first].float())
            entry["image_flag"].append(flagged[image].float())
    return pd.DataFrame([{
        "layer": layer,
        "first_token_max": float(torch.cat(e["first"]).max()),
        "image_max": float(torch.cat(e["image"]).max()),
        "image_median": float(torch.cat(e["image"]).median()),
        "first_token_flagged": float(torch.cat(e["first_flag"]).mean()),
        "image_flagged": float(torch.cat(e["image_flag"]).mean()),
    } for layer, e in sorted(rows.items())])


@torch.no_grad()
def sink_density_by_layer(
    model: nn.Module, processor: Any, images: Sequence[ImageLike], prompt: str,
    relative_thresholds: Sequence[float] = (2.0, 4.0, 8.0), batch_size: int = 8,
) -> pd.DataFrame:
    """Vision sinks per head by layer at each ``k``, and the densest head of each layer.

    Returns:
        Columns ``k, layer, mean_density`` (vision sinks per head and image), ``densest_head``
        (largest mean density over images), ``densest_head_density``, ``sparsest_head``,
        ``n_image_tokens``.
    """
    frames = []
    for start, chunk in enumerate(_chunks(images, batch_size)):
        frame = threshold_sweep(model, relative_thresholds, **model_inputs(model, processor, chunk, prompt))
        frame["sample"] += start * batch_size
        frames.append(frame)
    sweep = pd.concat(frames, ignore_index=True)
    per_head = sweep.groupby(["k", "layer", "head"]).density.mean().reset_index()
    rows = []
    for (k, layer), heads in per_head.groupby(["k", "layer"]):
        densest = heads.loc[heads.density.idxmax()]
        rows.append({"k": k, "layer": layer, "mean_density": heads.density.mean(),
                     "densest_head": int(densest["head"]), "densest_head_density": densest.density,
                     "sparsest_head": int(heads.loc[heads.density.idxmin()]["head"]),
                     "n_image_tokens": int(sweep.n_image_tokens.iloc[0])})
    return pd.DataFrame(rows)


def eah_conditions(
    layers: Sequence[int] = (0, 1, 2, 3, 15),
    heads: Sequence[str] = ("densest", "sparsest", "random"),
    sweep_layer: int = 1,
    relative_thresholds: Sequence[float] = (2.0, 4.0, 8.0),
    relative_threshold: float = 4.0,
) -> dict[str, Method]:
    """Greedy, EAH at each layer with each head rule (sinks at ``relative_threshold``), and the
    densest head of ``sweep_layer`` at each ``k`` of ``relative_thresholds``."""
    conditions: dict[str, Method] = {"greedy": resolve_method("greedy")}
    for layer in layers:
        for head in heads:
            settings = {"layer": layer, "head": head, "relative_threshold": relative_threshold}
            if head == "random":
                settings["seed"] = 0
            conditions[f"L{layer} {head}"] = resolve_method("eah", {"eah": settings})
    for k in relative_thresholds:
        if k != relative_threshold or sweep_layer not in layers:
            conditions[f"L{sweep_layer} densest k={k:g}"] = resolve_method(
                "eah", {"eah": {"layer": sweep_layer, "head": "densest", "relative_threshold": k}})
    return conditions


def eah_effects(
    setup: Any,
    conditions: dict[str, Method],
    n_captions: int | None = None,
    pope_split: str = "adversarial",
    n_questions: int | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    seed: int = 0,
) -> pd.DataFrame:
    """CHAIRs, CHAIRi, Recall, Len and POPE accuracy (one split) per condition, with 95% intervals.

    Args:
        setup: an :class:`eahlib.experiments.Setup`.
        conditions: name -> method (e.g. :func:`eah_conditions`).
        n_captions: the first ``n_captions`` of the setup's caption items (default all).
        pope_split: the POPE split answered.
        n_questions: the first questions of that split (default all).
        max_new_tokens: caption budget.
        batch_size: prompts per generate call.
        seed: bootstrap seed.

    Returns:
        One row per condition: ``CHAIRs, CHAIRi, Recall, Len, POPE_accuracy`` each with ``_low``/``_high``,
        plus ``changed`` (captions that differ from the first condition's) and the sample sizes.
    """
    from eahlib.experiments import _records, evaluate_conditions, run_condition
    from eahlib.stats import bootstrap_mean

    captions = setup.caption_items[:n_captions] if n_captions else setup.caption_items
    questions = setup.pope_items(pope_split, n_questions)
    table = evaluate_conditions(setup, conditions, captions, questions, max_new_tokens, batch_size, seed)
    outputs, lengths = {}, {}
    for name, method in conditions.items():
        files = run_condition(setup, name, method, captions, max_new_tokens=max_new_tokens, batch_size=batch_size)
        records = {r["item_id"]: r["output"] for r in _records(files["chair"], captions)}
        outputs[name] = records
        lengths[name] = bootstrap_mean([len(text.split()) for text in records.values()], seed=seed)
    reference = outputs[next(iter(conditions))]
    table["Len"] = [lengths[name].value for name in table.condition]
    table["Len_low"] = [lengths[name].low for name in table.condition]
    table["Len_high"] = [lengths[name].high for name in table.condition]
    table["changed"] = [sum(outputs[name][key] != reference[key] for key in reference) for name in table.condition]
    table = table.rename(columns=lambda c: c.replace("POPE_accuracy", f"POPE_{pope_split}"))
    return table


def interval_table(frame: pd.DataFrame, metrics: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """``value [low, high]`` strings for each metric with ``_low``/``_high`` columns; other columns kept."""
    out = frame.copy()
    for metric in metrics:
        out[metric] = [f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" for v, lo, hi
                       in zip(frame[metric], frame[f"{metric}_low"], frame[f"{metric}_high"])]
        out = out.drop(columns=[f"{metric}_low", f"{metric}_high"])
    return out


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A markdown table; integral columns printed as integers, floats with ``digits`` significant decimals."""
    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return int(value) if value.is_integer() and abs(value) < 1e6 else f"{value:.{digits}f}"
        return value

    return frame.astype(object).map(cell).to_markdown(index=False)


def write_facts(
    model_name: str, out: Any, n_images: int = 32, n_eah: int = 200, seed: int = 2468, batch_size: int = 16,
) -> Any:
    """Measure every table of the model card on a fresh shapes-world set and write CSVs plus ``facts.md``.

    Args:
        model_name: a built-in model name or a trained organism folder.
        out: output folder (the EAH runs resume there).
        n_images: images for the sink tables (the first of the set).
        n_eah: captions, and the first adversarial POPE questions, for the EAH table.
        seed: the evaluation-set seed (not a training seed).
        batch_size: prompts per call.

    Returns:
        The path of ``facts.md``.
    """
    from pathlib import Path

    from PIL import Image

    from eahlib.experiments import setup as make_setup

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = make_setup("small", model_name=model_name, n_images=n_eah, seed=seed, results_dir=out)
    model, processor = chosen.model, chosen.processor
    images = [Image.open(item.image).convert("RGB") for item in chosen.caption_items[:n_images]]
    prompt = chosen.caption_prompt
    tables = {
        "first_token_attention": first_token_attention(model, processor, images, prompt, batch_size),
        "massive_activations": massive_activations(model, processor, images, prompt, batch_size),
        "sink_density": sink_density_by_layer(model, processor, images, prompt, batch_size=batch_size),
    }
    n_layers = len(tables["first_token_attention"])
    layers = tuple(layer for layer in (0, 1, 2, 3, 15) if layer < n_layers)
    tables["eah_effects"] = eah_effects(chosen, eah_conditions(layers), n_questions=n_eah, max_new_tokens=24,
                                        batch_size=batch_size)
    title = (f"# Sink facts of {model_name} (shapes-world seed {seed}; {n_images} images for the sink tables, "
             f"{n_eah} captions and the first {n_eah} adversarial POPE questions for EAH)")
    lines = [title, ""]
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False)
        if name == "eah_effects":
            metrics = [c.removesuffix("_low") for c in frame.columns if c.endswith("_low")]
            frame = interval_table(frame, metrics).drop(columns=["method"])
        lines += [f"## {name}", "", _markdown(frame), ""]
    path = out / "facts.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
