"""Conditions through the runner, summarised with bootstrap intervals (tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eahlib.bench import ChairEvaluator
from eahlib.experiments import Setup, evaluate_conditions, per_caption
from eahlib.methods import resolve_method
from eahlib.testing import tiny_llava_pipeline
from tests.conftest import GROUND_TRUTH


@pytest.fixture
def tiny_setup(coco_dir: Path, pope_file: Path, tmp_path: Path) -> Setup:
    from eahlib.bench.runner import chair_items

    model, processor = tiny_llava_pipeline(0)
    items = chair_items(coco_dir, 5, seed=0, prompt="Please describe this image in detail.")
    return Setup("small", "tiny", model, processor, coco_dir, items, "Please describe this image in detail.",
                 ChairEvaluator.from_ground_truth(GROUND_TRUTH), {"adversarial": pope_file}, tmp_path / "results", seed=0)


def test_conditions_summary(tiny_setup: Setup) -> None:
    conditions = {
        "greedy": resolve_method("greedy"),
        "eah": resolve_method("eah", {"eah": {"relative_threshold": 1.0}}),
        "zero_head0": resolve_method("ablate", {"ablate": {"heads": {"1": [0]}}}),
    }
    pope = tiny_setup.pope_items("adversarial")
    summary = evaluate_conditions(tiny_setup, conditions, tiny_setup.caption_items, pope, max_new_tokens=5)
    assert summary.condition.tolist() == list(conditions)
    assert (summary.n_captions == 5).all() and (summary.n_questions == 6).all()
    for metric in ("CHAIRs", "CHAIRi", "Recall", "POPE_accuracy"):
        assert ((summary[f"{metric}_low"] <= summary[metric]) & (summary[metric] <= summary[f"{metric}_high"])).all()
    captions = per_caption(tiny_setup, tiny_setup.results_dir / "conditions" / "greedy_chair.jsonl")
    assert summary.loc[0, "CHAIRs"] == pytest.approx(captions.hallucinated.mean())
    again = evaluate_conditions(tiny_setup, conditions, tiny_setup.caption_items, pope, max_new_tokens=5)
    assert again.equals(summary)  # resumed from the results files
    with pytest.raises(ValueError, match="ablate needs heads"):
        evaluate_conditions(tiny_setup, {"bad": resolve_method("ablate")}, tiny_setup.caption_items[:1])


def test_benchmark_table_and_ablation_conditions(tiny_setup: Setup) -> None:
    from eahlib.experiments import ablation_conditions, benchmark_table, compare_captions

    methods = {"greedy": resolve_method("greedy"), "eah": resolve_method("eah", {"eah": {"relative_threshold": 1.0}}),
               "beam": resolve_method("beam", {"beam": {"num_beams": 2}})}
    splits = tiny_setup.caption_splits(3)
    assert list(splits) == ["0", "1", "2"] and splits["0"] == tiny_setup.caption_items
    splits = {name: items[:3] for name, items in splits.items()}
    table = benchmark_table(tiny_setup, methods, splits, pope_limit=4, max_new_tokens=4, limits={"beam": 2})
    assert list(table.index) == ["greedy", "eah", "beam"]
    assert {"CHAIRs", "CHAIRs_low", "Len", "POPE adversarial f1", "POPE adversarial accuracy_low", "CHAIRs_split_std",
            "CHAIRi vs greedy_high", "POPE adversarial f1 vs greedy"} <= set(table.columns)
    union = {item.item_id for items in splits.values() for item in items}
    assert table.n_captions.tolist() == [len(union), len(union), 2] and table.n_splits.tolist()[:2] == [3, 3]
    assert table["POPE adversarial n"].tolist() == [4, 4, 2]
    assert (table["POPE adversarial accuracy"] <= 100).all()
    assert table.loc["eah", "POPE adversarial accuracy vs greedy"] == pytest.approx(
        table.loc["eah", "POPE adversarial accuracy"] - table.loc["greedy", "POPE adversarial accuracy"])
    side_by_side = compare_captions(tiny_setup, tiny_setup.caption_items[:2], {"relative_threshold": 1.0}, 4)
    assert len(side_by_side) == 2 and side_by_side.eah_head.between(-1, 3).all()
    conditions = ablation_conditions(2, 4, 1, {"relative_threshold": 4.0}, zero_heads=[0])
    assert {"greedy", "L1 densest", "L1 head 3", "L1 densest k=8", "L0 densest", "L1 zero head 0",
            "L1 release preset"} <= set(conditions)
    assert conditions["L1 densest k=8"].settings()["eah"]["relative_threshold"] == 8.0
    assert conditions["L1 release preset"].settings()["eah"]["preset"] == "release"


def test_results_are_restricted_to_the_requested_items(tiny_setup: Setup) -> None:
    greedy = {"greedy": resolve_method("greedy")}
    evaluate_conditions(tiny_setup, greedy, tiny_setup.caption_items, max_new_tokens=3)
    subset = evaluate_conditions(tiny_setup, greedy, tiny_setup.caption_items[:2], max_new_tokens=3)
    assert subset.n_captions.tolist() == [2]
    results = tiny_setup.results_dir / "conditions" / "greedy_chair.jsonl"
    assert len(per_caption(tiny_setup, results)) == 5
    assert per_caption(tiny_setup, results, tiny_setup.caption_items[1:3]).image_id.tolist() == [
        int(item.item_id) for item in tiny_setup.caption_items[1:3]
    ]


def test_ablation_conditions_refuse_layers_the_model_lacks() -> None:
    from eahlib.experiments import ablation_conditions

    with pytest.raises(ValueError, match=r"Layers \[4, -1\] do not exist: the model has 4 layers, 0 to 3"):
        ablation_conditions(4, 2, 1, {}, other_layers=[0, 4, -1])
    with pytest.raises(ValueError, match=r"Layers \[7\] do not exist"):
        ablation_conditions(4, 2, 7, {}, other_layers=[])
    assert "L3 densest" in ablation_conditions(4, 2, 1, {}, other_layers=[3])
