"""The shapes-world organism: generator, benchmark exports, processor, resumable training, shipped model."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from eahlib.bench import ChairEvaluator, load_pope_questions, pope_metrics
from eahlib.models import image_token_mask, model_family
from eahlib.organism import (
    CAPTION_REQUEST,
    CLASS_NAMES,
    DEFAULT_PATH,
    PARTNER,
    POPE_SPLITS,
    build_processor,
    conversation,
    existence_question,
    export_evaluation_set,
    load_organism,
    make_scene,
    prompt,
)
from eahlib.organism.evaluate import evaluate_organism
from eahlib.organism.train import OrganismTrainer, Recipe, Stage, encode_batch, pixel_batch
from eahlib.organism.world import caption_for, sample_object_names, scene_rng


def test_scenes_are_a_function_of_seed_and_index() -> None:
    first, again, other = make_scene(3, 5), make_scene(3, 5), make_scene(4, 5)
    assert first.objects == again.objects
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    assert first.object_patches.shape == (8, 8) and first.object_patches.any()


def test_world_has_zipf_frequencies_and_partner_prior() -> None:
    scenes = [sample_object_names(scene_rng(11, i)) for i in range(3000)]
    frequency = Counter(name for names in scenes for name in names)
    assert frequency.most_common(1)[0][0] == "cake"
    with_object = [names for names in scenes if "ball" in names]
    partner_rate = np.mean([PARTNER["ball"] in names for names in with_object])
    other_rate = np.mean(["tent" in names for names in with_object])
    assert partner_rate > 0.6 > other_rate
    assert all(1 <= len(names) <= 4 and len(set(names)) == len(names) for names in scenes)


def test_captions_and_questions_reject_unknown_objects() -> None:
    assert caption_for(["tree", "sun"]) == "a sun and a tree ."
    with pytest.raises(ValueError, match="distinct known object names"):
        caption_for(["dog"])
    with pytest.raises(ValueError, match="Unknown object 'dog'"):
        existence_question("dog")


def test_processor_template_matches_training_encoding_and_round_trips(tmp_path: Path) -> None:
    processor = build_processor()
    scene = make_scene(0, 1)
    question = existence_question(scene.names[0])
    text = processor.apply_chat_template(conversation(question), add_generation_prompt=True)
    assert text == prompt(question)
    inputs = processor(images=scene.image, text=prompt("Is there a " + scene.names[0] + " in the image?"),
                       return_tensors="pt")
    expected = encode_batch(processor, [[(prompt(question).replace("<image>", " ".join(["<image>"] * 64)), False)]])
    assert torch.equal(inputs["input_ids"], expected["input_ids"])
    assert torch.equal(inputs["pixel_values"], pixel_batch([np.asarray(scene.image)]))
    processor.save_pretrained(tmp_path)
    reloaded = LlavaProcessor.from_pretrained(tmp_path)
    assert torch.equal(reloaded(images=scene.image, text=prompt(question), return_tensors="pt")["input_ids"],
                       inputs["input_ids"])


def test_export_is_read_back_by_the_project_scorers(tmp_path: Path) -> None:
    evaluation = export_evaluation_set(30, seed=9, root=tmp_path)
    assert min(p.name for p in (tmp_path / "images").iterdir()) == "COCO_val2014_000000000001.png"
    evaluator = ChairEvaluator.from_coco(evaluation.annotation_dir, vocabulary=evaluation.vocabulary_file)
    truth = [{"image_id": i, "caption": s.caption()} for i, s in zip(evaluation.image_ids, evaluation.scenes)]
    perfect = evaluator.evaluate(truth).overall
    assert perfect["CHAIRs"] == 0.0 and perfect["Recall"] == 1.0
    scene = evaluation.scenes[0]
    intruder = next(name for name in CLASS_NAMES if name not in scene.names)
    wrong = evaluator.evaluate([{"image_id": 1, "caption": caption_for([*scene.names, intruder])}])
    assert wrong.overall["CHAIRs"] == 1.0
    assert wrong.sentences[0]["mscoco_hallucinated_words"] == [[intruder, intruder]]
    negatives = {}
    for split in POPE_SPLITS:
        questions = load_pope_questions(evaluation.pope_file(split))
        labels = [q["label"] for q in questions]
        assert len(questions) == 60 and labels.count("yes") == 30
        assert pope_metrics(labels, labels)["accuracy"] == 1.0
        negatives[split] = [q["text"].split()[3] for q in questions if q["label"] == "no"]
    assert all(p != a for p, a in zip(negatives["popular"], negatives["adversarial"]))
    for name, scene in zip(negatives["adversarial"], evaluation.scenes):
        absent_partners = {PARTNER[present] for present in scene.names} - set(scene.names)
        assert name in absent_partners or not absent_partners
    with pytest.raises(ValueError, match="Unknown POPE split"):
        evaluation.pope_file("hard")


def test_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = replace(Recipe(seed=5), stages=(Stage("vision", 3, 4, 1e-3, 0.0), Stage("text", 2, 4, 1e-3, 0.0),
                                             Stage("full", 3, 2, 1e-3, 0.0)))
    straight = OrganismTrainer(recipe, tmp_path / "straight").run()
    original = OrganismTrainer._stage_setup

    def crash_in_full_stage(self: OrganismTrainer, stage: Stage):
        groups, loss = original(self, stage)
        calls = iter(range(10))

        def crashing(rng: np.random.Generator) -> torch.Tensor:
            if stage.name == "full" and next(calls) == 2:
                raise KeyboardInterrupt
            return loss(rng)

        return groups, crashing

    monkeypatch.setattr(OrganismTrainer, "_stage_setup", crash_in_full_stage)
    with pytest.raises(KeyboardInterrupt):
        OrganismTrainer(recipe, tmp_path / "resumed", checkpoint_seconds=0.0).run()
    monkeypatch.setattr(OrganismTrainer, "_stage_setup", original)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    resumed = OrganismTrainer(recipe, tmp_path / "resumed").run()
    assert not (resumed / "checkpoint.pt").exists()
    a, _ = load_organism(straight)
    b, _ = load_organism(resumed)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    (tmp_path / "other").mkdir()
    torch.save({"recipe": {}, "generator_version": "0"}, tmp_path / "other" / "checkpoint.pt")
    with pytest.raises(ValueError, match="different recipe"):
        OrganismTrainer(recipe, tmp_path / "other").run()


def test_load_organism_names_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a trained organism"):
        load_organism(tmp_path)


@pytest.fixture(scope="module")
def organism() -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    return load_organism()


def test_shipped_model_loads_like_a_hub_checkpoint(organism: tuple[LlavaForConditionalGeneration, LlavaProcessor]) -> None:
    model, processor = organism
    assert not model.training and model_family(model).name == "llava"
    assert (DEFAULT_PATH / "model.safetensors").stat().st_size <= 20 * 2**20
    assert (DEFAULT_PATH / "MODEL_CARD.md").is_file()
    inputs = processor(images=make_scene(0, 0).image, text=prompt(CAPTION_REQUEST), return_tensors="pt")
    assert int(image_token_mask(model, inputs["input_ids"]).sum()) == 64


def test_quick_evaluation_meets_loose_floors(organism: tuple[LlavaForConditionalGeneration, LlavaProcessor]) -> None:
    model, processor = organism
    results = evaluate_organism(model, processor, n=50, seed=77)
    assert results["exact_set_accuracy"] >= 0.5
    assert results["blind_exact_set_accuracy"] <= 0.2
    assert results["pope_random_accuracy"] >= 0.6
    assert len(results["sinks"]["density"]) == model.config.text_config.num_hidden_layers
    assert sum(results["sinks"]["density"]) > 0


def test_summarize_evaluations_gives_the_mean_and_t_interval_over_seeds() -> None:
    from eahlib.organism.evaluate import summarize_evaluations

    runs = [{"n": 400, "seed": s, "generator_version": "1.0", "exact_set_accuracy": v, "sinks": {}}
            for s, v in ((1, 0.7), (2, 0.8), (3, 0.9))]
    row = summarize_evaluations(runs).loc["exact_set_accuracy"]
    # sd 0.1 over 3 seeds; t(0.975, df 2) = 4.302653 (statistical tables); half width 4.302653 * 0.1 / sqrt(3)
    assert row["mean"] == pytest.approx(0.8) and row["sd"] == pytest.approx(0.1)
    assert row["ci_low"] == pytest.approx(0.8 - 0.248414, abs=1e-6)
    assert row["ci_high"] == pytest.approx(0.8 + 0.248414, abs=1e-6)
    assert list(row[["seed 1", "seed 2", "seed 3"]]) == [0.7, 0.8, 0.9]
    with pytest.raises(ValueError, match="distinct seeds"):
        summarize_evaluations([runs[0], runs[0]])
    with pytest.raises(ValueError, match="different sizes"):
        summarize_evaluations([runs[0], {**runs[1], "n": 200}])
