"""POPE answer parsing and metrics equal the five public scorers on the parser fixture; question loading.

The parser fixture lives in ``tests/fixtures``; question files come from the data registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eahlib import data_registry
from eahlib.bench import POPE_SCORERS, load_pope_questions, pope_answer, pope_metrics
from tests.conftest import FIXTURES

PARSER_FIXTURE = FIXTURES / "pope_parser"
REFERENCE_NAMES = {
    "pope": "pope_evaluate",
    "llava": "llava_eval_pope",
    "opera": "opera_recorder",
    "vcd": "vcd_eval_pope",
    "lmms": "lmms_eval_pope",
}
QUESTION_FILES = [
    *sorted(
        {
            template.format(split=split)
            for template in data_registry.POPE_QUESTION_FILES.values()
            for split in data_registry.POPE_SPLITS
        }
        & set(data_registry.available())
    ),
    "pope/popev2/annotations.json",
]


@pytest.fixture(scope="module")
def labels_and_answers() -> tuple[list[str], list[str]]:
    labels = [question["label"] for question in load_pope_questions(PARSER_FIXTURE / "labels.jsonl")]
    answers = [json.loads(line)["text"] for line in (PARSER_FIXTURE / "answers.jsonl").read_text().splitlines()]
    return labels, answers


@pytest.mark.parametrize("scorer", POPE_SCORERS)
def test_scorers_equal_their_reference(scorer: str, labels_and_answers: tuple[list[str], list[str]]) -> None:
    labels, answers = labels_and_answers
    reference = json.loads((PARSER_FIXTURE / "reference_scores.json").read_text())[REFERENCE_NAMES[scorer]]
    predictions = [pope_answer(answer, scorer, label) for answer, label in zip(answers, labels)]
    if reference["per_item_pred"] is not None:
        assert predictions == reference["per_item_pred"]
    metrics = pope_metrics(labels, answers, scorer)
    assert {name.lower(): value for name, value in reference["metrics"].items()} == {
        name.lower(): metrics[name.lower()] for name in reference["metrics"]
    }
    assert metrics["yes_ratio"] == predictions.count("yes") / len(predictions)


def test_lmms_scorer_is_right_exactly_where_lmms_eval_scores_one(labels_and_answers: tuple[list[str], list[str]]) -> None:
    labels, answers = labels_and_answers
    reference = json.loads((PARSER_FIXTURE / "reference_scores.json").read_text())["lmms_eval_pope"]["per_item_score"]
    assert [float(pope_answer(a, "lmms") == label) for a, label in zip(answers, labels)] == reference
    assert {pope_answer(a, "lmms") for a in answers} == {"yes", "no", "other"}


def test_vcd_needs_the_label() -> None:
    with pytest.raises(ValueError, match="label"):
        pope_answer("Yes", scorer="vcd")


def test_no_yes_prediction_gives_zero_precision_without_error() -> None:
    metrics = pope_metrics(["yes", "no", "no"], ["No.", "no", "There is not."])
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (0, 0, 2, 1)
    assert metrics["precision"] == metrics["f1"] == metrics["yes_ratio"] == 0.0


@pytest.mark.parametrize(
    ("labels", "answers", "scorer", "message"),
    [
        (["yes"], ["Yes"], "blip", "Unknown POPE scorer"),
        (["Yes"], ["Yes"], "pope", "must be 'yes' or 'no'"),
        (["yes", "no"], ["Yes"], "pope", "2 labels but 1 answers"),
        ([], [], "pope", "No POPE answers"),
    ],
)
def test_bad_metric_input_raises(labels: list[str], answers: list[str], scorer: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pope_metrics(labels, answers, scorer)


@pytest.mark.parametrize("name", QUESTION_FILES)
def test_every_question_file_loads(name: str) -> None:
    questions = load_pope_questions(data_registry.fetch(name))
    assert {question["label"] for question in questions} == {"yes", "no"}
    assert all(isinstance(question["text"], str) and question["image"] for question in questions)
    assert len({question["question_id"] for question in questions}) == len(questions)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"}\n{oops\n',
            "line 2: not valid JSON",
        ),
        ('{"question_id": 1, "image": "a.jpg", "label": "yes"}\n', r"line 1: missing \['text'\]"),
        ('[{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "maybe"}]', "item 1: label"),
        ("\n", "holds no POPE questions"),
    ],
)
def test_malformed_question_files_raise(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "questions.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_pope_questions(path)
