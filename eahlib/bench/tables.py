"""Benchmark tables (methods × metrics) from a results folder, as DataFrames, markdown and plots.

Every number carries its uncertainty, as the papers that EAH is compared with report it:

- a 95% bootstrap interval over the items (images, questions) of each method;
- for CHAIR run on several random splits (VHR: 5 splits of 500 images), the mean ± sample standard
  deviation (``ddof=1``) of the per-split values, beside the interval of the pooled images (each once);
- each method's **paired** difference from a reference method (greedy) over the same items, with a
  bootstrap interval that resamples the items jointly for both methods. Per-method intervals carry the
  spread between images and overlap even when one method is better on almost every image; the paired
  interval does not, so it is the one that separates two methods.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eahlib.bench.chair import ChairEvaluator, ChairResult
from eahlib.bench.pope import pope_answer, pope_metrics
from eahlib.bench.runner import read_results
from eahlib.stats import Estimate, bootstrap_paired_difference, bootstrap_statistic, ratio_of_sums

CHAIR_COLUMNS = ("CHAIRs", "CHAIRi", "Recall", "Len")
POPE_COLUMNS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
SPLIT_METRICS = ("CHAIRs", "CHAIRi")
"""CHAIR metrics reported as mean ± std over splits."""


def caption_frame(result: ChairResult) -> pd.DataFrame:
    """One row per caption: ``image_id``, ``hallucinated`` (0/1), ``n_hallucinated`` and ``n_mentions``
    (object mentions), ``recalled`` and ``n_gt`` (ground-truth objects), ``n_words``; their sums and means
    give the CHAIR scorer's overall numbers (see :func:`chair_values`)."""
    return pd.DataFrame({
        "image_id": [s["image_id"] for s in result.sentences],
        "hallucinated": [s["metrics"]["CHAIRs"] for s in result.sentences],
        "n_hallucinated": [len(s["mscoco_hallucinated_words"]) for s in result.sentences],
        "n_mentions": [len(s["mscoco_generated_words"]) for s in result.sentences],
        "recalled": [len(set(s["mscoco_gt_words"]) & set(s["mscoco_generated_words"])) for s in result.sentences],
        "n_gt": [len(s["mscoco_gt_words"]) for s in result.sentences],
        "n_words": [len(s["words"]) for s in result.sentences],
    })


def chair_values(captions: pd.DataFrame) -> dict[str, float]:
    """``CHAIRs``, ``CHAIRi``, ``Recall`` (fractions) and ``Len`` of a :func:`caption_frame`, as the scorer
    aggregates them (CHAIRi and Recall are ratios of sums over captions)."""
    column = {name: captions[name].to_numpy(float) for name in captions.columns if name != "image_id"}
    return {
        "CHAIRs": float(column["hallucinated"].mean()),
        "CHAIRi": float(ratio_of_sums(column["n_hallucinated"], column["n_mentions"])),
        "Recall": float(ratio_of_sums(column["recalled"], column["n_gt"])),
        "Len": float(column["n_words"].mean()),
    }


def split_scores(captions: pd.DataFrame, splits: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """CHAIR of each split (one row per split, ``n`` captions) from a :func:`caption_frame` indexed by item id."""
    rows = {name: {"n": len(ids), **chair_values(captions.loc[list(ids)])} for name, ids in splits.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "split"
    return frame


def answer_frame(records: Sequence[Mapping[str, Any]], scorer: str = "pope") -> pd.DataFrame:
    """One row per POPE question (indexed by item id): ``label_yes``, ``said_yes``, ``said_no`` (both 0 for
    an answer the scorer reads as neither), ``correct``."""
    answers = [pope_answer(r["output"], scorer, r["label"]) for r in records]
    labels = [r["label"] for r in records]
    return pd.DataFrame({
        "label_yes": [label == "yes" for label in labels],
        "said_yes": [answer == "yes" for answer in answers],
        "said_no": [answer == "no" for answer in answers],
        "correct": [answer == label for answer, label in zip(answers, labels)],
    }, index=pd.Index([r["item_id"] for r in records], name="item_id")).astype(float)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis)


def _f1(said_yes: np.ndarray, said_no: np.ndarray, label_yes: np.ndarray, axis: int = -1) -> np.ndarray:
    """POPE's F1 ("yes" positive) as ``2 tp / (2 tp + fp + fn)``, 0 when there is no true positive."""
    tp = np.sum(said_yes * label_yes, axis=axis)
    wrong = np.sum(said_yes * (1 - label_yes), axis=axis) + np.sum(said_no * label_yes, axis=axis)
    return 2 * tp / np.where(2 * tp + wrong == 0, 1, 2 * tp + wrong)


@dataclass(frozen=True)
class _Metric:
    """A metric with an interval: its per-item columns and its vectorised statistic."""

    name: str
    columns: tuple[str, ...]
    statistic: Any


CHAIR_INTERVALS = (_Metric("CHAIRs", ("hallucinated",), _mean),
                   _Metric("CHAIRi", ("n_hallucinated", "n_mentions"), ratio_of_sums))
POPE_INTERVALS = (_Metric("accuracy", ("correct",), _mean), _Metric("f1", ("said_yes", "said_no", "label_yes"), _f1))


@dataclass
class _Row:
    """What one method's results files hold, per item."""

    parameters: str = ""
    captions: pd.DataFrame | None = None
    splits: dict[str, list[str]] = field(default_factory=dict)
    answers: dict[str, pd.DataFrame] = field(default_factory=dict)
    pope: dict[str, dict[str, float | int]] = field(default_factory=dict)


def _parameters(config: Mapping[str, Any]) -> str:
    """``"eah(layer=1, ...) + greedy()"``: every parameter in effect, from a run's config."""
    parts = str(config["method"]).split("+")
    return " + ".join(
        f"{name}({', '.join(f'{k}={v}' for k, v in dict(config.get(name, {})).items() if v is not None)})"
        for name in parts
    )


def _interval(metric: _Metric, frame: pd.DataFrame, seed: int) -> Estimate:
    arrays = [frame[column].to_numpy(float) for column in metric.columns]
    if len(frame) < 2:
        return Estimate(float(metric.statistic(*arrays)), math.nan, math.nan)
    return bootstrap_statistic(metric.statistic, *arrays, seed=seed)


def _paired(metric: _Metric, treated: pd.DataFrame, control: pd.DataFrame, seed: int) -> Estimate:
    arrays = [[frame[column].to_numpy(float) for column in metric.columns] for frame in (treated, control)]
    if len(treated) < 2:
        value = float(metric.statistic(*arrays[0]) - metric.statistic(*arrays[1]))
        return Estimate(value, math.nan, math.nan)
    return bootstrap_paired_difference(metric.statistic, arrays[0], arrays[1], seed=seed)


def _same_items(name: str, frame: pd.DataFrame, reference: str, reference_frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """The reference's rows for the items of ``frame``, in its order; refused if the reference lacks some."""
    missing = [item for item in frame.index if item not in reference_frame.index]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{name} and {reference} must be compared on the same {what}, but {reference} lacks {len(missing)} of "
            f"{name}'s ({shown}). Run {reference} on them too, or pass another reference."
        )
    return reference_frame.loc[frame.index]


def _put(row: dict[str, Any], column: str, estimate: Estimate, scale: float = 100.0) -> None:
    row.update({column: scale * estimate.value, f"{column}_low": scale * estimate.low,
                f"{column}_high": scale * estimate.high})


def _collect(folder: Path, evaluator: ChairEvaluator | None, pope_scorer: str,
             names: Sequence[str] | None) -> dict[str, _Row]:
    rows: dict[str, _Row] = {}
    for config_file in sorted(folder.glob("*.config.json")):
        config = json.loads(config_file.read_text())
        name = str(config.get("condition") or config["method"])
        if (names is not None and name not in names) or (config["task"] == "chair" and evaluator is None):
            continue
        results = folder / (config_file.name.removesuffix(".config.json") + ".jsonl")
        records = read_results(results, config.get("item_ids"))
        row = rows.setdefault(name, _Row(_parameters(config)))
        if config["task"] == "chair":
            result = evaluator.evaluate([{"image_id": r["image_id"], "caption": r["output"]} for r in records])
            row.captions = caption_frame(result).set_index(pd.Index([r["item_id"] for r in records], name="item_id"))
            row.splits = config.get("splits") or {"all": list(row.captions.index)}
        else:
            split = str(config.get("split", "pope"))
            row.answers[split] = answer_frame(records, pope_scorer)
            row.pope[split] = pope_metrics([r["label"] for r in records], [r["output"] for r in records], pope_scorer)
    missing = [name for name in names or () if name not in rows]
    if missing:
        raise FileNotFoundError(f"No results of {missing} in {folder}.")
    if not rows:
        raise FileNotFoundError(f"No chair_*.jsonl or pope_*_*.jsonl results in {folder}.")
    return rows if names is None else {name: rows[name] for name in names}


def results_table(
    results_dir: str | os.PathLike,
    evaluator: ChairEvaluator | None = None,
    pope_scorer: str = "pope",
    reference: str | None = "greedy",
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per method: CHAIR (if an evaluator is given) and POPE per split, with their uncertainty.

    Every results file is checked first (:func:`~eahlib.bench.runner.read_results`): one with an item
    twice or an item of its run missing is refused, naming them.

    Args:
        results_dir: a runner's output folder (``*.jsonl`` results with their ``*.config.json``).
        evaluator: CHAIR evaluator for the caption files (skipped when ``None``).
        pope_scorer: POPE answer parser (see :func:`eahlib.bench.pope_answer`).
        reference: the method the paired differences are taken from (``None`` or absent: none).
        names: only these methods (or conditions), in this order (default: every one in the folder).
        seed: seed of the bootstrap resampling.

    Returns:
        DataFrame indexed by method; metrics in percent (as papers print them) except ``Len`` and counts.
        CHAIR: ``n_captions``, ``CHAIRs``, ``CHAIRi`` (each with ``_low``/``_high``: 95% bootstrap interval
        over the pooled images, each image once), ``Recall``, ``Len``; with several splits ``n_splits`` and
        ``CHAIRs_split_mean``, ``CHAIRs_split_std`` (sample std over splits), same for CHAIRi. POPE, per
        split: ``POPE <split> n``, ``accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio``, intervals of
        accuracy and f1. Paired differences from ``reference`` over the method's items:
        ``CHAIRs vs <reference>``, ``CHAIRi vs <reference>``, ``POPE <split> accuracy vs <reference>``,
        ``POPE <split> f1 vs <reference>``, each with ``_low``/``_high`` (NaN in the reference's own row).
        A ``parameters`` column lists every parameter in effect.

    Raises:
        ValueError: a method has items its reference lacks (paired differences need the same items).
    """
    folder = Path(results_dir)
    rows = _collect(folder, evaluator, pope_scorer, names)
    base = rows.get(reference) if reference is not None else None
    table: dict[str, dict[str, Any]] = {}
    for name, data in rows.items():
        row: dict[str, Any] = {}
        paired = base is not None and name != reference
        if data.captions is not None:
            captions = data.captions
            values = chair_values(captions)
            row["n_captions"] = len(captions)
            for metric in CHAIR_INTERVALS:
                _put(row, metric.name, _interval(metric, captions, seed))
            row.update({"Recall": 100 * values["Recall"], "Len": values["Len"]})
            if len(data.splits) > 1:
                per_split = split_scores(captions, data.splits)
                row["n_splits"] = len(per_split)
                for metric in SPLIT_METRICS:
                    row[f"{metric}_split_mean"] = 100 * per_split[metric].mean()
                    row[f"{metric}_split_std"] = 100 * per_split[metric].std(ddof=1)
            if paired and base.captions is not None:
                control = _same_items(name, captions, reference, base.captions, "images")
                for metric in CHAIR_INTERVALS:
                    _put(row, f"{metric.name} vs {reference}", _paired(metric, captions, control, seed))
        for split, answers in data.answers.items():
            prefix = f"POPE {split}"
            metrics = data.pope[split]
            row[f"{prefix} n"] = len(answers)
            row.update({f"{prefix} {k}": 100 * metrics[k] for k in POPE_COLUMNS})
            for metric in POPE_INTERVALS:
                estimate = _interval(metric, answers, seed)
                row.update({f"{prefix} {metric.name}_low": 100 * estimate.low,
                            f"{prefix} {metric.name}_high": 100 * estimate.high})
            if paired and split in base.answers:
                control = _same_items(name, answers, reference, base.answers[split], f"POPE {split} questions")
                for metric in POPE_INTERVALS:
                    _put(row, f"{prefix} {metric.name} vs {reference}", _paired(metric, answers, control, seed))
        row["parameters"] = data.parameters
        table[name] = row
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "method"
    return frame[[c for c in frame.columns if c != "parameters"] + ["parameters"]]


def to_markdown(table: pd.DataFrame, path: str | os.PathLike | None = None, decimals: int = 2) -> str:
    """Markdown text of a results table (written to ``path`` if given)."""
    text = table.round(decimals).to_markdown()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")
    return text


def _metric_columns(table: pd.DataFrame) -> list[str]:
    """The plain metric columns of a results table (no counts, Len, intervals, split spread or differences)."""
    numeric = table.select_dtypes("number").columns
    return [c for c in numeric if not c.endswith(("_low", "_high", "Len", " n", "_split_mean", "_split_std"))
            and not c.startswith("n_") and " vs " not in c]


def _bars(ax: Any, table: pd.DataFrame, columns: Sequence[str], labels: Sequence[str],
          colours: Mapping[Any, Any]) -> None:
    """Grouped bars (metrics on x, one colour per method) with the ``_low``/``_high`` interval as error bars."""
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(columns))
    for index, (method, row) in enumerate(table.iterrows()):
        values = np.array([row.get(c, np.nan) for c in columns], dtype=float)
        low = np.array([row.get(f"{c}_low", np.nan) for c in columns], dtype=float)
        high = np.array([row.get(f"{c}_high", np.nan) for c in columns], dtype=float)
        errors = np.nan_to_num(np.vstack([values - low, high - values]))
        ax.bar(x + (index - (len(table) - 1) / 2) * width, values, width, yerr=errors, capsize=2,
               color=colours[method], label=str(method), error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, labels, rotation=20)


def method_colours(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct colours, one per method: tab10 up to 10 methods, tab20 up to 20, evenly spaced hues beyond
    (seaborn's default palette repeats after 10, which gave two methods one colour)."""
    import seaborn as sns

    palette = "tab10" if n <= 10 else "tab20" if n <= 20 else "husl"
    return sns.color_palette(palette, n_colors=n)


def plot_results(table: pd.DataFrame, path: str | os.PathLike, metrics: list[str] | None = None) -> Path:
    """Bar chart of metrics per method with their 95% intervals as error bars, saved as PNG.

    When the table has paired differences from a reference method (``<metric> vs <reference>``), a second
    panel shows them with their intervals: a bar whose interval excludes 0 differs from the reference.

    Args:
        table: :func:`results_table`'s output (or any table with those columns).
        path: the PNG file.
        metrics: the metric columns (default: every plain metric but ``Len``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = metrics or _metric_columns(table)
    colours = dict(zip(table.index, method_colours(len(table))))  # a method keeps its colour in both panels
    differences = {c: d for c in columns for d in table.columns
                   if d.startswith(f"{c} vs ") and not d.endswith(("_low", "_high"))}
    panels = 2 if differences else 1
    width = min(14.0, max(6.0, 1.5 + 0.3 * len(columns) * len(table)))
    fig, axes = plt.subplots(1, panels, figsize=(width * (1 if panels == 1 else 1.6), 4.5), squeeze=False)
    _bars(axes[0, 0], table, columns, columns, colours)
    axes[0, 0].set_ylabel("percent (95% CI)")
    axes[0, 0].set_title("Hallucination benchmarks by method")
    axes[0, 0].legend(title="method", fontsize=8, ncols=2)
    if differences:
        reference = next(iter(differences.values())).split(" vs ", 1)[1]
        _bars(axes[0, 1], table.drop(index=reference, errors="ignore"), list(differences.values()), list(differences),
              colours)
        axes[0, 1].axhline(0, color="black", linewidth=0.8)
        axes[0, 1].set_ylabel("difference, percentage points (95% CI)")
        axes[0, 1].set_title(f"Paired difference from {reference} (same items)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
