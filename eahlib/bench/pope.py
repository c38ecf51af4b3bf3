"""POPE: polling-based object probing ("Is there a <object> in the image?"), questions and scoring.

The reference is the original POPE ``evaluate.py``: keep an answer's text before its first ``"."``,
remove commas, split on single spaces; the answer is "no" iff a token is exactly ``No``, ``not`` or
``no``, else "yes". "yes" is the positive class. Papers used other scorers, which disagree on some
answers; they are available by name:

* ``"pope"``: the original (reference).
* ``"llava"``: LLaVA's ``eval_pope.py``; its parser is the original's, verbatim.
* ``"opera"``: OPERA's ``recorder``: removes every ``.`` and ``,`` (so the whole answer counts), and
  also says "no" for ``NO`` and any token ending in ``n't``.
* ``"vcd"``: VCD's ``eval_pope.py``: looks at the *label* first. For a "yes" question the answer is
  "yes" iff its lower-cased text contains the substring ``yes``; for a "no" question it is "no" iff
  the text contains ``no`` (so ``"Nope"``, ``"not"``, ``"unknown"`` count as "no"). Its predictions
  therefore need the labels.
* ``"lmms"``: lmms-eval's ``tasks/pope/utils.py``: the lower-cased, stripped answer must be exactly
  ``yes`` or ``no``; anything else (``"Yes."``, ``"Yes, there is"``) is neither, so it is wrong and counts
  as neither a positive nor a negative prediction. (lmms-eval's own ``pope_yes_ratio`` is the share of
  "yes" *labels*; here ``yes_ratio`` stays the share of "yes" predictions.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

Answer = Literal["yes", "no", "other"]

POPE_SCORERS = ("pope", "llava", "opera", "vcd", "lmms")
QUESTION_KEYS = ("question_id", "image", "text", "label")
_LABELS = ("yes", "no")


def _pope_parser(text: str) -> Answer:
    tokens = text.split(".")[0].replace(",", "").split(" ")
    return "no" if any(token in ("No", "not", "no") for token in tokens) else "yes"


def _opera_parser(text: str) -> Answer:
    tokens = text.replace(".", "").replace(",", "").split(" ")
    negative = any(token in ("No", "not", "no", "NO") or token.endswith("n't") for token in tokens)
    return "no" if negative else "yes"


def _lmms_parser(text: str) -> Answer:
    lowered = text.lower().strip()
    return "yes" if lowered == "yes" else "no" if lowered == "no" else "other"


def _vcd_parser(text: str, label: str) -> Answer:
    lowered = text.lower().strip()
    if label == "yes":
        return "yes" if "yes" in lowered else "no"
    return "no" if "no" in lowered else "yes"


_LABEL_FREE_PARSERS: dict[str, Callable[[str], Answer]] = {
    "pope": _pope_parser,
    "llava": _pope_parser,
    "opera": _opera_parser,
    "lmms": _lmms_parser,
}


def pope_answer(text: str, scorer: str = "pope", label: str | None = None) -> Answer:
    """Read a model's free-text answer to a POPE question as "yes" or "no".

    Args:
        text: the model's answer.
        scorer: ``"pope"`` (reference), ``"llava"``, ``"opera"``, ``"vcd"`` or ``"lmms"`` (see the module docstring).
        label: the question's label, needed (only) by ``"vcd"``, whose decision depends on it.

    Returns:
        ``"yes"`` or ``"no"``; with ``"lmms"`` also ``"other"`` (an answer that is neither, always wrong).
    """
    _check_scorer(scorer)
    if not isinstance(text, str):
        raise ValueError(f"A POPE answer must be a string, got {type(text).__name__} ({text!r}).")
    if scorer != "vcd":
        return _LABEL_FREE_PARSERS[scorer](text)
    if label not in _LABELS:
        raise ValueError(f"scorer='vcd' decides by the question's label; pass label='yes' or 'no', got {label!r}.")
    return _vcd_parser(text, label)


def pope_metrics(labels: Sequence[str], answers: Sequence[str], scorer: str = "pope") -> dict[str, float | int]:
    """POPE metrics of free-text answers, "yes" being the positive class.

    Args:
        labels: the questions' labels, each ``"yes"`` or ``"no"``.
        answers: the model's answers, same order and length.
        scorer: see :func:`pope_answer`.

    Returns:
        ``accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio`` (share of "yes" predictions) and the
        counts ``tp``, ``fp``, ``tn``, ``fn``. A ratio whose denominator is 0 (e.g. precision when nothing
        is predicted "yes") is 0. An ``"other"`` answer (scorer ``"lmms"``) is wrong and in none of the counts.
    """
    _check_scorer(scorer)
    if len(labels) != len(answers):
        raise ValueError(f"Got {len(labels)} labels but {len(answers)} answers; they must pair up one to one.")
    if not labels:
        raise ValueError("No POPE answers to score.")
    bad = [(index, label) for index, label in enumerate(labels) if label not in _LABELS]
    if bad:
        raise ValueError(f"POPE labels must be 'yes' or 'no'; {len(bad)} are not, e.g. (index, label) {bad[:3]}.")
    predictions = [pope_answer(answer, scorer, label) for answer, label in zip(answers, labels)]
    pairs = list(zip(predictions, labels))
    tp, fp = pairs.count(("yes", "yes")), pairs.count(("yes", "no"))
    tn, fn = pairs.count(("no", "no")), pairs.count(("no", "yes"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / len(pairs),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": (tp + fp) / len(pairs),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def load_pope_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Load a POPE question file, JSONL or a JSON list (whatever its extension), and validate it.

    POPEv2 records (``image_id, image_name, target_object, query, label`` with ``Yes``/``No`` labels) are
    converted to the common form (``question_id`` = 1-based position); their other fields are kept.

    Args:
        path: the question file.

    Returns:
        One dict per question with at least ``question_id``, ``image``, ``text`` and ``label``
        (``"yes"``/``"no"``), in file order.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
        numbered = list(enumerate(records, start=1))
        where = "item"
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {number}: not valid JSON ({error.msg}): {line[:80]!r}") from error
        where = "line"
    questions = [_validated_question(record, path, where, number) for number, record in numbered]
    if not questions:
        raise ValueError(f"{path} holds no POPE questions.")
    return questions


def _validated_question(record: Any, path: Path, where: str, number: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"{path} {where} {number}: expected a JSON object, got {type(record).__name__}.")
    if "query" in record and "image_name" in record:
        record = {
            **record,
            "question_id": number,
            "image": Path(record["image_name"]).name,
            "text": record["query"],
            "label": str(record["label"]).lower(),
        }
    missing = [key for key in QUESTION_KEYS if key not in record]
    if missing:
        raise ValueError(f"{path} {where} {number}: missing {missing}; POPE questions need {list(QUESTION_KEYS)}.")
    if record["label"] not in _LABELS:
        raise ValueError(f"{path} {where} {number}: label must be 'yes' or 'no', got {record['label']!r}.")
    return record


def _check_scorer(scorer: str) -> None:
    if scorer not in POPE_SCORERS:
        raise ValueError(f"Unknown POPE scorer {scorer!r}; choose one of {list(POPE_SCORERS)}.")
