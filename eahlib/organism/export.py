"""Write a shapes-world evaluation set in the formats of the real benchmarks.

Layout of the output folder::

    images/COCO_val2014_000000000001.png ...   the images (lossless PNG), COCO file names
    annotations/instances_val2014.json         COCO instances (one box per object)
    annotations/captions_val2014.json          one reference caption per image
    annotations/{instances,captions}_train2014.json   empty (CHAIR reads train and val)
    chair_synonyms.txt                         CHAIR vocabulary, one class per line (node word only)
    pope/organism_pope_{random,popular,adversarial}.json   POPE questions (JSONL, like POPE COCO)

POPE: each image gets one question about a present object (the same in all three files) and one
about an absent object, chosen per file as POPE does: ``random`` uniformly among absent classes;
``adversarial`` an absent partner of a present object (the one that co-occurs most with the present
objects; if every partner is present, the absent class that co-occurs most); ``popular`` the most frequent absent class that is neither a partner of a present object
nor the adversarial choice, so popular and adversarial negatives are never the same class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eahlib.organism.world import (
    CLASS_INDEX,
    CLASS_NAMES,
    CLASSES,
    FREQUENCY_RANKING,
    GENERATOR_VERSION,
    IMAGE_SIZE,
    PARTNER,
    Scene,
    cooccurrence,
    make_scenes,
)

POPE_SPLITS = ("random", "popular", "adversarial")
FIRST_IMAGE_ID = 1


@dataclass(frozen=True)
class EvaluationSet:
    """An exported evaluation set: the scenes and where their files are.

    Attributes:
        root: the output folder.
        scenes: the scenes, scene ``i`` has COCO image id ``FIRST_IMAGE_ID + i``.
        seed: the generator seed.
    """

    root: Path
    scenes: tuple[Scene, ...]
    seed: int

    @property
    def annotation_dir(self) -> Path:
        return self.root / "annotations"

    @property
    def vocabulary_file(self) -> Path:
        return self.root / "chair_synonyms.txt"

    @property
    def image_ids(self) -> list[int]:
        return [FIRST_IMAGE_ID + i for i in range(len(self.scenes))]

    def image_path(self, image_id: int) -> Path:
        return self.root / "images" / coco_file_name(image_id)

    def pope_file(self, split: str) -> Path:
        if split not in POPE_SPLITS:
            raise ValueError(f"Unknown POPE split {split!r}; choose one of {POPE_SPLITS}.")
        return self.root / "pope" / f"organism_pope_{split}.json"


def coco_file_name(image_id: int) -> str:
    """``COCO_val2014_000000000042.png`` for image id 42."""
    return f"COCO_val2014_{image_id:012d}.png"


def pope_negatives(present: list[str], rng: np.random.Generator) -> dict[str, str]:
    """The absent class asked about in each POPE split for an image with objects ``present``."""
    absent = [name for name in CLASS_NAMES if name not in present]
    counts = cooccurrence()
    score = {name: sum(int(counts[CLASS_INDEX[p], CLASS_INDEX[name]]) for p in present) for name in absent}
    partners = {PARTNER[p] for p in present}
    adversarial = max(absent, key=lambda name: (name in partners, score[name], -CLASS_INDEX[name]))
    popular = next(name for name in FREQUENCY_RANKING if name in absent and name not in partners | {adversarial})
    return {"random": absent[int(rng.integers(len(absent)))], "popular": popular, "adversarial": adversarial}


def _coco_payloads(scenes: list[Scene]) -> dict[str, dict]:
    categories = [{"id": i + 1, "name": c.name, "supercategory": c.shape} for i, c in enumerate(CLASSES)]
    info = {"description": f"eahlib shapes world, generator {GENERATOR_VERSION}"}
    images, instances, captions = [], [], []
    for index, scene in enumerate(scenes):
        image_id = FIRST_IMAGE_ID + index
        images.append({"id": image_id, "file_name": coco_file_name(image_id), "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        captions.append({"id": image_id, "image_id": image_id, "caption": scene.caption()})
        for obj in scene.objects:
            x, y, r = obj.centre[0] - obj.radius, obj.centre[1] - obj.radius, 2 * obj.radius
            instances.append({
                "id": len(instances) + 1, "image_id": image_id, "category_id": CLASS_INDEX[obj.name] + 1,
                "bbox": [x, y, r, r], "area": r * r, "iscrowd": 0, "segmentation": [],
            })
    empty = {"info": info, "images": [], "annotations": [], "categories": categories}
    return {
        "instances_val2014.json": {"info": info, "images": images, "annotations": instances, "categories": categories},
        "captions_val2014.json": {"info": info, "images": images, "annotations": captions},
        "instances_train2014.json": empty,
        "captions_train2014.json": {key: value for key, value in empty.items() if key != "categories"},
    }


def export_evaluation_set(n: int, seed: int, root: str | os.PathLike) -> EvaluationSet:
    """Generate ``n`` scenes with ``seed`` and write them as COCO/CHAIR/POPE files under ``root``.

    Args:
        n: number of images.
        seed: generator seed (scene ``i`` is ``make_scene(seed, i)``; POPE choices use ``[seed, i, 1]``).
        root: output folder (created; existing files are overwritten).

    Returns:
        The :class:`EvaluationSet`.
    """
    scenes = make_scenes(n, seed)
    out = EvaluationSet(Path(root), tuple(scenes), seed)
    for folder in ("images", "annotations", "pope"):
        (out.root / folder).mkdir(parents=True, exist_ok=True)
    for image_id, scene in zip(out.image_ids, scenes):
        _replace(out.image_path(image_id), lambda path, image=scene.image: image.save(path, format="PNG"))
    for name, payload in _coco_payloads(scenes).items():
        _write_text(out.annotation_dir / name, json.dumps(payload))
    _write_text(out.vocabulary_file, "\n".join(CLASS_NAMES) + "\n")
    questions: dict[str, list[dict]] = {split: [] for split in POPE_SPLITS}
    for image_id, scene in zip(out.image_ids, scenes):
        rng = np.random.default_rng([seed, image_id, 1])
        positive = scene.names[int(rng.integers(len(scene.names)))]
        negatives = pope_negatives(scene.names, rng)
        for split in POPE_SPLITS:
            for name, label in ((positive, "yes"), (negatives[split], "no")):
                questions[split].append({
                    "question_id": len(questions[split]) + 1, "image": coco_file_name(image_id),
                    "text": f"Is there a {name} in the image?", "label": label,
                })
    for split, rows in questions.items():
        _write_text(out.pope_file(split), "".join(json.dumps(row) + "\n" for row in rows))
    return out


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file and swap it in, so that a process reading it while another
    one exports the same set (several processes of one run) never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write(partial)
    os.replace(partial, path)


def _write_text(path: Path, text: str) -> None:
    _replace(path, lambda partial: partial.write_text(text, encoding="utf-8"))
