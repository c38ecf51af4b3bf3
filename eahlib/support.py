"""The support matrix: every image-text-to-text family of the installed transformers, served or why not.

One row per ``config.model_type`` that transformers maps to ``AutoModelForImageTextToText`` (plus the
served families that load through another auto class, such as Phi-4-multimodal): either the
:data:`eahlib.models.FAMILIES` row that serves it, or the :data:`eahlib.models.UNSERVED` reason it cannot
be served. ``tests/test_support_matrix.py`` builds a tiny random model of every row and checks that each
claim holds; the documentation's family table is this module's markdown, a generated section
(:mod:`eahlib.docgen`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eahlib.models import FAMILIES, UNSERVED, ModelFamily, UnservedFamily


@dataclass(frozen=True)
class SupportRow:
    """One model type of the matrix.

    Attributes:
        model_type: ``config.model_type``.
        status: ``"served"``, ``"not served"``, or ``"unknown"`` (in neither table: add a row).
        family: the serving :class:`~eahlib.models.ModelFamily` row's name (served only).
        detail: the family's notes (served) or the reason (not served).
        checkpoint: a public checkpoint (served only).
    """

    model_type: str
    status: Literal["served", "not served", "unknown"]
    family: str
    detail: str
    checkpoint: str


def installed_model_types() -> list[str]:
    """Every image-text-to-text model type of the installed transformers, and the served ones loaded otherwise."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    served = {t for family in FAMILIES for t in family.model_types}
    return sorted(set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES) | served)


def _served(model_type: str) -> ModelFamily | None:
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def _unserved(model_type: str) -> UnservedFamily | None:
    return next((u for u in UNSERVED if model_type in u.model_types), None)


def support_row(model_type: str) -> SupportRow:
    """The matrix row of one model type."""
    family = _served(model_type)
    if family is not None:
        return SupportRow(model_type, "served", family.name, family.notes, family.checkpoint)
    unserved = _unserved(model_type)
    if unserved is not None:
        return SupportRow(model_type, "not served", "", unserved.reason, "")
    return SupportRow(model_type, "unknown", "", "in neither eahlib.models.FAMILIES nor UNSERVED: add a row", "")


def support_matrix() -> list[SupportRow]:
    """The rows of every installed model type, served ones first, each group by model type."""
    rows = [support_row(t) for t in installed_model_types()]
    return sorted(rows, key=lambda r: (r.status != "served", r.model_type))


def _headline(rows: list[SupportRow]) -> str:
    import transformers

    served = sum(r.status == "served" for r in rows)
    return (f"{served} of the {len(rows)} image-text-to-text model types of transformers {transformers.__version__} are "
            "served; each row is checked on a tiny random model by `tests/test_support_matrix.py`.")


def summary_markdown() -> str:
    """One paragraph for the README: the count, then the types not served (their reasons are in the full matrix)."""
    rows = support_matrix()
    refused = ", ".join(f"`{r.model_type}`" for r in rows if r.status != "served")
    return f"{_headline(rows)} Not served, each for a stated reason: {refused}."


def markdown() -> str:
    """The matrix as a markdown table."""
    rows = support_matrix()
    lines = [
        _headline(rows),
        "",
        "| model type | status | family row | example checkpoint | notes / reason |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        checkpoint = f"`{row.checkpoint}`" if row.checkpoint else ""
        lines.append(f"| `{row.model_type}` | {row.status} | {row.family} | {checkpoint} | {row.detail} |")
    return "\n".join(lines)
