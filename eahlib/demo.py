"""Offline demo on a small LLaVA-architecture model built in code (random weights).

``python -m eahlib.demo`` prints the sink profile per layer, the head EAH picks and the greedy
continuation with and without EAH, and writes ``figures/demo_sink_density.png``. It shows the
machinery end to end in seconds on a CPU; a random model has no meaningful captions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import eahlib as eah
from eahlib.plotting import plot_density_heatmap
from eahlib.testing import tiny_llava


def run_demo(figures: Path = Path("figures"), relative_threshold: float = 1.0, seed: int = 0) -> dict[str, object]:
    """Profile, intervene and generate on the tiny model; returns the numbers it printed."""
    model, make_inputs = tiny_llava(seed)
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    inputs = make_inputs(prompts)
    profile = eah.sink_profile(model, relative_threshold=relative_threshold, **inputs)
    table = profile.to_frame().groupby(["layer", "head"]).density.mean().unstack("head")
    print(f"Mean vision-sink density per layer x head ({profile.criterion.describe()}):")
    print(table.round(2).to_string())
    with torch.no_grad():
        plain = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    with eah.enhance_attention_heads(model, layer=1, relative_threshold=relative_threshold) as enhanced:
        with_eah = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    start = inputs["input_ids"].shape[1]
    for i in range(len(prompts)):
        print(f"sample {i}: EAH source head {int(enhanced.chosen_heads[0][i])} "
              f"(densities {enhanced.densities[0][i].tolist()})")
        print(f"  plain: {plain[i, start:].tolist()}\n  EAH:   {with_eah[i, start:].tolist()}")
    figure = plot_density_heatmap(profile, figures / "demo_sink_density.png",
                                  title="Tiny random LLaVA: sink density per layer and head")
    print(f"figure written to {figure}")
    return {"density": table, "chosen_heads": enhanced.chosen_heads[0].tolist(), "figure": figure}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, default=Path("figures"), help="folder for the figure")
    parser.add_argument("--relative-threshold", type=float, default=1.0, help="k in 'k times uniform'")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run_demo(args.figures, args.relative_threshold, args.seed)


if __name__ == "__main__":
    main()
