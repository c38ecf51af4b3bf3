"""Local lmms-eval tasks from eahlib's benchmark files (no lmms-eval import: tasks can be written anywhere)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from eahlib.bench.pope import load_pope_questions
from eahlib.bench.runner import POPE_MAX_NEW_TOKENS


def pope_doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    """The image of a document written by :func:`write_pope_task`."""
    return [Image.open(doc["image_path"]).convert("RGB")]


POPE_METRICS = {"pope_accuracy": "accuracy", "pope_precision": "precision", "pope_recall": "recall",
                "pope_f1_score": "f1_score", "pope_yes_ratio": "yes_ratio"}
"""lmms-eval's POPE metrics and the suffix of their ``pope_aggregate_*`` functions."""


def write_pope_task(
    questions: str | os.PathLike,
    image_dir: str | os.PathLike,
    folder: str | os.PathLike,
    name: str,
    max_new_tokens: int = POPE_MAX_NEW_TOKENS,
    post_prompt: str = "",
) -> Path:
    """Write a local lmms-eval task (for ``--include_path folder --tasks name``) of one POPE question file.

    The documents are the questions with their image files; the prompt is the question (plus
    ``post_prompt``); scoring is lmms-eval's ``lmms_eval.tasks.pope.utils`` (exact match of the
    lower-cased, stripped answer), so eahlib's runner with ``max_new_tokens`` and scorer ``lmms``
    reproduces the number. lmms-eval's own ``pope`` task uses ``max_new_tokens=128`` and
    ``post_prompt="\\nAnswer the question using a single word or phrase."``.

    Args:
        questions: a POPE question file (see :func:`eahlib.bench.load_pope_questions`).
        image_dir: the folder of its images.
        folder: where the task's YAML and JSONL go.
        name: the task name.
        max_new_tokens: generation limit (10 in the papers' protocol).
        post_prompt: text appended to each question.

    Returns:
        The task's YAML file.
    """
    records = load_pope_questions(questions)
    image_dir = Path(image_dir).expanduser().resolve()
    missing = [r["image"] for r in records if not (image_dir / r["image"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) of {questions} are not in {image_dir}, e.g. {missing[:3]}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = (folder / f"{name}.jsonl").resolve()
    data.write_text("".join(json.dumps({
        "question_id": r["question_id"], "image": r["image"], "image_path": str(image_dir / r["image"]),
        "question": r["text"], "answer": r["label"],
    }) + "\n" for r in records), encoding="utf-8")
    pope = "lmms_eval.tasks.pope.utils"
    metrics = "".join(f"  - metric: {metric}\n    aggregation: !function {pope}.pope_aggregate_{suffix}\n"
                      "    higher_is_better: true\n" for metric, suffix in POPE_METRICS.items())
    yaml_file = folder / f"{name}.yaml"
    yaml_file.write_text(
        f"# Written by eahlib.lmms_eval_plugin.write_pope_task from {json.dumps(str(questions))}.\n"
        f"task: {json.dumps(name)}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        "doc_to_visual: !function eahlib.lmms_eval_plugin.tasks.pope_doc_to_visual\n"
        f"doc_to_text: !function {pope}.pope_doc_to_text\n"
        "doc_to_target: answer\n"
        f"generation_kwargs:\n  max_new_tokens: {int(max_new_tokens)}\n  temperature: 0\n  num_beams: 1\n  do_sample: false\n"
        f"process_results: !function {pope}.pope_process_results\n"
        f"metric_list:\n{metrics}"
        f"lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: \"\"\n    post_prompt: {json.dumps(post_prompt)}\n"
        "metadata:\n  - version: 0.0\n",
        encoding="utf-8",
    )
    return yaml_file
