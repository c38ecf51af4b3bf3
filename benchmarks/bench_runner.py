"""Throughput of the benchmark runner on the CPU, as ratios: two processes against one, batch 8 against batch 1.

1. Processes: the same ``python -m eahlib.bench chair`` run on the SmolLM2 organism (``--images`` shapes-world
   images, ``--max-new-tokens``, ``--batch-size``), from scratch each time, once in one process with torch's
   default threads (every core), once in one process on one thread, and once under
   ``torchrun --nproc_per_node 2`` (one thread per process, torchrun's default). Wall time of the whole
   command: start, model load, generation, merge of the shards, scoring.
2. Batching: :func:`eahlib.bench.runner.generate_records` on the same captions with batch 8 and batch 1 in
   this process; the ratio of items per second.

Prints the times, the machine's load average before and after (on a shared machine the numbers are noisy),
then one line::

    RESULT two_process_ratio=<t(2 processes) / t(1 process)> two_process_ratio_vs_one_thread=<...> batch8_throughput_ratio=<x>

Expected on two idle cores: a two-process ratio of about 0.5-0.6 (each process decodes its share on its own
core; one process gains little from a second thread on a model this small).
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
    parser.add_argument("--images", type=int, default=16, help="captions per run")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
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

        one = timed(command("one", [sys.executable]))
        one_thread = timed(command("one_thread", [sys.executable]), OMP_NUM_THREADS="1")
        two = timed(command("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2"]), OMP_NUM_THREADS="1")
        print(f"{args.images} captions, {args.max_new_tokens} new tokens, batch {args.batch_size}: one process "
              f"{one:.1f} s, one process on one thread {one_thread:.1f} s, two processes {two:.1f} s")

        model, processor = eah.load_model(args.model)
        items = chair_items(exported.root / "images", args.images, 42, CAPTION_REQUEST)
        seconds = {}
        for batch in (8, 1):
            start = time.perf_counter()
            generate_records(model, processor, resolve_method("greedy"), items, Path(tmp) / f"batch{batch}.jsonl", {},
                             args.max_new_tokens, batch, Shard())
            seconds[batch] = time.perf_counter() - start
        print(f"generate_records, {len(items)} captions: batch 8 {seconds[8]:.1f} s, batch 1 {seconds[1]:.1f} s")
    print(f"load average after: {os.getloadavg()}")
    print(f"RESULT two_process_ratio={two / one:.3f} two_process_ratio_vs_one_thread={two / one_thread:.3f} "
          f"batch8_throughput_ratio={seconds[1] / seconds[8]:.3f}")


if __name__ == "__main__":
    main()
