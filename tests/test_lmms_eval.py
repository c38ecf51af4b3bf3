"""eahlib inside lmms-eval: the real ``lmms-eval`` command line with ``--model eahlib`` on the model organism.

lmms-eval lives in its own venv (``make lmms-venv``, which ``make test`` runs; ``EAH_LMMS_VENV`` points
elsewhere). One run answers a local POPE task (shapes-world images and questions exported to files, no hub
access) with EAH at layer 0, which visibly changes the organism's answers; the tests then compare it with
eahlib's own runner on the same questions, scored with the parser that matches lmms-eval's.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from eahlib.bench.pope import load_pope_questions
from eahlib.bench.runner import read_records, run_pope, score_pope
from eahlib.lmms_eval_plugin import write_pope_task
from eahlib.methods import resolve_method
from eahlib.models import load_model
from eahlib.organism import export_evaluation_set

ROOT = Path(__file__).resolve().parents[1]
LMMS_VENV = Path(os.environ.get("EAH_LMMS_VENV", ROOT / ".venv-lmms"))
TASK = "eahlib_organism_pope_adversarial"
MODEL_ARGS = "pretrained=organism,method=eah,eah.layer=0,eah.head=densest"
EAH = {"eah": {"layer": 0, "head": "densest"}}
BATCH_SIZE = 4
MAX_NEW_TOKENS = 10


def lmms_venv_bin(name: str) -> Path:
    """An executable of the lmms-eval venv; fails (never skips) with how to install it."""
    path = LMMS_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"lmms-eval is not installed: {path} is missing. Run `make lmms-venv` (make test does), "
                    "or point EAH_LMMS_VENV at a venv with lmms-eval 0.7 and eahlib installed.")
    return path


def offline_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def pope_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six shapes-world images and their 12 adversarial POPE questions, as files and as an lmms-eval task."""
    root = tmp_path_factory.mktemp("lmms_pope")
    exported = export_evaluation_set(6, seed=7, root=root / "set")
    paths = {"root": root, "questions": exported.pope_file("adversarial"), "images": exported.root / "images",
             "tasks": root / "tasks", "out": root / "out"}
    write_pope_task(paths["questions"], paths["images"], paths["tasks"], TASK, max_new_tokens=MAX_NEW_TOKENS)
    return paths


@pytest.fixture(scope="module")
def lmms_run(pope_task: dict[str, Path]) -> dict[str, Any]:
    """Run the lmms-eval CLI once; its results, logged samples and eahlib's sidecar records."""
    command = [str(lmms_venv_bin("lmms-eval")), "--model", "eahlib", "--model_args", MODEL_ARGS, "--tasks", TASK,
               "--include_path", str(pope_task["tasks"]), "--batch_size", str(BATCH_SIZE), "--device", "cpu",
               "--log_samples", "--output_path", str(pope_task["out"]), "--verbosity", "WARNING"]
    done = subprocess.run(command, env=offline_env(pope_task["root"]), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = list(pope_task["out"].glob("*/*_results.json"))
    samples = list(pope_task["out"].glob(f"*/*_samples_{TASK}.jsonl"))
    records = list(pope_task["out"].glob("eahlib_eah-greedy_*.jsonl"))
    assert len(results) == len(samples) == len(records) == 1, (results, samples, records, done.stdout[-3000:])
    return {
        "results": json.loads(results[0].read_text())["results"][TASK],
        "samples": sorted(read_records(samples[0]), key=lambda s: s["doc_id"]),
        "records": sorted(read_records(records[0]), key=lambda r: r["doc_id"]),
        "config": json.loads(records[0].with_name(records[0].name.removesuffix(".jsonl") + ".config.json").read_text()),
        "stdout": done.stdout,
    }


@pytest.fixture(scope="module")
def runner_records(pope_task: dict[str, Path]) -> dict[str, Path]:
    """eahlib's own runner on the same questions: EAH as in the lmms-eval run, and greedy."""
    model, processor = load_model("organism")
    return {
        name: run_pope(model, processor, resolve_method(name, params), pope_task["questions"], pope_task["images"],
                       pope_task["root"] / "runner", "organism", "adversarial", MAX_NEW_TOKENS, BATCH_SIZE)
        for name, params in (("eah", EAH), ("greedy", {}))
    }


def test_every_question_is_answered_and_logged(lmms_run: dict[str, Any], pope_task: dict[str, Path]) -> None:
    questions = load_pope_questions(pope_task["questions"])
    assert [s["doc_id"] for s in lmms_run["samples"]] == list(range(len(questions)))
    assert [s["target"] for s in lmms_run["samples"]] == [q["label"] for q in questions]
    assert [s["doc_id"] for s in lmms_run["records"]] == list(range(len(questions)))
    assert [r["output"] for r in lmms_run["records"]] == [s["filtered_resps"] for s in lmms_run["samples"]]


def test_sidecar_records_every_parameter_and_the_head(lmms_run: dict[str, Any], runner_records: dict[str, Path]) -> None:
    config = lmms_run["config"]
    assert config["pretrained"] == "organism" and config["method"] == "eah+greedy"
    assert config["eah"] == resolve_method("eah", EAH).settings()["eah"]
    assert config["eah"]["layer"] == 0 and config["batch_size"] == BATCH_SIZE
    runner = read_records(runner_records["eah"])
    assert [r["eah_head"] for r in lmms_run["records"]] == [r["eah_head"] for r in runner]
    assert all(isinstance(r["eah_head"], int) and r["eah_head"] >= 0 for r in lmms_run["records"])


def test_the_method_changes_the_answers(lmms_run: dict[str, Any], runner_records: dict[str, Path]) -> None:
    greedy = [r["output"] for r in read_records(runner_records["greedy"])]
    assert [s["filtered_resps"] for s in lmms_run["samples"]] != greedy


def test_lmms_eval_pope_equals_eahlib_runner_with_the_lmms_scorer(
    lmms_run: dict[str, Any], runner_records: dict[str, Path]
) -> None:
    runner = read_records(runner_records["eah"])
    assert [s["filtered_resps"] for s in lmms_run["samples"]] == [r["output"] for r in runner]
    ours = score_pope(runner_records["eah"], scorer="lmms")
    theirs = lmms_run["results"]
    for metric, name in (("accuracy", "pope_accuracy"), ("precision", "pope_precision"), ("recall", "pope_recall"),
                         ("f1", "pope_f1_score")):
        assert ours[metric] == pytest.approx(theirs[f"{name},none"], abs=1e-12), metric
    # lmms-eval's exact-match parser and the reference POPE parser disagree here, so equality is not by chance.
    assert score_pope(runner_records["eah"], scorer="pope")["accuracy"] != theirs["pope_accuracy,none"]


def test_bad_model_args_are_refused_before_any_model_loads(pope_task: dict[str, Path]) -> None:
    script = """
        import json
        import eahlib.lmms_eval_plugin.model as plugin

        def no_loading(*args, **kwargs):
            raise AssertionError("a model was loaded before the arguments were checked")

        plugin.load_model = no_loading
        errors = {}
        for name, kwargs in {
            "method": {"method": "nosuch"},
            "parameter": {"method": "eah", "eah.layr": 1},
            "component": {"method": "greedy", "eah.layer": 1},
            "model_arg": {"method": "greedy", "temprature": 0.5},
            "dtype": {"method": "greedy", "dtype": "float99"},
        }.items():
            try:
                plugin.EahlibLMM(pretrained="no-such/checkpoint", **kwargs)
            except ValueError as error:
                errors[name] = str(error)
        print(json.dumps(errors))
    """
    done = subprocess.run([str(lmms_venv_bin("python")), "-c", textwrap.dedent(script)],
                          env=offline_env(pope_task["root"]), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Unknown method 'nosuch'" in errors["method"] and "'eah'" in errors["method"] and "'greedy'" in errors["method"]
    assert "['layr']" in errors["parameter"] and "'layer'" in errors["parameter"]
    assert "['eah']" in errors["component"]
    assert "['temprature']" in errors["model_arg"] and "pretrained, method" in errors["model_arg"]
    assert "float99" in errors["dtype"]


def test_two_processes_split_the_questions_and_agree_with_one(lmms_run: dict[str, Any], pope_task: dict[str, Path]) -> None:
    """``torchrun`` with two CPU processes (gloo) stands in for ``accelerate launch`` on two GPUs."""
    out = pope_task["root"] / "out_two"
    command = [str(lmms_venv_bin("python")), "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lmms_eval",
               "--model", "eahlib", "--model_args", MODEL_ARGS, "--tasks", TASK, "--include_path", str(pope_task["tasks"]),
               "--batch_size", str(BATCH_SIZE), "--log_samples", "--output_path", str(out), "--verbosity", "WARNING"]
    done = subprocess.run(command, env={**offline_env(pope_task["root"]), "ACCELERATE_USE_CPU": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shards = [read_records(path) for path in sorted(out.glob("eahlib_eah-greedy_*.rank*.jsonl"))]
    assert len(shards) == 2 and all(shards), "each process answers its own share"
    assert {r["doc_id"] for r in shards[0]}.isdisjoint(r["doc_id"] for r in shards[1])
    merged = sorted((r for shard in shards for r in shard), key=lambda r: r["doc_id"])
    assert [(r["doc_id"], r["output"], r["eah_head"]) for r in merged] == [
        (r["doc_id"], r["output"], r["eah_head"]) for r in lmms_run["records"]]
    results = json.loads(next(out.glob("*/*_results.json")).read_text())["results"][TASK]
    assert results["pope_accuracy,none"] == lmms_run["results"]["pope_accuracy,none"]
