"""Every Python code block of README.md and docs/*.md runs, so the documented calls exist with the documented
arguments.

The blocks of one page run in order in one namespace (a later block may use what an earlier one made), in a
folder holding the files the examples open (``photo.jpg``, ``captions.jsonl``). A hub checkpoint a block loads
with ``eah.load_model`` is replaced by the tiny random LLaVA built in code, after the call's arguments are
checked against ``load_model``'s signature; everything else runs for real. A block that needs what a test
cannot have (a GPU, COCO images, a download) is marked in the Markdown, on the line before it, with
``<!-- docs-test: skip (reason) -->``, and is skipped with that reason.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import eahlib
from eahlib import docgen, models

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
STAND_IN = "tiny-random-llava"
"""What a hub checkpoint of a documentation example becomes here."""


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: Path
    line: int
    code: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The page's ```python blocks, each with the skip reason marked on the line before it (if any)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index
            end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
            before = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
            marker = SKIP.search(before)
            blocks.append(Block(page, start + 1, "\n".join(lines[start + 1:end]), marker["reason"] if marker else None))
            index = end
        index += 1
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]
_NAMESPACES: dict[Path, dict[str, Any]] = {}


def _stand_in_loader(real: Any) -> Any:
    """``load_model`` that checks the documented call against the real signature, then loads the tiny LLaVA for a
    hub checkpoint (on the CPU) and eahlib's built-in models as they are."""
    signature = inspect.signature(real)

    def load_model(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)  # a documented argument that does not exist fails here
        name = bound.arguments["name_or_path"]
        if name not in models.BUILTIN_MODELS:
            bound.arguments["name_or_path"] = STAND_IN
            bound.arguments.pop("device_map", None)
        return real(*bound.args, **bound.kwargs)

    return load_model


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.getbasetemp() / "docs"
    if not folder.exists():
        folder.mkdir()
        pixels = np.random.default_rng(0).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "photo.jpg")
        captions = [{"image_id": 391895, "caption": "A man riding a motorcycle on a dirt road."},
                    {"image_id": 522418, "caption": "A woman cutting a cake with a knife and a dog."}]
        (folder / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    monkeypatch.chdir(folder)
    monkeypatch.setattr(eahlib, "load_model", _stand_in_loader(models.load_model))
    return folder


def test_generated_sections_are_current() -> None:
    assert docgen.stale() == [], "run `python -m eahlib.docgen --write`"


def test_the_pages_have_python_blocks() -> None:
    assert BLOCKS and all(block.code.strip() for block in BLOCKS)
    assert any(block.skip is None for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_documented_code_runs(block: Block, workdir: Path) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    namespace = _NAMESPACES.setdefault(block.page, {"__name__": "__docs__"})
    exec(compile(block.code, block.name, "exec"), namespace)  # noqa: S102 - the documentation's own code
    assert os.getcwd() == str(workdir)


def test_the_method_table_does_not_depend_on_the_order_modules_were_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    from eahlib.methods import registry

    table = docgen.methods_markdown()
    shuffled = dict(reversed(list(registry.components().items())))  # as if the modules had been imported backwards
    monkeypatch.setattr(registry, "COMPONENTS", shuffled)
    assert docgen.methods_markdown() == table
