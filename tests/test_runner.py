"""The benchmark runner end to end on a tiny model and synthetic COCO-named images."""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from eahlib.bench import ChairEvaluator, pope_metrics
from eahlib.bench.__main__ import main as cli
from eahlib.bench.runner import (
    ResultsError,
    Shard,
    chair_items,
    config_hash,
    generate_records,
    pope_items,
    read_records,
    read_results,
    run_chair,
    run_pope,
    score_chair,
    score_pope,
    shard_files,
)
from eahlib.bench.tables import plot_results, results_table, to_markdown
from eahlib.methods import Method, resolve_method
from eahlib.testing import tiny_llava_pipeline
from tests.conftest import GROUND_TRUTH


@contextlib.contextmanager
def counting_generate() -> Iterator[list[int]]:
    """Patch ``Method.generate`` to record the batch size of every call, in order (the generation still runs)."""
    sizes: list[int] = []
    real_generate = Method.generate

    def counting(self, model, inputs, max_new_tokens):
        sizes.append(inputs["input_ids"].shape[0])
        return real_generate(self, model, inputs, max_new_tokens)

    with mock.patch.object(Method, "generate", counting):
        yield sizes

EAH = {"eah": {"relative_threshold": 1.0}}


@pytest.fixture(scope="module")
def pipeline():
    return tiny_llava_pipeline(0)


def test_chair_end_to_end(pipeline, coco_dir: Path, tmp_path: Path) -> None:
    model, processor = pipeline
    method = resolve_method("eah", EAH)
    results = run_chair(model, processor, method, coco_dir, tmp_path / "out", "tiny", n_images=4, seed=1,
                        max_new_tokens=6, batch_size=3)
    records = read_records(results)
    assert len(records) == 4 and len({r["image_id"] for r in records}) == 4
    assert all(r["config_hash"] == records[0]["config_hash"] and r["method"] == "eah+greedy" for r in records)
    assert all(isinstance(r["output"], str) and r["eah_head"] in range(-1, 4) for r in records)
    evaluator = ChairEvaluator.from_ground_truth(GROUND_TRUTH)
    result = score_chair(results, evaluator)
    direct = evaluator.evaluate([{"image_id": r["image_id"], "caption": r["output"]} for r in records])
    assert result.overall == direct.overall and len(result.sentences) == 4
    config = json.loads((results.parent / "chair_eah+greedy.config.json").read_text())
    assert config["eah"]["relative_threshold"] == 1.0
    assert config["item_ids"] == [r["item_id"] for r in records] and config["splits"] == {"1": config["item_ids"]}


def test_chair_sample_depends_only_on_seed(coco_dir: Path) -> None:
    first = [i.item_id for i in chair_items(coco_dir, 3, seed=5)]
    assert first == [i.item_id for i in chair_items(coco_dir, 3, seed=5)]
    assert first != [i.item_id for i in chair_items(coco_dir, 3, seed=6)] or len(set(first)) == 3
    with pytest.raises(ValueError, match="fewer than n_images=9"):
        chair_items(coco_dir, 9)


def published_chair_sample(folder: Path, n_images: int, seed: int) -> list[str]:
    """OPERA's ``chair_eval.py`` (which EAH's code forks): ``random.seed(seed)`` (42, plus the
    rank), ``img_files = os.listdir(data_path)``, ``random.shuffle(img_files)``, the first 500.
    ``os.listdir`` order depends on the file system; the listing is sorted here."""
    files = sorted(os.listdir(folder))
    state = random.getstate()
    try:
        random.seed(seed)
        random.shuffle(files)
    finally:
        random.setstate(state)
    return [str(int(name.split(".jpg")[0][-6:])) for name in files[:n_images]]


def test_chair_sample_is_the_published_protocols(tmp_path: Path) -> None:
    folder = tmp_path / "val2014"
    folder.mkdir()
    for image_id in random.Random(0).sample(range(1, 600_000), 60):
        (folder / f"COCO_val2014_{image_id:012d}.jpg").touch()
    samples = {}
    for seed in (42, 0, 1, 7):
        samples[seed] = [i.item_id for i in chair_items(folder, 10, seed=seed)]
        assert samples[seed] == published_chair_sample(folder, 10, seed)
    assert len({tuple(s) for s in samples.values()}) == len(samples)  # the sample depends on the seed
    assert [i.item_id for i in chair_items(folder, 10)] == samples[42]  # published seed by default
    everything = [i.item_id for i in chair_items(folder, 60, seed=42)]
    assert everything == published_chair_sample(folder, 60, 42) and len(set(everything)) == 60


def test_pope_end_to_end(pipeline, coco_dir: Path, pope_file: Path, tmp_path: Path) -> None:
    model, processor = pipeline
    results = run_pope(model, processor, resolve_method("greedy"), pope_file, coco_dir, tmp_path, "tiny", "test",
                       max_new_tokens=3, batch_size=4)
    records = read_records(results)
    assert [r["question_id"] for r in records] == [1, 2, 3, 4, 5, 6]
    metrics = score_pope(results)
    assert metrics == pope_metrics([r["label"] for r in records], [r["output"] for r in records])
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == 6


def test_missing_images_reported_before_generation(coco_dir: Path, pope_file: Path) -> None:
    (coco_dir / "COCO_val2014_000000000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 6 images are missing"):
        pope_items(pope_file, coco_dir)


def test_interrupted_run_resumes_without_loss_or_duplicates(pipeline, coco_dir: Path, tmp_path: Path) -> None:
    model, processor = pipeline
    items = chair_items(coco_dir, 5, seed=0)
    output = tmp_path / "run.jsonl"
    method = resolve_method("greedy")
    calls = []
    real_generate = Method.generate

    def dies_on_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_generate(self, *args, **kwargs)

    with mock.patch.object(Method, "generate", dies_on_second_batch), pytest.raises(KeyboardInterrupt):
        generate_records(model, processor, method, items, output, {"task": "t"}, 4, batch_size=2)
    assert len(read_records(output)) == 2  # the first batch survived
    with output.open("a") as handle:
        handle.write('{"item_id": "half-writ')  # a write cut off by the kill
    with counting_generate() as seen:
        generate_records(model, processor, method, items, output, {"task": "t"}, 4, batch_size=2)
    records = read_records(output)
    assert sorted(r["item_id"] for r in records) == sorted(i.item_id for i in items)
    assert sum(seen) == 3  # only the unfinished items were generated
    with pytest.raises(RuntimeError, match="another configuration"):
        generate_records(model, processor, resolve_method("beam"), items, output, {"task": "t"}, 4, batch_size=2)


def test_resumed_records_equal_an_uninterrupted_run(pipeline, coco_dir: Path, tmp_path: Path) -> None:
    model, processor = pipeline
    items = chair_items(coco_dir, 4, seed=0)
    method = resolve_method("eah", EAH)
    whole = generate_records(model, processor, method, items, tmp_path / "whole.jsonl", {}, 5, batch_size=2)
    part = generate_records(model, processor, method, items[:2], tmp_path / "part.jsonl", {}, 5, batch_size=2)
    part = generate_records(model, processor, method, items, part, {}, 5, batch_size=2)
    assert read_records(whole) == read_records(part)


def test_shards_merge_into_one_file_equal_to_one_process(pipeline, coco_dir: Path, tmp_path: Path) -> None:
    """Ranks simulated one after the other in this process; tests/test_multiprocess.py launches real ones."""
    model, processor = pipeline
    items = chair_items(coco_dir, 5, seed=0)
    one = generate_records(model, processor, resolve_method("greedy"), items, tmp_path / "one.jsonl", {}, 3, 2, Shard())
    output = tmp_path / "sharded.jsonl"
    with pytest.raises(ResultsError, match=f"2 of 5 items are missing: {items[1].item_id}, {items[3].item_id}"):
        generate_records(model, processor, resolve_method("greedy"), items, output, {}, 3, 2, Shard(0, 2))
    generate_records(model, processor, resolve_method("greedy"), items, output, {}, 3, 2, Shard(1, 2))
    shard_ids = [[r["item_id"] for r in read_records(path)] for path in shard_files(output)]
    assert shard_ids == [[items[0].item_id, items[2].item_id, items[4].item_id], [items[1].item_id, items[3].item_id]]
    generate_records(model, processor, resolve_method("greedy"), items, output, {}, 3, 2, Shard(0, 2))  # the rerun
    assert read_records(output) == read_records(one)  # item order, record for record
    assert read_results(output) == read_records(one)


def test_methods_registry() -> None:
    method = resolve_method("eah+beam", {"eah": {"layer": 0}, "beam": {"num_beams": 3}})
    assert method.name == "eah+beam"
    assert method.settings()["beam"] == {"num_beams": 3} and method.settings()["eah"]["layer"] == 0
    assert resolve_method("beam+eah").name == "eah+beam"
    assert config_hash(resolve_method("greedy").settings()) != config_hash(resolve_method("beam").settings())
    with pytest.raises(ValueError, match="Unknown method"):
        resolve_method("eah+nucleus")
    with pytest.raises(ValueError, match="at most one intervention and one decoder"):
        resolve_method("greedy+beam")
    with pytest.raises(ValueError, match="Unknown parameter"):
        resolve_method("beam", {"beam": {"beams": 3}})
    with pytest.raises(ValueError, match="not part of method"):
        resolve_method("greedy", EAH)


def test_sampling_is_seeded(pipeline, coco_dir: Path, tmp_path: Path) -> None:
    model, processor = pipeline
    items = chair_items(coco_dir, 3, seed=0)
    outputs = [
        [r["output"] for r in read_records(generate_records(model, processor, resolve_method("sample"), items,
                                                            tmp_path / f"s{i}.jsonl", {}, 6, batch_size=3))]
        for i in range(2)
    ]
    assert outputs[0] == outputs[1]


def test_cli_and_tables(coco_dir: Path, pope_file: Path, tmp_path: Path, capsys) -> None:
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({str(k): v for k, v in GROUND_TRUTH.items()}))
    out = tmp_path / "results"
    common = ["--model", "tiny-random-llava", "--images", str(coco_dir), "--out", str(out), "--device", "cpu",
              "--max-new-tokens", "4", "--batch-size", "2"]
    for method in (["--method", "greedy"], ["--method", "eah", "--param", "eah.relative_threshold=1.0"]):
        cli(["chair", *common, "--n-images", "3", "--ground-truth", str(gt), *method])
        cli(["pope", *common, "--questions", str(pope_file), *method])
    printed = capsys.readouterr().out
    assert '"CHAIRs"' in printed and '"accuracy"' in printed
    table = results_table(out, ChairEvaluator.from_ground_truth(GROUND_TRUTH))
    assert list(table.index) == ["eah+greedy", "greedy"]
    assert {"CHAIRs", "CHAIRs_low", "CHAIRs vs greedy_high", "POPE coco_pope_test accuracy",
            "POPE coco_pope_test f1 vs greedy", "parameters"} <= set(table.columns)
    assert "relative_threshold=1.0" in table.loc["eah+greedy", "parameters"]
    assert "| eah+greedy" in to_markdown(table, tmp_path / "table.md")
    assert plot_results(table, tmp_path / "fig.png").stat().st_size > 1000
    cli(["table", "--results", str(out), "--ground-truth", str(gt), "--markdown", str(tmp_path / "t.md")])
    assert (tmp_path / "t.md").read_text().count("\n") == 4


def test_every_method_is_discoverable_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from eahlib.bench.__main__ import main, method_help
    from eahlib.methods import components

    registered = components()
    assert {"greedy", "beam", "sample", "eah", "ablate", "vcd", "pai", "dola"} <= set(registered)
    help_text = method_help()
    main(["methods"])
    listing = capsys.readouterr().out
    for name, component in registered.items():
        assert component.description, f"{name} has no description"
        assert f"{name}: {component.description}" in help_text
        assert f"{name}  [{component.kind}]" in listing and component.reference in listing
        for param, default in component.defaults.items():
            assert f"{param}={json.dumps(default)}" in listing


def test_unknown_method_or_parameter_is_refused_with_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from eahlib.bench.__main__ import main

    common = ["chair", "--model", "no/such-model", "--images", ".", "--out", "."]
    with pytest.raises(SystemExit):
        main([*common, "--method", "eah+opra"])
    assert "decoder ['beam'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--method", "vcd", "--param", "vcd.alfa=2"])
    assert "it takes ['alpha', 'beta', 'noise_step', 'seed']" in capsys.readouterr().err


def test_duplicates_and_missing_items_are_refused_by_name_and_a_rerun_repairs_them(
    pipeline, coco_dir: Path, pope_file: Path, tmp_path: Path
) -> None:
    from eahlib.experiments import _records

    model, processor = pipeline
    greedy = resolve_method("greedy")
    results = run_pope(model, processor, greedy, pope_file, coco_dir, tmp_path, "tiny", "test", 3, 2)
    records = read_records(results)
    broken = [records[0], *records[:3], *records[4:], records[5]]  # question 1 and 6 twice, question 4 missing
    results.write_text("".join(json.dumps(r) + "\n" for r in broken))
    message = r"2 item\(s\) appear more than once: 1, 6; 1 of 6 items are missing: 4\. Rerun"
    for score in (lambda: score_pope(results), lambda: read_results(results), lambda: results_table(tmp_path),
                  lambda: _records(results, pope_items(pope_file, coco_dir))):
        with pytest.raises(ResultsError, match=message):
            score()
    with counting_generate() as generated:
        run_pope(model, processor, greedy, pope_file, coco_dir, tmp_path, "tiny", "test", 3, 2)
    assert generated == [1]  # only question 4
    assert sorted(read_results(results), key=lambda r: r["question_id"]) == records
    assert score_pope(results) == pope_metrics([r["label"] for r in records], [r["output"] for r in records])


def test_one_process_among_several_is_refused(pipeline, coco_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model, processor = pipeline
    items = chair_items(coco_dir, 2, seed=0)
    assert Shard.from_environment("cpu") == Shard(0, 1, "cpu")  # alone: one process, the whole run
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="one of 2 processes .* but the shard says one"):
        generate_records(model, processor, resolve_method("greedy"), items, tmp_path / "r.jsonl", {}, 2, 2, Shard())
    with pytest.raises(RuntimeError, match="started 2 processes but this one joined a group of 1"):
        Shard.from_environment("cpu")
    assert not (tmp_path / "r.jsonl").exists()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # what `accelerate launch --cpu --num_processes 2` leaves
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(RuntimeError, match="started this one process only.*torchrun --nproc_per_node N"):
        Shard.from_environment("cpu")


def test_chair_splits_share_captions_and_are_scored_per_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from eahlib.organism import export_evaluation_set

    exported = export_evaluation_set(8, seed=3, root=tmp_path / "set")
    images, out = exported.root / "images", tmp_path / "out"
    common = ["chair", "--model", "organism", "--images", str(images), "--out", str(out), "--device", "cpu",
              "--n-images", "4", "--max-new-tokens", "16", "--batch-size", "3", "--annotations",
              str(exported.annotation_dir), "--vocabulary", str(exported.vocabulary_file)]
    cli(common)
    first = [r["item_id"] for r in read_records(out / "chair_greedy.jsonl")]
    capsys.readouterr()
    with counting_generate() as generated:
        cli([*common, "--splits", "3"])
    printed = json.loads(capsys.readouterr().out)
    splits = {str(seed): [i.item_id for i in chair_items(images, 4, seed)] for seed in (42, 43, 44)}
    union = list(dict.fromkeys(item for split in splits.values() for item in split))
    assert splits["42"] == first and len(union) > 4
    assert sum(generated) == len(union) - 4  # each image captioned once; split 42's captions reused
    assert [r["item_id"] for r in read_records(out / "chair_greedy.jsonl")] == union
    evaluator = ChairEvaluator.from_coco(exported.annotation_dir, vocabulary=exported.vocabulary_file)
    records = {r["item_id"]: r for r in read_records(out / "chair_greedy.jsonl")}
    expected = {seed: evaluator.evaluate([{"image_id": records[i]["image_id"], "caption": records[i]["output"]}
                                          for i in ids]).overall for seed, ids in splits.items()}
    for metric in ("CHAIRs", "CHAIRi", "Recall", "Len"):
        values = [expected[seed][metric] for seed in splits]
        assert [printed["splits"][seed][metric] for seed in splits] == pytest.approx(values), metric
        assert printed["split_mean"][metric] == pytest.approx(np.mean(values))
        assert printed["split_std"][metric] == pytest.approx(np.std(values, ddof=1))
    pooled = evaluator.evaluate([{"image_id": records[i]["image_id"], "caption": records[i]["output"]} for i in union])
    assert printed["CHAIRs"] == pytest.approx(pooled.overall["CHAIRs"])
    assert len({printed["splits"][seed]["CHAIRs"] for seed in splits}) > 1  # the splits differ


def test_one_process_resumes_from_the_shards_of_a_killed_multi_process_run(pipeline, coco_dir: Path,
                                                                           tmp_path: Path) -> None:
    model, processor = pipeline
    items = chair_items(coco_dir, 5, seed=0)
    one = generate_records(model, processor, resolve_method("greedy"), items, tmp_path / "one.jsonl", {}, 3, 2, Shard())
    output = tmp_path / "run.jsonl"
    generate_records(model, processor, resolve_method("greedy"), items, output, {}, 3, 2, Shard(1, 2))  # rank 0 died
    with counting_generate() as generated:
        generate_records(model, processor, resolve_method("greedy"), items, output, {}, 3, 2, Shard())
    assert sum(generated) == 3  # rank 0's share only; rank 1's records are taken from its shard
    assert read_records(output) == read_records(one)
