"""Shared fixtures: tiny random models of every family, built in code, and the reference data.

``../shared`` (beside the checkout) is our offline mirror of the public reference data. It exists
only on the project's own machines and in CI, so it is used only when present and never overrides
a variable the user has set. Without it, tests take the normal path: NLTK data from NLTK's standard
locations (downloaded when missing) and registry files downloaded and verified into the cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eahlib import data_registry
from eahlib.testing import TINY_MODELS

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"
"""The optional offline mirror (see the module docstring); the Makefile applies the same rule."""
if SHARED.is_dir():
    os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
    os.environ.setdefault(data_registry.DATA_DIR_ENV, str(SHARED / "eah-data"))
    os.environ.setdefault(data_registry.OFFLINE_ENV, "1")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""Small hand-made inputs with reference outputs, kept in the repository (see fixtures/README.md)."""


@pytest.fixture(scope="session")
def public_data() -> Path:
    """A folder in the registry's layout holding every registry file that has a public source.

    ``EAH_DATA_DIR`` when set; otherwise the download cache, filled on first use (the path a user
    with a network takes). The 250 MB COCO annotation zip is left out.
    """
    root = data_registry.data_dir()
    if root is not None:
        return root
    registry = data_registry.read_registry()
    for name, entry in registry.items():
        if entry.url is not None and name != data_registry.COCO_ANNOTATIONS:
            data_registry.fetch(name)
    return data_registry.cache_dir()

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
