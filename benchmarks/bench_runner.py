"""Throughput of the benchmark runner on the CPU, as ratios: two processes against one, batch 8 against batch 1.

1. Processes: the same ``python -m eahlib.bench chair`` run on the SmolLM2 organism (``--images`` shapes-world
   images, ``--max-new-tokens``, ``--batch-size``), from scratch each time, once in one process with torch's
   default threads (every core), once in one process on one thread, and once under
   ``torchrun --nproc_per_node 2`` (one thread per process, torchrun's default). Wall time of the whole
   command: start, model load, generation, merge of the shards, scoring.
2. Batching: :func:`eahlib.bench.runner.generate_records` on the same ``--batch-images`` captions with batch 8
   and batch 1 in this process; the ratio of items per second.

Each variant runs ``--repeats`` times, interleaved, and the fastest run counts (other work on a shared machine
only slows a run down). Prints the times, the machine's load average before and after, then one line::

    RESULT two_process_ratio=<t(2 processes) / t(1 process)> two_process_ratio_vs_one_thread=<...> batch8_throughput_ratio=<x>

On two idle cores each process decodes its share on its own core, so the two-process ratio should approach
0.5 plus the start-up share. On a loaded machine compare with care: a process with more torch threads than
free cores slows down badly (on a shared two-core machine with about one core taken by other work, one
two-thread process took 150-210 s where one single-thread process took 44 s), and two processes gain nothing
when only one core is free.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], **env: str) -> float:
    """Wall time of a command (which must succeed)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    start = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="organism-smollm2")
    parser.add_argument("--images", type=int, default=96,
                        help="captions per command-line run (enough that generation, not start-up, dominates)")
    parser.add_argument("--batch-images", type=int, default=32, help="captions of the batch 8 vs 1 comparison")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, interleaved; the fastest counts")
    args = parser.parse_args()

    import eahlib as eah
    from eahlib.bench.runner import Shard, chair_items, generate_records
    from eahlib.methods import resolve_method
    from eahlib.organism import CAPTION_REQUEST, export_evaluation_set

    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_evaluation_set(args.images, seed=2024, root=Path(tmp) / "set")
        eah.load_model(args.model)  # assemble and cache once, outside the timings

        def command(out: str, launcher: list[str]) -> list[str]:
            return [*launcher, "-m", "eahlib.bench", "chair", "--model", args.model, "--images",
                    str(exported.root / "images"), "--out", str(Path(tmp) / out), "--device", "cpu",
                    "--n-images", str(args.images), "--max-new-tokens", str(args.max_new_tokens), "--batch-size",
                    str(args.batch_size), "--annotations", str(exported.annotation_dir), "--vocabulary",
                    str(exported.vocabulary_file)]

        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        variants = {"one": ([sys.executable], {}), "one_thread": ([sys.executable], {"OMP_NUM_THREADS": "1"}),
                    "two": (torchrun, {"OMP_NUM_THREADS": "1"})}
        wall: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):  # interleaved, so that a burst of other work hits every variant alike
            for name, (launcher, env) in variants.items():
                wall[name].append(timed(command(f"{name}{repeat}", launcher), **env))
        one, one_thread, two = (min(wall[name]) for name in variants)
        print(f"{args.images} captions, {args.max_new_tokens} new tokens, batch {args.batch_size}, best of "
              f"{args.repeats}: one process {one:.1f} s, one process on one thread {one_thread:.1f} s, two processes "
              f"{two:.1f} s (all: { {name: [round(t, 1) for t in times] for name, times in wall.items()} })")

        model, processor = eah.load_model(args.model)
        items = chair_items(exported.root / "images", args.batch_images, 42, CAPTION_REQUEST)
        seconds: dict[int, float] = {8: float("inf"), 1: float("inf")}
        for repeat in range(args.repeats):
            for batch in (8, 1):
                start = time.perf_counter()
                generate_records(model, processor, resolve_method("greedy"), items,
                                 Path(tmp) / f"batch{batch}_{repeat}.jsonl", {}, args.max_new_tokens, batch, Shard())
                seconds[batch] = min(seconds[batch], time.perf_counter() - start)
        print(f"generate_records, {len(items)} captions, best of {args.repeats}: batch 8 {seconds[8]:.1f} s, "
              f"batch 1 {seconds[1]:.1f} s")
    print(f"load average after: {os.getloadavg()}")
    print(f"RESULT two_process_ratio={two / one:.3f} two_process_ratio_vs_one_thread={two / one_thread:.3f} "
          f"batch8_throughput_ratio={seconds[1] / seconds[8]:.3f}")


if __name__ == "__main__":
    main()
