"""Real two-process runs of ``python -m eahlib.bench`` on the CPU (gloo), launched as a user launches them.

The tiny organism answers POPE questions and captions shapes-world images, once in this process and once
split over two processes (``accelerate launch --multi_gpu`` and ``torchrun``; both start CPU processes on
a machine without GPUs): each process writes its own shard, the shards hold disjoint items, and the merged
file equals the one-process file record for record. A process killed mid-run is resumed by a rerun
without losing or repeating an item.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eahlib.bench.__main__ import main as cli
from eahlib.bench.runner import ResultsError, read_records, read_results, shard_files
from eahlib.organism import export_evaluation_set

ROOT = Path(__file__).resolve().parents[1]
TWO_PROCESSES = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--main_process_port", "0"],
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Eight shapes-world images, their POPE-adversarial questions (16) and CHAIR annotations, as files."""
    root = tmp_path_factory.mktemp("multiprocess")
    exported = export_evaluation_set(8, seed=7, root=root / "set")
    return {"root": root, "images": exported.root / "images", "questions": exported.pope_file("adversarial"),
            "annotations": exported.annotation_dir, "vocabulary": exported.vocabulary_file}


def arguments(task: str, shapes: dict[str, Path], out: Path) -> list[str]:
    common = ["--model", "organism", "--images", str(shapes["images"]), "--out", str(out), "--device", "cpu",
              "--max-new-tokens", "6"]
    if task == "pope":
        return ["pope", *common, "--questions", str(shapes["questions"]), "--batch-size", "2"]
    return ["chair", *common, "--n-images", "5", "--splits", "2", "--batch-size", "1",
            "--annotations", str(shapes["annotations"]), "--vocabulary", str(shapes["vocabulary"])]


def launch(launcher: str, module_or_script: list[str], args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), **env}
    return subprocess.run([*TWO_PROCESSES[launcher], *module_or_script, *args], env=environment, capture_output=True,
                          text=True, timeout=300, cwd=tmp, check=False)


def shard_ids(output: Path) -> list[list[str]]:
    return [[r["item_id"] for r in read_records(path)] for path in shard_files(output)]


def printed_json(text: str) -> dict[str, Any]:
    """The scores a run prints (its JSON, without the results path)."""
    printed = json.loads(text[text.index("{"):text.rindex("}") + 1])
    printed.pop("results")
    return printed


def test_two_processes_split_pope_and_merge_into_the_one_process_file(shapes: dict[str, Path], capsys) -> None:
    cli(arguments("pope", shapes, shapes["root"] / "one"))
    single = printed_json(capsys.readouterr().out)
    done = launch("accelerate", ["-m", "eahlib.bench"], arguments("pope", shapes, shapes["root"] / "two"), shapes["root"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name = "pope_organism_pope_adversarial_greedy.jsonl"
    one, two = shapes["root"] / "one" / name, shapes["root"] / "two" / name
    questions = [r["item_id"] for r in read_records(one)]
    ranks = shard_ids(two)
    assert ranks == [questions[0::2], questions[1::2]]  # two processes, each its own share
    assert read_records(two) == read_records(one) and len(questions) == 16  # record for record
    assert printed_json(done.stdout) == single  # printed once, by rank 0
    assert "[rank 1/2] greedy -> " in done.stderr and "\r" not in done.stderr  # progress lines in a log


def test_a_killed_process_resumes_without_loss_or_duplicates(shapes: dict[str, Path], capsys) -> None:
    cli(arguments("chair", shapes, shapes["root"] / "one"))
    single = printed_json(capsys.readouterr().out)
    assert set(single["splits"]) == {"42", "43"}
    out = shapes["root"] / "killed"
    output = out / "chair_greedy.jsonl"
    killed = launch("torchrun", [str(ROOT / "tests" / "bench_killed.py")], arguments("chair", shapes, out),
                    shapes["root"], EAH_TEST_KILL_RANK="1")
    before = shard_ids(output)
    assert killed.returncode != 0 and len(before) == 2, killed.stderr[-3000:]
    assert len(before[0]) >= 1 and len(before[1]) == 1  # rank 1 died as its second batch began
    with pytest.raises(ResultsError, match="items are missing"):
        read_results(output)  # nothing half-done is scored
    rerun = launch("torchrun", ["-m", "eahlib.bench"], arguments("chair", shapes, out), shapes["root"])
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = shard_ids(output)
    assert [ids[:len(done)] for ids, done in zip(after, before)] == before  # kept, not regenerated
    everything = [item for ids in after for item in ids]
    assert sorted(everything) == sorted(set(everything))  # no item generated twice
    one = shapes["root"] / "one" / "chair_greedy.jsonl"
    assert read_records(output) == read_records(one)
    assert sorted(everything) == sorted(r["item_id"] for r in read_records(one))
    assert printed_json(rerun.stdout) == single
