"""Command line of the shapes-world organism: ``python -m eahlib.organism {train,evaluate,export}``."""

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
    train.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    train.add_argument("--out", type=Path, required=True, help="output folder (also holds the resumable checkpoint)")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (the recorded budget is for 1)")
    train.add_argument("--checkpoint-seconds", type=float, default=60.0, help="wall time between checkpoints")
    evaluate = commands.add_parser("evaluate", help="caption, answer and profile a fresh evaluation set")
    evaluate.add_argument("--n", type=int, default=400, help="number of images")
    evaluate.add_argument("--seed", type=int, default=4321, help="evaluation-set seed")
    evaluate.add_argument("--json", type=Path, required=True, help="where to write the metrics")
    evaluate.add_argument("--model", type=Path, default=None, help="trained organism folder (default: shipped)")
    evaluate.add_argument("--workdir", type=Path, default=None, help="keep the exported set here (default: temporary)")
    evaluate.add_argument("--batch-size", type=int, default=50)
    evaluate.add_argument("--threads", type=int, default=1)
    export = commands.add_parser("export", help="write an evaluation set in COCO/CHAIR/POPE formats")
    export.add_argument("--n", type=int, default=400)
    export.add_argument("--seed", type=int, default=4321)
    export.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and run the command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        from eahlib.organism.train import train_organism

        print(train_organism(args.out, seed=args.seed, threads=args.threads, checkpoint_seconds=args.checkpoint_seconds))
    elif args.command == "evaluate":
        import torch

        from eahlib.organism.evaluate import evaluate_organism
        from eahlib.organism.model import load_organism

        torch.set_num_threads(args.threads)
        model, processor = load_organism(args.model)
        results = evaluate_organism(model, processor, args.n, args.seed, args.workdir, args.batch_size)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        headline = {k: v for k, v in results.items() if isinstance(v, float)}
        print(json.dumps(headline, indent=2))
    else:
        from eahlib.organism.export import export_evaluation_set

        print(export_evaluation_set(args.n, args.seed, args.out).root)
