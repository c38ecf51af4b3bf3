"""Shared fixtures: tiny random models of every family, built in code (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
