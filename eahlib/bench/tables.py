"""Benchmark tables (methods × metrics) from a results folder, as DataFrames, markdown and plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from eahlib.bench.chair import ChairEvaluator
from eahlib.bench.runner import read_records, score_chair, score_pope

CHAIR_COLUMNS = ("CHAIRs", "CHAIRi", "Recall", "Len")
POPE_COLUMNS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def _parameters(config: dict[str, object]) -> str:
    """``"eah(layer=1, ...) + greedy()"``: every parameter in effect, from a run's config."""
    parts = str(config["method"]).split("+")
    return " + ".join(
        f"{name}({', '.join(f'{k}={v}' for k, v in dict(config.get(name, {})).items() if v is not None)})"
        for name in parts
    )


def results_table(
    results_dir: str | os.PathLike,
    evaluator: ChairEvaluator | None = None,
    pope_scorer: str = "pope",
) -> pd.DataFrame:
    """One row per method, CHAIR columns (if an evaluator is given) and POPE columns per split.

    Args:
        results_dir: a runner's output folder (``*.jsonl`` results with their ``*.config.json``).
        evaluator: CHAIR evaluator for the caption files (skipped when ``None``).
        pope_scorer: POPE answer parser (see :func:`eahlib.bench.pope_answer`).

    Returns:
        DataFrame indexed by method; metrics in percent (as papers print them) except ``Len``;
        a ``parameters`` column lists every parameter in effect.
    """
    folder = Path(results_dir)
    rows: dict[str, dict[str, object]] = {}
    for config_path in sorted(folder.glob("*.config.json")):
        config = json.loads(config_path.read_text())
        path = folder / (config_path.name.removesuffix(".config.json") + ".jsonl")
        if not read_records(path) or (config["task"] == "chair" and evaluator is None):
            continue
        row = rows.setdefault(str(config["method"]), {"parameters": _parameters(config)})
        if config["task"] == "chair":
            overall = score_chair(path, evaluator).overall
            row.update({f"CHAIR {k}": overall[k] * (1 if k == "Len" else 100) for k in CHAIR_COLUMNS})
        else:
            metrics = score_pope(path, pope_scorer)
            row.update({f"POPE {config['split']} {k}": metrics[k] * 100 for k in POPE_COLUMNS})
    if not rows:
        raise FileNotFoundError(f"No chair_*.jsonl or pope_*_*.jsonl results in {folder}.")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table[[c for c in table.columns if c != "parameters"] + ["parameters"]]


def to_markdown(table: pd.DataFrame, path: str | os.PathLike | None = None, decimals: int = 2) -> str:
    """Markdown text of a results table (written to ``path`` if given)."""
    text = table.round(decimals).to_markdown()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")
    return text


def plot_results(table: pd.DataFrame, path: str | os.PathLike, metrics: list[str] | None = None) -> Path:
    """Grouped bar chart of metrics per method, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    numeric = table.drop(columns=["parameters"]).select_dtypes("number")
    columns = metrics or [c for c in numeric.columns if not c.endswith("Len")]
    long = numeric[columns].reset_index().melt(id_vars="method", var_name="metric", value_name="value")
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 1.5 + 0.3 * len(columns) * len(numeric))), 4.5))
    sns.barplot(data=long, x="metric", y="value", hue="method", ax=ax)
    ax.set_ylabel("percent")
    ax.set_xlabel("")
    ax.set_title("Hallucination benchmarks by method")
    ax.tick_params(axis="x", rotation=20)
    ax.legend(title="method", fontsize=8, ncols=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
