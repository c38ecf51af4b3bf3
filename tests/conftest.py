"""Shared fixtures: tiny random models of every family, built in code (no downloads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eahlib.testing import TINY_MODELS

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"
"""Offline reference data beside the checkout (see ../shared/README.md); the Makefile sets the
same variables, these defaults serve a bare ``pytest`` run. Tests never download."""
os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
os.environ.setdefault("EAH_DATA_DIR", str(SHARED / "eah-data"))
os.environ.setdefault("EAH_OFFLINE", "1")

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
"""Text-token prompts of different lengths (left padding in a batch)."""


@pytest.fixture
def llava():
    """``(model, make_inputs)`` of a tiny LLaVA-1.5-architecture model."""
    return TINY_MODELS["llava"](0)


@pytest.fixture(params=sorted(TINY_MODELS))
def family_model(request):
    """``(name, model, make_inputs)`` for each supported family."""
    model, make_inputs = TINY_MODELS[request.param](0)
    return request.param, model, make_inputs


GROUND_TRUTH = {1: ["dog", "person"], 2: ["cat"], 3: ["car", "bicycle"], 4: ["chair"], 5: ["bottle", "cup"]}


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "val2014"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for image_id in GROUND_TRUTH:
        pixels = rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"COCO_val2014_{image_id:012d}.jpg")
    return folder


@pytest.fixture
def pope_file(tmp_path: Path) -> Path:
    questions = [
        {"question_id": i + 1, "image": f"COCO_val2014_{image:012d}.jpg", "text": f"Is there a {obj} in the image?",
         "label": label}
        for i, (image, obj, label) in enumerate([(1, "dog", "yes"), (1, "cat", "no"), (2, "cat", "yes"),
                                                  (3, "person", "no"), (4, "chair", "yes"), (5, "dog", "no")])
    ]
    path = tmp_path / "coco_pope_test.json"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path
