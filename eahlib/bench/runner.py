"""Resumable, batched benchmark runs: CHAIR captioning and POPE yes/no questions.

A run turns *items* (an id, an image, a question) into JSONL records, one per item, appended
and flushed batch by batch. Every record carries the hash of the run's configuration (model,
method and its parameters, protocol); the configuration file beside the results also lists the
run's item ids. Re-running the same command skips the items already done; a killed run loses at
most the batch in flight (a half-written last line is dropped); resuming with a different
configuration is refused. Scoring reads a file through :func:`read_results`, which refuses a file
that holds an item twice or lacks one of its run's items, naming them; a rerun repairs it.

Several processes (``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N``,
on GPUs or on the CPU) split the items: process ``k`` takes every item ``i`` with ``i % N == k`` and
writes ``<name>.rank<k>.jsonl``; when all are done, rank 0 merges the shards into ``<name>.jsonl``
in item order, so the merged file equals a one-process run's record for record.

Published protocols:

- CHAIR: 500 val2014 images sampled with seed 42, "Please describe this image in detail.",
  ``max_new_tokens=512``, greedy or beam 5;
- POPE: each split (random, popular, adversarial), the question text, ``max_new_tokens=10``,
  the model's chat template.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from eahlib.bench.chair import ChairEvaluator, ChairResult
from eahlib.bench.pope import load_pope_questions, pope_metrics
from eahlib.data_registry import coco_image_id, resolve_coco_images
from eahlib.methods import Method
from eahlib.progress import progress

CHAIR_PROMPT = "Please describe this image in detail."
CHAIR_MAX_NEW_TOKENS = 512
POPE_MAX_NEW_TOKENS = 10
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Item:
    """One generation to run: an id unique in the run, an image file and a question."""

    item_id: str
    image: Path
    question: str
    fields: Mapping[str, Any] = field(default_factory=dict)


BARRIER_TIMEOUT = timedelta(hours=24)
"""How long a process that finished its share waits for the others (torch's default is 30 minutes, less
than a resumed run's slowest share may need)."""
WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]
"""Where launchers put the number of processes (torchrun / accelerate: WORLD_SIZE; mpirun: the others)."""
LAUNCH_LINES = ("`torchrun --nproc_per_node N -m eahlib.bench ...` or `accelerate launch --multi_gpu --num_processes N "
                "-m eahlib.bench ...` (both start N processes, on the CPU too)")


@dataclass(frozen=True)
class Shard:
    """This process's share of the items (``rank`` of ``world_size``) and the device it runs on.

    Item ``i`` of a run belongs to the process with ``rank == i % world_size``.
    """

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @classmethod
    def from_environment(cls, device: str | None = None) -> Shard:
        """The shard of this process under ``torchrun`` or ``accelerate launch`` (one process otherwise).

        Several processes join one process group through accelerate's ``PartialState``: gloo on the CPU,
        nccl on GPUs, where each process takes ``cuda:LOCAL_RANK``.

        Args:
            device: ``"cpu"`` or ``"cuda"`` (default: ``"cuda"`` when a GPU is visible).

        Raises:
            RuntimeError: the launcher asked for several processes but this one does not see them.
        """
        from accelerate import PartialState
        from accelerate.utils import get_int_from_env, parse_flag_from_env

        expected = get_int_from_env(WORLD_SIZE_VARIABLES, 1)
        if expected == 1 and parse_flag_from_env("ACCELERATE_USE_CPU") and "MASTER_ADDR" in os.environ:
            raise RuntimeError(
                "`accelerate launch --cpu --num_processes N` (N > 1) started this one process only: accelerate starts "
                f"several CPU processes only through mpirun. Use {LAUNCH_LINES}, or drop --num_processes."
            )
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        state = PartialState(cpu=device == "cpu", timeout=BARRIER_TIMEOUT)
        if expected > 1 and state.num_processes != expected:
            raise RuntimeError(
                f"The launcher started {expected} processes but this one joined a group of {state.num_processes} "
                f"(device {device!r}); each would run every item. Launch with {LAUNCH_LINES} and --device cpu on a "
                "machine without GPUs, and create no accelerate PartialState before the runner does."
            )
        if state.num_processes == 1:
            return cls(0, 1, device)
        return cls(state.process_index, state.num_processes, "cpu" if device == "cpu" else str(state.device))

    @property
    def is_main(self) -> bool:
        """Rank 0: merges the shards and writes the run's configuration."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether item number ``index`` of a run is this process's."""
        return index % self.world_size == self.rank

    def wait(self) -> None:
        """Wait for every process of the group (nothing to wait for in a single process)."""
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            from accelerate import PartialState

            PartialState().wait_for_everyone()


def check_shard(shard: Shard) -> None:
    """Refuse a single-process shard in a process that a launcher started as one of several."""
    from accelerate.utils import get_int_from_env

    expected = get_int_from_env(WORLD_SIZE_VARIABLES, 1)
    if expected > 1 and shard.world_size == 1:
        raise RuntimeError(
            f"The environment says this is one of {expected} processes (WORLD_SIZE), but the shard says one: every "
            "process would generate every item into the same file. Leave shard=None (the runner then takes "
            "Shard.from_environment()) or pass Shard.from_environment()."
        )


def config_hash(config: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def chat_prompt(processor: Any, question: str) -> str:
    """The model's chat-template prompt for one image and one question."""
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(
            f"{type(processor).__name__} has no chat template; load the processor of an instruction-tuned "
            "checkpoint (e.g. llava-hf/llava-1.5-7b-hf) or set processor.chat_template."
        )
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


def encode_batch(
    model: nn.Module, processor: Any, images: Sequence[str | os.PathLike | Image.Image], prompts: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Left-padded processor inputs for images and their templated prompts, on the model's device and dtype.

    The images go in nested, one list per prompt (``[[image], [image], ...]``): processors that take several
    images per prompt (Idefics3, SmolVLM) read a flat list as all images of the first prompt; the others flatten
    the nesting (transformers' ``make_flat_list_of_images``)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    opened = [i if isinstance(i, Image.Image) else Image.open(i).convert("RGB") for i in images]
    batch = processor(images=[[image] for image in opened], text=list(prompts), return_tensors="pt", padding=True)
    parameter = next(model.parameters())
    return {k: (v.to(parameter.device, parameter.dtype) if v.is_floating_point() else v.to(parameter.device))
            for k, v in batch.items()}


def read_records(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a results file as written, unchecked; a half-written last line (a killed run) is dropped.

    Args:
        path: the JSONL file (missing = no records).
        repair: also cut the half-written line from the file, so appending can resume.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]


class ResultsError(RuntimeError):
    """A results file holds an item twice or lacks an item of its run: it is not scored."""


def config_path(results: str | os.PathLike) -> Path:
    """The configuration file written beside a results file (``<stem>.config.json``)."""
    results = Path(results)
    return results.with_name(f"{results.stem}.config.json")


def read_config(results: str | os.PathLike) -> dict[str, Any]:
    """The configuration of a results file's last run (empty when there is none)."""
    path = config_path(results)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def run_item_ids(results: str | os.PathLike) -> list[str] | None:
    """The item ids of a results file's last run, in item order (``None``: not recorded)."""
    return read_config(results).get("item_ids")


def _show(ids: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def read_results(results: str | os.PathLike, item_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The records of a results file, checked: no item twice, no item of the run missing.

    Args:
        results: the JSONL file.
        item_ids: the items wanted, in the order wanted (default: every record, in file order). Every
            item of the file's last run (recorded in its configuration) must be there as well.

    Raises:
        ResultsError: an item appears twice, or a wanted item or one of the run's is missing; the message
            names them. Rerunning the same command repairs the file (it resumes: generates only the
            missing items and drops duplicates).
    """
    path = Path(results)
    records = read_records(path)
    counts = Counter(r["item_id"] for r in records)
    duplicates = [item for item, count in counts.items() if count > 1]
    expected = list(dict.fromkeys([*(run_item_ids(path) or []), *(item_ids or [])]))
    missing = [item for item in expected if item not in counts]
    if duplicates or missing:
        problems = []
        if duplicates:
            problems.append(f"{len(duplicates)} item(s) appear more than once: {_show(duplicates)}")
        if missing:
            problems.append(f"{len(missing)} of {len(expected)} items are missing: {_show(missing)}")
        raise ResultsError(
            f"{path} is not scored: {'; '.join(problems)}. Rerun the same command (or run): it resumes, generates "
            "only the missing items and drops the duplicates."
        )
    if item_ids is None:
        return records
    by_id = {r["item_id"]: r for r in records}
    return [by_id[item] for item in item_ids]


def shard_files(output: Path) -> list[Path]:
    """The per-process files (``<stem>.rank<k>.jsonl``) of a results file, by rank."""
    pattern = re.compile(re.escape(output.stem) + r"\.rank(\d+)\.jsonl")
    found = [(int(m.group(1)), path) for path in output.parent.glob("*.jsonl") if (m := pattern.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


def _checked_records(path: Path, run_hash: str, repair: bool) -> list[dict[str, Any]]:
    """A file's records, refused if another configuration wrote them; ``repair`` also drops duplicates."""
    records = read_records(path, repair=repair)
    other = {r.get("config_hash") for r in records} - {run_hash}
    if other:
        raise RuntimeError(
            f"{path} holds results of another configuration (hash {sorted(map(str, other))}, this run {run_hash}). "
            "Use another output folder, or delete the file to start over."
        )
    unique = list({r["item_id"]: r for r in reversed(records)}.values())[::-1]  # the first record of each item
    if repair and len(unique) != len(records):
        _write_records(path, unique)
    return unique


def _write_records(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Replace a JSONL file at once (a reader sees the old or the new file, never half of one)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(partial, path)


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def decode_new_tokens(processor: Any, tokens: torch.Tensor) -> list[str]:
    """Generated tokens as text, special tokens dropped, stripped."""
    return [text.strip() for text in processor.batch_decode(tokens, skip_special_tokens=True)]


def generate_records(
    model: nn.Module,
    processor: Any,
    method: Method,
    items: Sequence[Item],
    output: str | os.PathLike,
    config: Mapping[str, Any],
    max_new_tokens: int,
    batch_size: int = 8,
    shard: Shard | None = None,
    splits: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Generate an answer per item and write one JSONL record each; resumable, shardable.

    One process appends to ``output``. Several (``torchrun``, ``accelerate launch``) each generate their
    share into ``<stem>.rank<k>.jsonl``; when all are done, rank 0 merges the shards into ``output``
    (the run's items in item order, records of other items after them), so the merged file equals a
    one-process run record for record. Items already in ``output`` or in any shard file are skipped, so
    a rerun resumes after a kill, with any number of processes; duplicates are dropped on the way.

    Args:
        model: the vision-language model.
        processor: its processor (chat template, image processor, tokenizer).
        method: the decoding method (see :func:`eahlib.methods.resolve_method`).
        items: what to run (ids unique).
        output: the JSONL results file; the configuration goes to ``<stem>.config.json`` with the run's
            item ids (and ``splits``), which scoring checks the file against.
        config: the run's protocol; hashed together with the method's settings.
        max_new_tokens: generation length limit.
        batch_size: items per batched, left-padded generate call.
        shard: this process's share (default: :meth:`Shard.from_environment`).
        splits: named subsets of the items' ids (e.g. CHAIR's random splits), recorded in the configuration.

    Returns:
        The results file (complete once every process has returned).
    """
    shard = shard or Shard.from_environment(next(model.parameters()).device.type)
    check_shard(shard)
    output = Path(output)
    ids = [item.item_id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Item ids must be unique in a run; repeated: {_show([i for i, n in Counter(ids).items() if n > 1])}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    full_config = {**config, **method.settings(), "max_new_tokens": max_new_tokens}
    run_hash = config_hash(full_config)
    target = output if shard.world_size == 1 else output.with_suffix(f".rank{shard.rank}.jsonl")
    done = {r["item_id"] for r in _checked_records(output, run_hash, repair=shard.is_main)}
    for path in {*shard_files(output), target}:
        done |= {r["item_id"] for r in _checked_records(path, run_hash, repair=path == target)}
    todo = [item for index, item in enumerate(items) if shard.owns(index) and item.item_id not in done]
    if shard.is_main:
        recorded = {"config_hash": run_hash, **full_config, "item_ids": ids}
        if splits is not None:
            recorded["splits"] = {name: list(split) for name, split in splits.items()}
        partial = config_path(output).with_name(f".{config_path(output).name}.partial")
        partial.write_text(json.dumps(recorded, indent=2, default=str), encoding="utf-8")
        os.replace(partial, config_path(output))
    rank = f"[rank {shard.rank}/{shard.world_size}] " if shard.world_size > 1 else ""
    bar = progress(total=len(todo), desc=f"{rank}{method.name} -> {output.name}")
    with target.open("a", encoding="utf-8") as sink, bar:
        for batch in _batches(todo, batch_size):
            prompts = [chat_prompt(processor, item.question) for item in batch]
            inputs = encode_batch(model, processor, [item.image for item in batch], prompts)
            generation = method.generate(model, inputs, max_new_tokens)
            texts = decode_new_tokens(processor, generation.tokens)
            for item, prompt, text, extra in zip(batch, prompts, texts, generation.extras):
                record = {"item_id": item.item_id, **item.fields, "prompt": prompt, "output": text,
                          "method": method.name, "config_hash": run_hash, **extra}
                sink.write(json.dumps(record) + "\n")
            sink.flush()
            bar.update(len(batch))
    shard.wait()
    if shard.is_main:
        _merge_shards(output, ids, run_hash)
        read_results(output, ids)  # every item once: a run that returns has a complete file
    shard.wait()
    return output


def _merge_shards(output: Path, item_ids: Sequence[str], run_hash: str) -> None:
    """Fold every shard file into ``output``: the run's items in item order, other records after them."""
    shards = shard_files(output)
    if not shards:
        return
    records: dict[str, dict[str, Any]] = {}
    for path in (output, *shards):
        for record in _checked_records(path, run_hash, repair=False):
            records.setdefault(record["item_id"], record)
    run = set(item_ids)
    order = [item for item in item_ids if item in records] + [item for item in records if item not in run]
    merged = [records[item] for item in order]
    if merged != read_records(output):
        _write_records(output, merged)


def chair_items(image_dir: str | os.PathLike, n_images: int = 500, seed: int = 42, prompt: str = CHAIR_PROMPT) -> list[Item]:
    """The CHAIR protocol's items: ``n_images`` images sampled with ``seed`` from a COCO folder.

    As OPERA's ``chair_eval.py`` (forked by EAH's code) samples them: the image files shuffled
    by ``random.shuffle`` after ``random.seed(seed)``, the first ``n_images`` kept. The files are
    listed in sorted name order first (released: ``os.listdir`` order, which depends on the
    file system), so the sample depends only on the folder's content and the seed.
    """
    folder = Path(image_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist (expected e.g. COCO val2014/).")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(names) < n_images:
        raise ValueError(f"{folder} holds {len(names)} images, fewer than n_images={n_images}.")
    random.Random(seed).shuffle(names)
    chosen = names[:n_images]
    paths = resolve_coco_images(folder, chosen)
    return [Item(str(coco_image_id(p.name)), p, prompt, {"image_id": coco_image_id(p.name), "image": p.name})
            for p in paths]


def chair_splits(image_dir: str | os.PathLike, n_images: int = 500, n_splits: int = 1, seed: int = 42,
                 prompt: str = CHAIR_PROMPT) -> dict[str, list[Item]]:
    """CHAIR's random splits, by seed: ``n_splits`` samples of ``n_images`` images drawn with the seeds
    ``seed, seed + 1, ...`` (each as :func:`chair_items`). Papers report CHAIR as mean ± std over such
    splits (VHR: 5 splits of 500)."""
    if n_splits < 1:
        raise ValueError(f"n_splits must be at least 1, got {n_splits}.")
    return {str(seed + index): chair_items(image_dir, n_images, seed + index, prompt) for index in range(n_splits)}


def split_union(splits: Mapping[str, Sequence[Item]]) -> list[Item]:
    """Every item of the splits once, in split order: an image that several splits share is generated once."""
    return list({item.item_id: item for split in splits.values() for item in split}.values())


def pope_items(questions: str | os.PathLike, image_dir: str | os.PathLike) -> list[Item]:
    """The POPE protocol's items for one question file; all images are checked first."""
    records = load_pope_questions(questions)
    paths = resolve_coco_images(image_dir, [r["image"] for r in records])
    return [Item(str(r["question_id"]), path, r["text"], {"question_id": r["question_id"], "image": r["image"],
                                                          "label": r["label"]})
            for r, path in zip(records, paths)]


def run_chair(
    model: nn.Module,
    processor: Any,
    method: Method,
    image_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_name: str,
    n_images: int = 500,
    seed: int = 42,
    prompt: str = CHAIR_PROMPT,
    max_new_tokens: int = CHAIR_MAX_NEW_TOKENS,
    batch_size: int = 8,
    shard: Shard | None = None,
    n_splits: int = 1,
) -> Path:
    """Caption the images of ``n_splits`` random splits (see :func:`chair_splits`); results in
    ``<output_dir>/chair_<method>.jsonl``.

    A caption does not depend on the split that drew its image, so every image is captioned once,
    whatever the number of splits, and a run with more splits (or another seed) reuses the captions
    it shares with earlier runs. The splits are recorded in the configuration for scoring.
    """
    splits = chair_splits(image_dir, n_images, n_splits, seed, prompt)
    config = {"task": "chair", "model": model_name, "prompt": prompt}
    output = Path(output_dir) / f"chair_{method.name}.jsonl"
    split_ids = {name: [item.item_id for item in items] for name, items in splits.items()}
    return generate_records(model, processor, method, split_union(splits), output, config, max_new_tokens,
                            batch_size, shard, split_ids)


def run_pope(
    model: nn.Module,
    processor: Any,
    method: Method,
    questions: str | os.PathLike,
    image_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_name: str,
    split: str,
    max_new_tokens: int = POPE_MAX_NEW_TOKENS,
    batch_size: int = 8,
    shard: Shard | None = None,
) -> Path:
    """Answer one POPE question file; results in ``<output_dir>/pope_<split>_<method>.jsonl``."""
    items = pope_items(questions, image_dir)
    questions_hash = hashlib.sha256(Path(questions).read_bytes()).hexdigest()[:12]
    config = {"task": "pope", "model": model_name, "split": split, "questions_sha256": questions_hash}
    output = Path(output_dir) / f"pope_{split}_{method.name}.jsonl"
    return generate_records(model, processor, method, items, output, config, max_new_tokens, batch_size, shard)


def score_chair(results: str | os.PathLike, evaluator: ChairEvaluator,
                item_ids: Sequence[str] | None = None) -> ChairResult:
    """CHAIR of a captioning results file: the captions of its last run (every split, each image once) or
    of ``item_ids``; checked first (see :func:`read_results`)."""
    records = read_results(results, item_ids if item_ids is not None else run_item_ids(results))
    return evaluator.evaluate([{"image_id": r["image_id"], "caption": r["output"]} for r in records])


def score_pope(results: str | os.PathLike, scorer: str = "pope",
               item_ids: Sequence[str] | None = None) -> dict[str, float | int]:
    """POPE metrics of a yes/no results file: its last run's answers or those of ``item_ids``; checked
    first (see :func:`read_results`)."""
    records = read_results(results, item_ids if item_ids is not None else run_item_ids(results))
    return pope_metrics([r["label"] for r in records], [r["output"] for r in records], scorer)
