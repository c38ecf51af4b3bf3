"""Command line: ``python -m eahlib.bench chair|pope|table|methods ...`` (``--help`` on each).

Examples::

    python -m eahlib.bench methods          # every method, its parameters, defaults and reference
    python -m eahlib.bench chair --model llava-hf/llava-1.5-7b-hf --images ~/coco/val2014 \\
        --out results/llava --method eah --param eah.layer=1
    python -m eahlib.bench pope --model llava-hf/llava-1.5-7b-hf --images ~/coco/val2014 \\
        --out results/llava --method greedy --splits random popular adversarial
    python -m eahlib.bench table --results results/llava --markdown results/llava/table.md

Several processes split the items (one model copy each) and merge the results, on GPUs (nccl, one GPU per
process) or on the CPU (gloo)::

    torchrun --nproc_per_node 2 -m eahlib.bench pope ...
    accelerate launch --multi_gpu --num_processes 2 -m eahlib.bench pope ...   # also on a CPU-only machine
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from eahlib import data_registry
from eahlib.bench.chair import ChairEvaluator
from eahlib.bench.runner import (
    CHAIR_MAX_NEW_TOKENS,
    CHAIR_PROMPT,
    POPE_MAX_NEW_TOKENS,
    Shard,
    read_config,
    run_chair,
    run_item_ids,
    run_pope,
    score_chair,
    score_pope,
)
from eahlib.bench.tables import caption_frame, plot_results, results_table, split_scores, to_markdown
from eahlib.methods import components, resolve_method
from eahlib.models import load_model

POPE_SPLITS = ("random", "popular", "adversarial")


def parse_params(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``["eah.layer=1", "beam.num_beams=3"]`` → ``{"eah": {"layer": 1}, "beam": {"num_beams": 3}}``.

    Values are read as JSON where possible (numbers, ``null``, ``true``), else kept as strings.
    """
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        component, dot, name = key.partition(".")
        if not sep or not dot or not component or not name:
            raise SystemExit(f"--param {pair!r}: expected COMPONENT.NAME=VALUE, e.g. eah.layer=1")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(component, {})[name] = value
    return params


def method_help() -> str:
    """``--method`` help: every registered decoder and intervention with its one-line description."""
    registered = components().values()
    lines = ["a decoder, or intervention+decoder (e.g. eah+beam); parameters via --param."]
    for kind in ("decoder", "intervention"):
        lines.append(f"{kind}s: " + "; ".join(f"{c.name}: {c.description}" for c in registered if c.kind == kind))
    return " ".join(lines) + " See `python -m eahlib.bench methods`."


def methods_table() -> str:
    """Each method component: kind, description, parameters with published defaults, reference."""
    blocks = []
    for component in components().values():
        params = ", ".join(f"{name}={json.dumps(value)}" for name, value in component.defaults.items()) or "(none)"
        composes = "any decoder" if component.composes_with is None else ", ".join(component.composes_with)
        lines = [f"{component.name}  [{component.kind}]", f"    {component.description}",
                 f"    parameters: {params}", f"    reference:  {component.reference}"]
        if component.kind == "intervention":
            lines.append(f"    composes with: {composes}")
        blocks.append("\n".join(lines))
    usage = "Use as --method DECODER or --method INTERVENTION+DECODER, with --param COMPONENT.NAME=VALUE."
    return "\n\n".join(blocks) + "\n\n" + usage


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub checkpoint, local path, or 'organism'/'tiny-random-llava'")
    parser.add_argument("--images", required=True, type=Path, help="folder of COCO images (e.g. val2014/)")
    parser.add_argument("--out", required=True, type=Path, help="results folder (runs resume here)")
    parser.add_argument("--method", default="greedy", help=method_help())
    parser.add_argument("--param", action="append", default=[], metavar="COMPONENT.NAME=VALUE",
                        help="method parameter, repeatable (e.g. eah.layer=1, beam.num_beams=5)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="torch dtype of the model (auto, bfloat16, float16, float32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _load(args: argparse.Namespace, shard: Shard) -> tuple[Any, Any]:
    """The model on this process's device (``cuda:LOCAL_RANK`` when several processes share the GPUs)."""
    return load_model(args.model, dtype=args.dtype, device_map=shard.device if shard.world_size > 1 else args.device)


def _chair_summary(results: Path, evaluator: ChairEvaluator) -> dict[str, Any]:
    """Pooled CHAIR of a run and, with several splits, CHAIR per split and its mean and sample std."""
    result = score_chair(results, evaluator)
    summary: dict[str, Any] = {"results": str(results), **result.overall}
    splits = read_config(results).get("splits", {})
    if len(splits) > 1:
        captions = caption_frame(result).set_index(pd.Index(run_item_ids(results)))
        per_split = split_scores(captions, splits)
        summary["splits"] = per_split.to_dict(orient="index")
        summary["split_mean"] = per_split.drop(columns="n").mean().to_dict()
        summary["split_std"] = per_split.drop(columns="n").std(ddof=1).to_dict()
    return summary


def _evaluator(args: argparse.Namespace) -> ChairEvaluator:
    """CHAIR ground truth: an explicit cache or COCO annotation folder, else the shipped ``ritual`` cache."""
    if args.ground_truth is not None:
        return ChairEvaluator.from_ground_truth(args.ground_truth, vocabulary=args.vocabulary)
    if args.annotations is not None or args.vocabulary is not None:
        return ChairEvaluator.from_coco(args.annotations, vocabulary=args.vocabulary)
    return ChairEvaluator.from_ground_truth("ritual")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eahlib.bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("methods", help="list every method: kind, parameters with published defaults, reference")

    chair = commands.add_parser("chair", help="caption sampled images, then score CHAIR")
    _common(chair)
    chair.add_argument("--n-images", type=int, default=500)
    chair.add_argument("--seed", type=int, default=42, help="seed of the (first) image sample")
    chair.add_argument("--splits", type=int, default=1, metavar="N",
                       help="random splits of --n-images images, seeds --seed, --seed+1, ... (VHR: 5); each image is "
                            "captioned once; CHAIR is printed pooled, per split and as mean and sample std over splits")
    chair.add_argument("--prompt", default=CHAIR_PROMPT)
    chair.add_argument("--max-new-tokens", type=int, default=CHAIR_MAX_NEW_TOKENS)
    chair.add_argument("--annotations", type=Path, help="COCO 2014 annotation folder for the CHAIR ground truth")
    chair.add_argument("--ground-truth", help="ground-truth cache: 'ritual' (default, shipped with eahlib), 'maxlinn' or a .json(.gz) file")
    chair.add_argument("--vocabulary", type=Path, help="object vocabulary in synonyms-list format (default COCO)")

    pope = commands.add_parser("pope", help="answer POPE questions, then score them")
    _common(pope)
    pope.add_argument("--splits", nargs="+", default=list(POPE_SPLITS), choices=POPE_SPLITS)
    pope.add_argument("--questions-version", default="coco", help="POPE version in the data registry")
    pope.add_argument("--questions", type=Path, help="a question file (overrides --questions-version; one split)")
    pope.add_argument("--max-new-tokens", type=int, default=POPE_MAX_NEW_TOKENS)
    pope.add_argument("--scorer", default="pope", help="answer parser: pope (reference), llava, opera, vcd, lmms")

    table = commands.add_parser("table", help="methods x metrics table of a results folder")
    table.add_argument("--results", required=True, type=Path)
    table.add_argument("--annotations", type=Path)
    table.add_argument("--ground-truth")
    table.add_argument("--vocabulary", type=Path)
    table.add_argument("--no-chair", action="store_true", help="skip CHAIR (no ground truth needed)")
    table.add_argument("--scorer", default="pope")
    table.add_argument("--reference", default="greedy",
                       help="paired differences of every method from this one, over the same items (default greedy)")
    table.add_argument("--markdown", type=Path, help="write the table as markdown here")
    table.add_argument("--figure", type=Path, help="write a bar chart here (PNG)")

    args = parser.parse_args(argv)
    if args.command == "methods":
        print(methods_table())
        return
    if args.command == "table":
        evaluator = None if args.no_chair else _evaluator(args)
        frame = results_table(args.results, evaluator, args.scorer, args.reference)
        print(to_markdown(frame, args.markdown))
        if args.figure is not None:
            print(f"figure written to {plot_results(frame, args.figure)}")
        return

    try:
        method = resolve_method(args.method, parse_params(args.param))
    except ValueError as error:  # before any model is loaded
        parser.error(str(error))
    shard = Shard.from_environment(args.device.split(":")[0])
    model, processor = _load(args, shard)
    if args.command == "chair":
        evaluator = _evaluator(args)  # fail on missing ground truth before generating
        results = run_chair(model, processor, method, args.images, args.out, args.model, args.n_images, args.seed,
                            args.prompt, args.max_new_tokens, args.batch_size, shard, args.splits)
        if shard.is_main:
            print(json.dumps(_chair_summary(results, evaluator), indent=2))
        return
    splits = [args.questions.stem] if args.questions is not None else args.splits
    for split in splits:
        questions = args.questions or data_registry.pope_questions(args.questions_version, split)
        results = run_pope(model, processor, method, questions, args.images, args.out, args.model, split,
                           args.max_new_tokens, args.batch_size, shard)
        if shard.is_main:
            print(json.dumps({"results": str(results), "split": split, **score_pope(results, args.scorer)}, indent=2))


if __name__ == "__main__":
    main()
