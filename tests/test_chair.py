"""CHAIR equals the reference ``chair.py`` (OPERA, NLTK path) on the fixtures and the released captions.

The hand-made fixtures and the reference outputs live in ``tests/fixtures``; the released captions
come from the data registry (``EAH_DATA_DIR``, or downloaded and verified).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import nltk
import pytest

from eahlib import data_registry
from eahlib.bench import ChairEvaluator, ObjectVocabulary, coco_image_id, ensure_nltk_data, load_caption_records
from tests.conftest import FIXTURES

MINI = FIXTURES / "chair_coco_mini"
RELEASED = [(model, decoding) for model in ("llava-1.5", "instructblip") for decoding in ("greedy", "beam5", "ours")]
REFERENCE_METRICS = ("CHAIRs", "CHAIRi", "Recall")


@pytest.fixture(scope="module")
def mini_evaluator() -> ChairEvaluator:
    return ChairEvaluator.from_coco(MINI / "coco_annotations")


@pytest.fixture(scope="module")
def ritual_evaluator() -> ChairEvaluator:
    return ChairEvaluator.from_ground_truth("ritual")


def assert_equals_reference(result_dict: dict[str, Any], reference: dict[str, Any]) -> None:
    """Every reference field equal; ``Len`` compared as plain mean vs the reference's 0.01 * mean."""
    sentences, expected = result_dict["sentences"], reference["sentences"]
    assert len(sentences) == len(expected)
    for ours, theirs in zip(sentences, expected):
        for key, value in theirs.items():
            if key == "metrics":
                assert {name: ours["metrics"][name] for name in REFERENCE_METRICS} == {
                    name: value[name] for name in REFERENCE_METRICS
                }, ours["caption"]
            else:
                assert ours[key] == value, (key, ours["caption"])
        assert ours["metrics"]["Len"] == len(theirs["words"])
    overall, expected_overall = result_dict["overall_metrics"], reference["overall_metrics"]
    for name in REFERENCE_METRICS:
        assert overall[name] == expected_overall[name], name
    total_tokens = sum(s["metrics"]["Len"] for s in sentences)
    assert 0.01 * total_tokens / len(sentences) == expected_overall["Len"]
    assert overall["Len"] == total_tokens / len(sentences)


def pai_precision(reference: dict[str, Any]) -> float:
    """PAI's overall precision recomputed from the reference's per-caption fields."""
    recalled = sum(len(set(s["mscoco_generated_words"]) & set(s["mscoco_gt_words"])) for s in reference["sentences"])
    generated = sum(len(set(s["mscoco_generated_words"])) for s in reference["sentences"])
    return recalled / generated


def test_coco_vocabulary_equals_the_reference_one() -> None:
    vocab = ObjectVocabulary.coco()
    reference = json.loads(data_registry.fetch("chair/gt_objects/ritual_chair_pkl_vocab.json").read_text())
    reference_nodes = {word: node for word, node in reference["inverse_synonym_dict"].items() if word}
    assert dict(vocab.node_of) == reference_nodes
    assert dict(vocab.pairs) == reference["double_word_dict"]
    assert vocab.drop_seat_with_toilet


@pytest.mark.parametrize("captions", ["captions.jsonl", "captions.json"])
def test_mini_coco_equals_reference(mini_evaluator: ChairEvaluator, captions: str) -> None:
    result = mini_evaluator.evaluate(MINI / captions)
    reference = json.loads((MINI / "reference_output_opera.json").read_text())
    assert_equals_reference(result.to_dict(), reference)
    assert result.overall["Precision"] == pai_precision(reference)


@pytest.mark.parametrize(("model", "decoding"), RELEASED)
def test_released_captions_equal_reference(ritual_evaluator: ChairEvaluator, model: str, decoding: str) -> None:
    captions = data_registry.fetch(f"chair/opera_chair_eval_results/{model}/{decoding}.jsonl")
    result = ritual_evaluator.evaluate(captions)
    reference = json.loads(gzip.decompress((FIXTURES / f"chair_released_reference/{model}_{decoding}.json.gz").read_bytes()))
    assert_equals_reference(result.to_dict(), reference)
    precision, recall = pai_precision(reference), reference["overall_metrics"]["Recall"]
    assert result.overall["Precision"] == precision
    assert result.overall["F1"] == 2 * precision * recall / (precision + recall)


def test_ground_truth_round_trip(mini_evaluator: ChairEvaluator, tmp_path: Path) -> None:
    saved = mini_evaluator.save_ground_truth(tmp_path / "gt.json.gz")
    reloaded = ChairEvaluator.from_ground_truth(saved)
    from_mapping = ChairEvaluator.from_ground_truth({k: sorted(v) for k, v in mini_evaluator.ground_truth.items()})
    assert reloaded.ground_truth == mini_evaluator.ground_truth == from_mapping.ground_truth
    records = load_caption_records(MINI / "captions.jsonl")
    assert reloaded.evaluate(records).to_dict() == mini_evaluator.evaluate(records).to_dict()


def test_save_writes_the_reference_layout(mini_evaluator: ChairEvaluator, tmp_path: Path) -> None:
    result = mini_evaluator.evaluate(MINI / "captions.jsonl")
    saved = json.loads(result.save(tmp_path / "out" / "chair.json").read_text())
    assert saved == result.to_dict()
    assert len(result.to_frame()) == len(result.sentences)
    assert result.summary().splitlines()[0] == f"CHAIRs    : {100 * result.overall['CHAIRs']:.1f}"


def test_string_image_ids_fail_loudly_and_convert(mini_evaluator: ChairEvaluator) -> None:
    records = load_caption_records(MINI / "captions.jsonl")
    as_names = [{**r, "image_id": f"COCO_val2014_{r['image_id']:012d}.jpg"} for r in records]
    with pytest.raises(KeyError, match="coco_image_id"):
        mini_evaluator.evaluate(as_names)
    converted = [{**r, "image_id": coco_image_id(r["image_id"])} for r in as_names]
    assert mini_evaluator.evaluate(converted).overall == mini_evaluator.evaluate(records).overall


def test_missing_image_raises_or_is_skipped_and_counted(mini_evaluator: ChairEvaluator) -> None:
    records = load_caption_records(MINI / "captions.jsonl")
    unknown = {"image_id": 1, "caption": "A dog on a bench."}
    with pytest.raises(KeyError, match="skip_missing"):
        mini_evaluator.evaluate([*records, unknown])
    with pytest.warns(UserWarning, match="skipped 1 of"):
        skipped = mini_evaluator.evaluate([*records, unknown], skip_missing=True)
    assert skipped.skipped == 1
    assert skipped.to_dict() == mini_evaluator.evaluate(records).to_dict()


@pytest.mark.parametrize("record", [{"image_id": 900001}, {"image_id": 900001, "caption": None}, {"caption": "A dog."}])
def test_records_without_caption_or_id_raise(mini_evaluator: ChairEvaluator, record: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Record 0"):
        mini_evaluator.evaluate([record])


def test_no_mentions_gives_zero_chairi_with_a_warning(mini_evaluator: ChairEvaluator) -> None:
    with pytest.warns(UserWarning, match="No caption mentions an object"):
        result = mini_evaluator.evaluate([{"image_id": 900001, "caption": "A blurry photo of a park."}])
    assert result.overall["CHAIRi"] == result.overall["Precision"] == result.overall["F1"] == 0.0
    with pytest.raises(ValueError, match="No caption records"):
        mini_evaluator.evaluate([])


def test_custom_vocabulary_without_rules(tmp_path: Path) -> None:
    synonyms = tmp_path / "shapes.txt"
    synonyms.write_text("cube, box, block\nsphere, ball\ncone\n")
    evaluator = ChairEvaluator({"scene-1": ["cube", "cone"]}, vocabulary=synonyms)
    assert not evaluator.vocabulary.pairs and not evaluator.vocabulary.drop_seat_with_toilet
    result = evaluator.evaluate([{"image_id": "scene-1", "caption": "Two boxes and a ball beside the cube."}])
    sentence = result.sentences[0]
    assert sentence["mscoco_generated_words"] == ["cube", "sphere", "cube"]
    assert sentence["mscoco_hallucinated_words"] == [["ball", "sphere"]]
    assert result.overall["CHAIRi"] == 1 / 3
    assert result.overall["Recall"] == 1 / 2


def test_custom_vocabulary_with_rules(tmp_path: Path) -> None:
    synonyms, rules = tmp_path / "shapes.txt", tmp_path / "rules.txt"
    synonyms.write_text("cube, box\nsphere, ball\n")
    rules.write_text("[special_overrides]  # a 'beach ball' is no ball in this world\nbeach ball -> beach_ball\n")
    evaluator = ChairEvaluator({"scene-1": ["cube"]}, vocabulary=synonyms, rules=rules)
    sentence = evaluator.evaluate([{"image_id": "scene-1", "caption": "A box and a beach ball."}]).sentences[0]
    assert "beach_ball" in sentence["words"]
    assert sentence["mscoco_generated_words"] == ["cube"]
    rules.write_text("[unknown]\nfoo bar\n")
    with pytest.raises(ValueError, match="unknown sections"):
        ObjectVocabulary.from_files(synonyms, rules)


def test_missing_nltk_data_names_resource_and_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data_registry.OFFLINE_ENV, "1")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(LookupError, match=r"punkt_tab.*EAH_OFFLINE.*nltk\.downloader"):
        ensure_nltk_data()


def test_ground_truth_must_hold_node_word_lists(tmp_path: Path) -> None:
    synonyms = tmp_path / "shapes.txt"
    synonyms.write_text("cube, box\n")
    with pytest.raises(ValueError, match=r"\['box'\] are not node words"):
        ChairEvaluator({"scene-1": ["box"]}, vocabulary=synonyms)
    with pytest.raises(ValueError, match="must be a list of objects"):
        ChairEvaluator({"scene-1": "cube"}, vocabulary=synonyms)
