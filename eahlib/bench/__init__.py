"""Object-hallucination benchmarks: CHAIR for captions and POPE for yes/no object questions.

Data files (word lists, question files, ground-truth caches, COCO annotations) come from
:mod:`eahlib.data_registry`.
"""

from eahlib.bench.chair import (
    CaptionObjects,
    ChairEvaluator,
    ChairResult,
    ObjectVocabulary,
    ensure_nltk_data,
    lemmatize_caption,
    load_caption_records,
)
from eahlib.bench.pope import POPE_SCORERS, load_pope_questions, pope_answer, pope_metrics
from eahlib.data_registry import coco_image_id, resolve_coco_images

__all__ = [
    "POPE_SCORERS",
    "CaptionObjects",
    "ChairEvaluator",
    "ChairResult",
    "ObjectVocabulary",
    "coco_image_id",
    "ensure_nltk_data",
    "lemmatize_caption",
    "load_caption_records",
    "load_pope_questions",
    "pope_answer",
    "pope_metrics",
    "resolve_coco_images",
]
