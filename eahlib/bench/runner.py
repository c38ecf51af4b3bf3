"""Resumable, batched benchmark runs: CHAIR captioning and POPE yes/no questions.

A run turns *items* (an id, an image, a question) into JSONL records, one per item, appended
and flushed batch by batch. Every record carries the hash of the run's configuration (model,
method and its parameters, protocol). Re-running the same command skips the items already
done; a killed run loses at most the batch in flight (a half-written last line is dropped);
resuming with a different configuration is refused.

Under ``accelerate launch`` each process takes every ``world_size``-th item and writes its own
shard (``<name>.rank<k>.jsonl``); the main process merges the shards when all are done.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from eahlib.bench.chair import ChairEvaluator, ChairResult
from eahlib.bench.pope import load_pope_questions, pope_metrics
from eahlib.data_registry import coco_image_id, resolve_coco_images
from eahlib.methods import Method

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


@dataclass(frozen=True)
class Shard:
    """This process's share of the items (``rank`` of ``world_size``)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_accelerate(cls) -> Shard:
        """The shard of the current process under ``accelerate launch`` (one process otherwise)."""
        from accelerate import PartialState

        state = PartialState()
        return cls(state.process_index, state.num_processes)


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
    """Left-padded processor inputs for images and their templated prompts, on the model's device and dtype."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    opened = [i if isinstance(i, Image.Image) else Image.open(i).convert("RGB") for i in images]
    batch = processor(images=opened, text=list(prompts), return_tensors="pt", padding=True)
    parameter = next(model.parameters())
    return {k: (v.to(parameter.device, parameter.dtype) if v.is_floating_point() else v.to(parameter.device))
            for k, v in batch.items()}


def read_records(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a results file; a half-written last line (a killed run) is dropped.

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


def _finished_items(path: Path, run_hash: str) -> set[str]:
    records = read_records(path, repair=True)
    other = {r.get("config_hash") for r in records} - {run_hash}
    if other:
        raise RuntimeError(
            f"{path} holds results of another configuration (hash {sorted(map(str, other))}, this run {run_hash}). "
            "Use another output folder, or delete the file to start over."
        )
    return {r["item_id"] for r in records}


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
) -> Path:
    """Generate an answer per item and append one JSONL record each; resumable.

    Args:
        model: the vision-language model.
        processor: its processor (chat template, image processor, tokenizer).
        method: the decoding method (see :func:`eahlib.methods.resolve_method`).
        items: what to run.
        output: the JSONL results file (shards write ``<stem>.rank<k>.jsonl`` beside it); the
            configuration goes to ``<stem>.config.json``.
        config: the run's protocol; hashed together with the method's settings.
        max_new_tokens: generation length limit.
        batch_size: items per batched, left-padded generate call.
        shard: this process's share (default: all items).

    Returns:
        The merged results file.
    """
    shard = shard or Shard()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    full_config = {**config, **method.settings(), "max_new_tokens": max_new_tokens}
    run_hash = config_hash(full_config)
    target = output if shard.world_size == 1 else output.with_suffix(f".rank{shard.rank}.jsonl")
    done = _finished_items(target, run_hash) | (_finished_items(output, run_hash) if target != output else set())
    todo = [item for i, item in enumerate(items) if i % shard.world_size == shard.rank and item.item_id not in done]
    (output.parent / f"{output.stem}.config.json").write_text(
        json.dumps({"config_hash": run_hash, **full_config}, indent=2, default=str)
    )
    with target.open("a", encoding="utf-8") as sink, tqdm(total=len(todo), desc=f"{method.name} -> {output.name}") as bar:
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
    if shard.world_size > 1:
        _merge_shards(output, shard, run_hash)
    return output


def _merge_shards(output: Path, shard: Shard, run_hash: str) -> None:
    from accelerate import PartialState

    state = PartialState()
    state.wait_for_everyone()
    if state.is_main_process:
        merged = {r["item_id"]: r for r in read_records(output, repair=True)}
        for rank in range(shard.world_size):
            for record in read_records(output.with_suffix(f".rank{rank}.jsonl")):
                merged.setdefault(record["item_id"], record)
        if {r.get("config_hash") for r in merged.values()} - {run_hash}:
            raise RuntimeError(f"Shards of {output} disagree on the configuration hash; rerun in a fresh folder.")
        output.write_text("".join(json.dumps(r) + "\n" for r in merged.values()), encoding="utf-8")
    state.wait_for_everyone()


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
) -> Path:
    """Caption ``n_images`` sampled images; results in ``<output_dir>/chair_<method>.jsonl``."""
    items = chair_items(image_dir, n_images, seed, prompt)
    config = {"task": "chair", "model": model_name, "n_images": n_images, "seed": seed, "prompt": prompt}
    output = Path(output_dir) / f"chair_{method.name}.jsonl"
    return generate_records(model, processor, method, items, output, config, max_new_tokens, batch_size, shard)


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


def score_chair(results: str | os.PathLike, evaluator: ChairEvaluator) -> ChairResult:
    """CHAIR of a captioning results file."""
    records = read_records(Path(results))
    return evaluator.evaluate([{"image_id": r["image_id"], "caption": r["output"]} for r in records])


def score_pope(results: str | os.PathLike, scorer: str = "pope") -> dict[str, float | int]:
    """POPE metrics of a yes/no results file."""
    records = read_records(Path(results))
    return pope_metrics([r["label"] for r in records], [r["output"] for r in records], scorer)
