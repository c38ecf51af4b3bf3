"""Experiment setups for the notebooks: the same code in small (CPU, organism) and full (GPU, COCO) mode.

``setup("small", ...)`` exports a fresh shapes-world evaluation set in COCO/POPE format and
loads a shipped model organism (default ``SMALL_MODEL``); ``setup("full", ...)``
loads a hub checkpoint, a COCO val2014 image folder, the CHAIR ground truth and the POPE question
files. Either way the notebooks get one :class:`Setup` and call the same functions on it.

:func:`evaluate_conditions` runs a set of methods (conditions) on captions and POPE questions
through the resumable runner and summarises each with bootstrap confidence intervals over items.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from torch import nn

from eahlib import data_registry
from eahlib.bench.chair import ChairEvaluator, ChairResult
from eahlib.bench.pope import pope_answer
from eahlib.bench.runner import (
    CHAIR_PROMPT,
    Item,
    Shard,
    chair_items,
    chair_splits,
    generate_records,
    pope_items,
    read_results,
    split_union,
)
from eahlib.bench.tables import caption_frame, results_table
from eahlib.methods import Method
from eahlib.models import load_model
from eahlib.stats import bootstrap_mean, bootstrap_ratio

Mode = Literal["small", "full"]
SMALL_MODEL = "organism-smollm2"
"""Small mode's default: the LLaVA on SmolLM2-135M-Instruct (30 layers, a real first-token sink; see
data/organism_smollm2/MODEL_CARD.md). ``model_name="organism"`` is the tiny from-scratch organism (seconds)."""
FULL_MODEL = "llava-hf/llava-1.5-7b-hf"


@dataclass
class Setup:
    """Everything an analysis needs: model, data, scorers, where results go.

    Attributes:
        mode: ``"small"`` or ``"full"``.
        model_name: the name :func:`eahlib.load_model` was given.
        model, processor: the loaded pair.
        image_dir: folder of COCO-named images.
        caption_items: the captioning sample (CHAIR protocol: ids, images, prompt).
        caption_prompt: the captioning instruction.
        chair: the CHAIR evaluator for this data.
        pope_files: POPE question file per split.
        results_dir: where runs and tables are written (runs resume there).
        seed: the seed that drew ``caption_items`` (further CHAIR splits use the next seeds).
    """

    mode: Mode
    model_name: str
    model: nn.Module
    processor: Any
    image_dir: Path
    caption_items: list[Item]
    caption_prompt: str
    chair: ChairEvaluator
    pope_files: dict[str, Path]
    results_dir: Path
    seed: int = 42

    def caption_splits(self, n_splits: int) -> dict[str, list[Item]]:
        """``n_splits`` random CHAIR splits of ``len(caption_items)`` images, seeds ``seed, seed + 1, ...``
        (the first is ``caption_items``); they differ only when ``image_dir`` holds more images (small mode:
        ``setup(pool=...)``)."""
        return chair_splits(self.image_dir, len(self.caption_items), n_splits, self.seed, self.caption_prompt)

    def pope_items(self, split: str, limit: int | None = None) -> list[Item]:
        """POPE items of one split (the first ``limit`` questions, if given)."""
        items = pope_items(self.pope_files[split], self.image_dir)
        return items[:limit] if limit is not None else items


def setup(
    mode: Mode = "small",
    model_name: str | None = None,
    n_images: int | None = None,
    seed: int = 42,
    results_dir: str | os.PathLike = "data/results",
    coco_images: str | os.PathLike | None = None,
    pope_version: str = "coco",
    dtype: str = "auto",
    device_map: str | None = None,
    pool: int | None = None,
) -> Setup:
    """Load the model and the data of one mode.

    Args:
        mode: ``"small"``: a model organism (default :data:`SMALL_MODEL`) on a fresh shapes-world set (CPU, minutes);
            ``"full"``: a hub checkpoint on COCO val2014 (GPU).
        model_name: override the mode's default model.
        n_images: captioning sample size (default 48 small, 500 full).
        seed: evaluation-set seed (small) and image-sampling seed (full; 42 as published).
        results_dir: output folder (a ``<mode>_<model>`` subfolder is used).
        coco_images: the val2014 image folder (full mode; or ``$COCO_IMAGES``).
        pope_version: POPE question-file version in the data registry (full mode).
        dtype, device_map: passed to :func:`eahlib.load_model`. The default device is the process's own: the GPU
            when one is visible (``cuda:LOCAL_RANK`` under ``torchrun`` / ``accelerate launch``, where the runs shard
            their items), else the CPU.
        pool: small mode: images in the exported set, from which the caption sample and further CHAIR splits
            are drawn (default ``n_images``: one split holds every image).

    Returns:
        The :class:`Setup`.
    """
    if mode not in ("small", "full"):
        raise ValueError(f"mode must be 'small' or 'full', got {mode!r}.")
    name = model_name or (SMALL_MODEL if mode == "small" else FULL_MODEL)
    out = Path(results_dir) / f"{mode}_{name.replace('/', '_')}"
    shard = Shard.from_environment()
    model, processor = load_model(name, dtype=dtype, device_map=shard.device if device_map is None else device_map)
    if mode == "small":
        from eahlib.organism import CAPTION_REQUEST, POPE_SPLITS, export_evaluation_set

        count = n_images or 48
        if pool is not None and pool < count:
            raise ValueError(f"pool={pool} must hold at least n_images={count} images.")
        size = pool or count
        evaluation = export_evaluation_set(size, seed, out / f"shapes_seed{seed}_n{size}")
        image_dir = evaluation.image_path(evaluation.image_ids[0]).parent
        items = chair_items(image_dir, count, seed, CAPTION_REQUEST)
        chair = ChairEvaluator.from_coco(evaluation.annotation_dir, vocabulary=evaluation.vocabulary_file)
        pope = {split: evaluation.pope_file(split) for split in POPE_SPLITS}
        return Setup(mode, name, model, processor, image_dir, items, CAPTION_REQUEST, chair, pope, out, seed)
    folder = Path(coco_images or os.environ.get("COCO_IMAGES", "")).expanduser()
    if not str(folder) or not folder.is_dir():
        raise FileNotFoundError("Full mode needs the COCO val2014 images: pass coco_images= or set COCO_IMAGES.")
    items = chair_items(folder, n_images or 500, seed, CHAIR_PROMPT)
    chair = ChairEvaluator.from_ground_truth("ritual")
    pope = {split: data_registry.pope_questions(pope_version, split) for split in data_registry.POPE_SPLITS}
    return Setup(mode, name, model, processor, folder, items, CHAIR_PROMPT, chair, pope, out, seed)


def run_condition(
    setup: Setup,
    name: str,
    method: Method,
    caption_items: Sequence[Item],
    pope_items: Sequence[Item] = (),
    max_new_tokens: int = 64,
    batch_size: int = 16,
    folder: str = "conditions",
) -> dict[str, Path]:
    """Captions and POPE answers of one condition (resumable), as results files by task."""
    out = setup.results_dir / folder
    config = {"model": setup.model_name, "condition": name}
    files = {"chair": generate_records(setup.model, setup.processor, method, caption_items,
                                       out / f"{name}_chair.jsonl", {**config, "task": "chair"},
                                       max_new_tokens, batch_size)}
    if pope_items:
        files["pope"] = generate_records(setup.model, setup.processor, method, pope_items,
                                         out / f"{name}_pope.jsonl", {**config, "task": "pope"}, 10, batch_size)
    return files


def _records(results: Path, items: Sequence[Item] | None) -> list[dict[str, Any]]:
    """A results file's records of ``items``, in their order (default: every record; a file may hold more,
    from other runs); refused, naming them, if an item is there twice or missing (see
    :func:`eahlib.bench.runner.read_results`)."""
    return read_results(results, None if items is None else [item.item_id for item in items])


def chair_result(setup: Setup, results: Path, items: Sequence[Item] | None = None) -> ChairResult:
    """CHAIR of the captions of ``items`` in a results file (default: every record)."""
    records = _records(results, items)
    return setup.chair.evaluate([{"image_id": r["image_id"], "caption": r["output"]} for r in records])


def per_caption(setup: Setup, results: Path, items: Sequence[Item] | None = None) -> pd.DataFrame:
    """One row per caption of ``items`` (default: every record): image id, hallucination flag,
    hallucinated and total mentions, recalled and ground-truth objects, words
    (:func:`eahlib.bench.tables.caption_frame`)."""
    return caption_frame(chair_result(setup, results, items))


def evaluate_conditions(
    setup: Setup,
    conditions: Mapping[str, Method],
    caption_items: Sequence[Item],
    pope_items: Sequence[Item] = (),
    max_new_tokens: int = 64,
    batch_size: int = 16,
    seed: int = 0,
) -> pd.DataFrame:
    """Run each condition and summarise CHAIR and POPE with 95% bootstrap intervals over items.

    Returns:
        One row per condition: ``CHAIRs, CHAIRi, Recall`` and (with POPE items) ``POPE_accuracy``,
        each with ``_low``/``_high`` bounds, plus ``n_captions``, ``n_questions``, ``method``.
    """
    rows = []
    for name, method in conditions.items():
        files = run_condition(setup, name, method, caption_items, pope_items, max_new_tokens, batch_size)
        captions = per_caption(setup, files["chair"], caption_items)
        row: dict[str, Any] = {"condition": name, "method": method.name, "n_captions": len(captions)}
        estimates = {
            "CHAIRs": bootstrap_mean(captions.hallucinated, seed=seed),
            "CHAIRi": bootstrap_ratio(captions.n_hallucinated, captions.n_mentions, seed=seed),
            "Recall": bootstrap_ratio(captions.recalled, captions.n_gt, seed=seed),
        }
        if "pope" in files:
            answers = _records(files["pope"], pope_items)
            correct = [pope_answer(r["output"]) == r["label"] for r in answers]
            estimates["POPE_accuracy"] = bootstrap_mean(correct, seed=seed)
            row["n_questions"] = len(answers)
        for metric, estimate in estimates.items():
            row.update({metric: estimate.value, f"{metric}_low": estimate.low, f"{metric}_high": estimate.high})
        rows.append(row)
    return pd.DataFrame(rows)


def compare_captions(setup: Setup, items: Sequence[Item], eah: Mapping[str, Any], max_new_tokens: int = 64) -> pd.DataFrame:
    """Captions without and with EAH side by side, with the chosen head and its density."""
    plain = run_condition(setup, "quickstart_greedy", _method("greedy"), items, max_new_tokens=max_new_tokens)
    enhanced = run_condition(setup, "quickstart_eah", _method("eah", {"eah": dict(eah)}), items,
                             max_new_tokens=max_new_tokens)
    before, after = _records(plain["chair"], items), _records(enhanced["chair"], items)
    return pd.DataFrame({
        "image": [r["image"] for r in before],
        "caption": [r["output"] for r in before],
        "caption_with_eah": [r["output"] for r in after],
        "eah_head": [r["eah_head"] for r in after],
        "eah_density": [r["eah_density"] for r in after],
    })


def _method(spec: str, params: Mapping[str, Mapping[str, Any]] | None = None) -> Method:
    from eahlib.methods import resolve_method

    return resolve_method(spec, params)


def ablation_conditions(
    n_layers: int,
    n_heads: int,
    layer: int,
    eah: Mapping[str, Any],
    relative_thresholds: Sequence[float] = (2.0, 4.0, 8.0),
    per_head: bool = True,
    zero_heads: Sequence[int] = (),
    other_layers: Sequence[int] | None = None,
) -> dict[str, Method]:
    """The head-ablation study's conditions, by name.

    Args:
        n_layers, n_heads: the language model's shape.
        layer: the paper's layer (0-based).
        eah: base EAH parameters (e.g. the sink criterion).
        relative_thresholds: threshold-sensitivity values of ``k`` at ``layer``.
        per_head: broadcast from each single head of ``layer`` in turn.
        zero_heads: heads of ``layer`` to zero-ablate, one condition each.
        other_layers: the layers where the densest head is also tried (default: every other layer;
            a 30-layer model makes that 29 conditions).

    Raises:
        ValueError: ``layer`` or one of ``other_layers`` is not a layer of the model (the message gives the range).

    Returns:
        ``greedy`` (baseline); at ``layer``: densest, sparsest, random, every single head,
        each ``k``, ``decode="reuse"``, the release preset's choices; the densest head at every
        other layer; zero-ablations.
    """
    layers = [layer, *([] if other_layers is None else other_layers)]
    outside = [value for value in layers if not 0 <= value < n_layers]
    if outside:
        raise ValueError(f"Layers {outside} do not exist: the model has {n_layers} layers, 0 to {n_layers - 1} (0-based).")
    base = {k: v for k, v in eah.items() if k != "layer"}
    conditions: dict[str, Method] = {"greedy": _method("greedy")}

    def eah_at(name: str, **overrides: Any) -> None:
        conditions[name] = _method("eah", {"eah": {**base, "layer": layer, **overrides}})

    eah_at(f"L{layer} densest")
    eah_at(f"L{layer} sparsest", head="sparsest")
    eah_at(f"L{layer} random", head="random", seed=0)
    for head in range(n_heads) if per_head else ():
        eah_at(f"L{layer} head {head}", head=head)
    for k in relative_thresholds:
        eah_at(f"L{layer} densest k={k:g}", relative_threshold=k, threshold=None)
    eah_at(f"L{layer} densest decode=reuse", decode="reuse")
    eah_at(f"L{layer} release preset", preset="release", normalizer=None)
    for other in range(n_layers) if other_layers is None else other_layers:
        if other != layer:
            conditions[f"L{other} densest"] = _method("eah", {"eah": {**base, "layer": other}})
    for head in zero_heads:
        conditions[f"L{layer} zero head {head}"] = _method("ablate", {"ablate": {"heads": {str(layer): [head]}}})
    return conditions


PUBLISHED = pd.DataFrame(
    [
        ("VHR", "greedy", 49.68, 14.32, 84.98),
        ("VHR", "eah", 38.76, 11.05, 85.03),
        ("VHR", "opera", 44.28, 13.36, float("nan")),
        ("VHR", "vhr", 33.32, 9.71, 85.47),
        ("VAR", "greedy", 45.0, 14.7, 85.90),
        ("VAR", "var", 43.2, 13.8, 86.53),
    ],
    columns=["source", "method", "CHAIRs", "CHAIRi", "POPE F1"],
).set_index(["source", "method"])
"""Published numbers for LLaVA-1.5-7B by our method names, each paper beside its own greedy baseline (CHAIR in
percent, POPE F1):

- ``VHR``: He et al., arXiv 2412.13949 (ACL 2025), its LLaVA-1.5 rows: greedy, EAH (on greedy decoding), OPERA (5 beams) and
  VHR itself; CHAIR on 500 COCO val2014 images, mean of 5 samples; POPE F1 the mean over the three COCO splits.
  VHR gives OPERA no POPE F1 (NaN).
- ``VAR``: Kang et al., ICLR 2025 (arXiv 2503.03321), Table 2: greedy and VAR; CHAIR C_S and C_I, POPE F1 over the
  three splits pooled ("all"). The protocol (images, prompt, length) is not stated in the paper text we could read;
  the released configuration decodes greedily with 128 new tokens.

VAF (ClearSight, CVPR 2025) is not here: we found no paper table, only the authors' README, which gives POPE
random accuracy (LLaVA-1.5-7B: regular 87.8, VAF 89.7) without naming the dataset."""


def published_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The published numbers of :data:`PUBLISHED` beside ours, for the methods both have.

    Args:
        table: :func:`benchmark_table`'s output (methods as the index).

    Returns:
        One row per (source, method) of both: ``CHAIRs``, ``CHAIRi``, ``POPE F1`` as published, then the same
        three columns of ours with the suffix ``" (ours)"`` (our POPE F1: the mean over the splits).
    """
    rows = PUBLISHED[PUBLISHED.index.get_level_values("method").isin(table.index)]
    methods = list(rows.index.get_level_values("method"))
    ours = table.loc[methods, ["CHAIRs", "CHAIRi"]].copy()
    f1 = [column for column in table.columns if column.startswith("POPE ") and column.endswith(" f1")
          and not column.endswith(("_low", "_high"))]
    ours["POPE F1"] = table.loc[methods, f1].mean(axis=1) if f1 else float("nan")
    ours.index = rows.index
    return rows.join(ours.add_suffix(" (ours)"))


def benchmark_table(
    setup: Setup,
    methods: Mapping[str, Method],
    captions: Sequence[Item] | Mapping[str, Sequence[Item]],
    pope_limit: int | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    seed: int = 0,
    limits: Mapping[str, int] | None = None,
    reference: str = "greedy",
) -> pd.DataFrame:
    """CHAIR and POPE (every split) per method, in percent, with their uncertainty.

    Every method runs on the same images and questions (resumable, sharded under ``torchrun``), in
    ``<results_dir>/benchmarks/``; the table is :func:`eahlib.bench.tables.results_table` of them.

    Args:
        captions: the caption sample, or CHAIR splits by name (:meth:`Setup.caption_splits`): every image
            of the splits is captioned once; CHAIR is reported over the pooled images and as mean ± std
            over splits.
        pope_limit: at most this many questions per POPE split (the first ones).
        limits: method name -> at most this many captions (the first ones of the first split, which is
            then its only split) and POPE questions per split, for a slow method in a quick run; the others
            use every item.
        reference: the method the paired differences are taken from (if it is among ``methods``).
        seed: seed of the bootstrap resampling.

    Returns:
        One row per method (see :func:`eahlib.bench.tables.results_table` for the columns: intervals,
        split spread, paired differences from ``reference``).
    """
    splits = {name: list(items) for name, items in captions.items()} if isinstance(captions, Mapping) \
        else {"all": list(captions)}
    folder = setup.results_dir / "benchmarks"
    first = next(iter(splits))
    for name, method in methods.items():
        limit = (limits or {}).get(name)
        method_splits = splits if limit is None else {first: splits[first][:limit]}
        method_pope = limit if pope_limit is None else pope_limit if limit is None else min(limit, pope_limit)
        config = {"model": setup.model_name, "condition": name}
        generate_records(setup.model, setup.processor, method, split_union(method_splits), folder / f"{name}_chair.jsonl",
                         {**config, "task": "chair"}, max_new_tokens, batch_size,
                         splits={split: [item.item_id for item in items] for split, items in method_splits.items()})
        for split in setup.pope_files:
            generate_records(setup.model, setup.processor, method, setup.pope_items(split, method_pope),
                             folder / f"{name}_pope_{split}.jsonl", {**config, "task": "pope", "split": split}, 10,
                             batch_size)
    return results_table(folder, setup.chair, reference=reference if reference in methods else None,
                         names=list(methods), seed=seed)
