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
                 ChairEvaluator.from_ground_truth(GROUND_TRUTH), {"adversarial": pope_file}, tmp_path / "results")


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
