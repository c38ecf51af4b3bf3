"""A model organism: a small LLaVA trained by the project on CPU on a synthetic shapes world.

``load_organism()`` returns the shipped ``(model, processor)`` like a hub checkpoint; prompts are built
with :func:`prompt` (or ``processor.apply_chat_template(conversation(...))``), e.g.
``prompt(CAPTION_REQUEST)`` or ``prompt(existence_question("sun"))``. ``python -m eahlib.organism
train|evaluate|export`` trains the model, evaluates it through the project's CHAIR/POPE code, and
exports evaluation sets in COCO/POPE formats. See ``data/organism/MODEL_CARD.md``.
"""

from eahlib.organism.export import POPE_SPLITS, EvaluationSet, export_evaluation_set
from eahlib.organism.model import DEFAULT_PATH, build_model, load_organism
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
    "make_scene",
    "make_scenes",
    "prompt",
]
