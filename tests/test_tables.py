"""Benchmark tables from hand-written results folders whose numbers are worked out by hand.

Ground truth (tests/conftest.py): image 1 dog, person; 2 cat; 3 car, bicycle; 4 chair; 5 bottle, cup.
greedy hallucinates in captions 1-3 (cat, car, dog: one of two mentions each): CHAIRs 3/5, CHAIRi 3/8.
eah hallucinates in caption 1 only (cat, one of its 7 mentions): CHAIRs 1/5, CHAIRi 1/7.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from eahlib.bench import ChairEvaluator
from eahlib.bench.pope import pope_metrics
from eahlib.bench.runner import ResultsError
from eahlib.bench.tables import method_colours, plot_results, results_table
from tests.conftest import GROUND_TRUTH

CAPTIONS = {
    "greedy": {1: "a dog and a cat", 2: "a cat on a car", 3: "a car near a dog", 4: "a chair", 5: "a bottle"},
    "eah": {1: "a dog and a cat", 2: "a cat", 3: "a car", 4: "a chair", 5: "a bottle and a cup"},
}
LABELS = ["yes", "no", "yes", "no", "yes", "no", "yes", "no"]
ANSWERS = {  # greedy: 6 of 8 right (tp 3, fp 1, tn 3, fn 1); eah: 7 of 8 (tp 4, fp 1, tn 3, fn 0)
    "greedy": ["Yes.", "Yes", "yes", "No.", "No", "no", "yes", "no"],
    "eah": ["Yes.", "Yes", "yes", "No.", "Yes", "no", "yes", "no"],
}


def write_run(folder: Path, stem: str, method: str, task: str, records: list[dict[str, Any]], **config: Any) -> Path:
    """A results file and its configuration, as the runner writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [r["item_id"] for r in records]
    (folder / f"{stem}.config.json").write_text(json.dumps({"method": method, "task": task, "item_ids": ids, **config}))
    path = folder / f"{stem}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def caption_records(method: str, images: list[int] | None = None) -> list[dict[str, Any]]:
    captions = CAPTIONS[method]
    return [{"item_id": str(i), "image_id": i, "output": captions[i]} for i in images or list(captions)]


def pope_records(method: str) -> list[dict[str, Any]]:
    return [{"item_id": str(q), "label": label, "output": answer}
            for q, (label, answer) in enumerate(zip(LABELS, ANSWERS[method]), start=1)]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    for method in ("greedy", "eah"):
        write_run(folder, f"chair_{method}", method, "chair", caption_records(method),
                  splits={"42": ["1", "2", "3"], "43": ["3", "4", "5"]})
        write_run(folder, f"pope_adversarial_{method}", method, "pope", pope_records(method), split="adversarial")
    return folder


@pytest.fixture(scope="module")
def evaluator() -> ChairEvaluator:
    return ChairEvaluator.from_ground_truth(GROUND_TRUTH)


def test_values_intervals_and_split_spread(results: Path, evaluator: ChairEvaluator) -> None:
    table = results_table(results, evaluator)
    greedy, eah = table.loc["greedy"], table.loc["eah"]
    assert (greedy.CHAIRs, greedy.CHAIRi, greedy.Recall) == pytest.approx((60.0, 37.5, 62.5))
    assert (eah.CHAIRs, eah.CHAIRi) == pytest.approx((20.0, 100 / 7))
    assert greedy.CHAIRs_low < greedy.CHAIRs < greedy.CHAIRs_high and greedy.CHAIRi_low < greedy.CHAIRi_high
    # splits {1, 2, 3} and {3, 4, 5}: greedy CHAIRs 3/3 and 1/3, CHAIRi 3/6 and 1/4 (sample std, ddof=1)
    assert greedy.n_splits == 2 and greedy.n_captions == 5  # image 3 is in both splits, pooled once
    assert greedy.CHAIRs_split_mean == pytest.approx(200 / 3)
    assert greedy.CHAIRs_split_std == pytest.approx(np.std([100, 100 / 3], ddof=1))
    assert greedy.CHAIRi_split_mean == pytest.approx(37.5) and greedy.CHAIRi_split_std == pytest.approx(np.std([50, 25], ddof=1))
    assert greedy["POPE adversarial n"] == 8 and greedy["POPE adversarial accuracy"] == pytest.approx(75.0)
    for method in ("greedy", "eah"):
        expected = pope_metrics(LABELS, ANSWERS[method])
        row = table.loc[method]
        assert row["POPE adversarial f1"] == pytest.approx(100 * expected["f1"])
        assert row["POPE adversarial f1_low"] <= row["POPE adversarial f1"] <= row["POPE adversarial f1_high"]


def test_paired_differences_from_greedy(results: Path, evaluator: ChairEvaluator) -> None:
    table = results_table(results, evaluator)
    eah = table.loc["eah"]
    assert eah["CHAIRs vs greedy"] == pytest.approx(20.0 - 60.0)
    assert eah["CHAIRi vs greedy"] == pytest.approx(100 / 7 - 37.5)
    assert eah["POPE adversarial accuracy vs greedy"] == pytest.approx(87.5 - 75.0)
    assert eah["POPE adversarial f1 vs greedy"] == pytest.approx(100 * (8 / 9 - 0.75))
    # per caption the difference is 0, -1, -1, 0, 0: a resample holds only zeros and minus ones
    assert -80.0 <= eah["CHAIRs vs greedy_low"] < eah["CHAIRs vs greedy"] < eah["CHAIRs vs greedy_high"] <= 0.0
    assert np.isnan(table.loc["greedy", "CHAIRs vs greedy"])
    assert "CHAIRs vs greedy" not in results_table(results, evaluator, reference=None).columns


def test_paired_differences_pair_items_by_id(tmp_path: Path, evaluator: ChairEvaluator) -> None:
    folder = tmp_path / "subset"
    write_run(folder, "chair_greedy", "greedy", "chair", caption_records("greedy"))
    write_run(folder, "chair_eah", "eah", "chair", caption_records("eah", [5, 3, 2]))  # other order, fewer images
    eah = results_table(folder, evaluator).loc["eah"]
    # on images 5, 3, 2 greedy has CHAIRs 2/3 and eah 0
    assert eah["CHAIRs vs greedy"] == pytest.approx(-200 / 3) and eah.n_captions == 3
    write_run(folder, "chair_greedy", "greedy", "chair", caption_records("greedy", [1, 2, 4]))
    with pytest.raises(ValueError, match=r"greedy lacks 2 of eah's \(5, 3\)"):
        results_table(folder, evaluator)


def test_a_file_with_an_item_twice_or_missing_is_not_scored(results: Path, evaluator: ChairEvaluator) -> None:
    path = results / "chair_eah.jsonl"
    path.write_text(path.read_text() + json.dumps(caption_records("eah", [2])[0]) + "\n")
    with pytest.raises(ResultsError, match=r"1 item\(s\) appear more than once: 2\b"):
        results_table(results, evaluator)
    write_run(results, "chair_eah", "eah", "chair", caption_records("eah", [1, 2, 4]),
              splits={"42": ["1", "2", "3"], "43": ["3", "4", "5"]})
    config = json.loads((results / "chair_eah.config.json").read_text())
    config["item_ids"] = ["1", "2", "3", "4", "5"]
    (results / "chair_eah.config.json").write_text(json.dumps(config))
    with pytest.raises(ResultsError, match="2 of 5 items are missing: 3, 5"):
        results_table(results, evaluator)


def test_the_figure_has_the_intervals_as_error_bars(results: Path, evaluator: ChairEvaluator, tmp_path: Path) -> None:
    import matplotlib.axes

    table = results_table(results, evaluator)
    drawn: list[dict[str, Any]] = []
    real_bar = matplotlib.axes.Axes.bar

    def recording_bar(self, x, height, *args, **kwargs):
        drawn.append({"height": np.asarray(height), "yerr": np.asarray(kwargs.get("yerr")), "label": kwargs["label"]})
        return real_bar(self, x, height, *args, **kwargs)

    with mock.patch.object(matplotlib.axes.Axes, "bar", recording_bar):
        plot_results(table, tmp_path / "fig.png", metrics=["CHAIRs", "POPE adversarial accuracy"])
    values, differences = {d["label"]: d for d in drawn[:2]}, drawn[2:]
    greedy = values["greedy"]
    assert list(greedy["height"]) == pytest.approx([60.0, 75.0])
    row = table.loc["greedy"]
    assert greedy["yerr"][:, 0] == pytest.approx([60.0 - row.CHAIRs_low, row.CHAIRs_high - 60.0])
    assert [d["label"] for d in differences] == ["eah"]  # the reference has no difference from itself
    eah = table.loc["eah"]
    assert differences[0]["height"] == pytest.approx([eah["CHAIRs vs greedy"], eah["POPE adversarial accuracy vs greedy"]])
    assert differences[0]["yerr"][0, 0] == pytest.approx(eah["CHAIRs vs greedy"] - eah["CHAIRs vs greedy_low"])
    assert (tmp_path / "fig.png").stat().st_size > 1000


@pytest.mark.parametrize("n", [3, 12, 25])
def test_every_method_of_a_table_has_its_own_colour(n: int) -> None:
    colours = [tuple(round(c, 6) for c in colour) for colour in method_colours(n)]
    assert len(colours) == n and len(set(colours)) == n
