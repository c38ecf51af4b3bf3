"""Staged CPU training of the organism: a 2.3 M-parameter LLaVA (CLIP tower + 8-layer Llama) from scratch.

Three stages, each on freshly generated data (no example repeats; batch ``t`` of stage ``s`` is drawn
from ``numpy.random.default_rng([seed, s, t])``, so a resumed run sees exactly the data an
uninterrupted one would):

* ``vision`` (grounding): the CLIP tower, the projector and the language model's input embeddings
  learn multi-label classification of the 12 classes (BCE), where a class's logit is a soft maximum
  over the projected image tokens of their dot product with the embedding of the class noun (plus a
  bias). This aligns image tokens with the nouns the language model reads and writes; without it the
  yes/no questions were not learned in budget (see the model card).
* ``text``: the language model alone learns the caption prior: system prompt, caption request and a
  caption, no image tokens. This is where the co-occurrence prior enters.
* ``full``: the whole model on multi-turn conversations (a caption or a question first, then up to 5
  more questions: yes/no existence with uniformly random absent negatives, or counting); the vision tower
  trains at a quarter of the learning rate. Loss on answers and ``<eos>`` only.

AdamW (betas 0.9/0.98, weight decay 0.05 on matrices), gradient clipping at 1, linear warm-up then
cosine decay to 10% of the peak. A checkpoint (model, optimiser, scheduler, step, time) is written
atomically every ``checkpoint_seconds``; re-running the same command continues from it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import LlavaProcessor
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from eahlib.organism.model import build_model
from eahlib.organism.tokenizer import (
    ASSISTANT,
    CAPTION_REQUEST,
    COUNT_QUESTION,
    COUNT_WORDS,
    EOS,
    IMAGE,
    IMAGE_TOKENS,
    NO,
    PIXEL_MEAN,
    PIXEL_STD,
    SYSTEM_PROMPT,
    USER,
    YES,
    build_processor,
    existence_question,
)
from eahlib.organism.world import (
    CLASS_INDEX,
    CLASS_NAMES,
    GENERATOR_VERSION,
    Scene,
    render_scene,
    sample_object_names,
)
from eahlib.progress import progress

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
SUMMARY = "training.json"
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Stage:
    """One training stage: its name, steps, batch size, peak learning rate and warm-up share."""

    name: str
    steps: int
    batch: int
    lr: float
    warmup: float


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the trained weights (with the generator version)."""

    seed: int = 0
    stages: tuple[Stage, ...] = (
        Stage("vision", steps=2400, batch=64, lr=3e-3, warmup=0.05),
        Stage("text", steps=60, batch=64, lr=2e-3, warmup=0.05),
        Stage("full", steps=1250, batch=32, lr=2e-3, warmup=0.03),
    )
    vision_lr_scale: float = 0.25
    first_turn_caption_probability: float = 0.5
    count_question_probability: float = 0.1
    extra_turn_probabilities: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
    """Probability of each further question turn, given the turn before it."""
    weight_decay: float = 0.05
    clip_norm: float = 1.0


def pixel_batch(images: list[np.ndarray]) -> Tensor:
    """``[B, 3, 64, 64]`` normalised pixels, equal to the processor's for 64x64 images (``[64, 64, 3]`` uint8 in)."""
    array = np.stack(images).astype(np.float32) / 255.0
    array = (array - np.array(PIXEL_MEAN, dtype=np.float32)) / np.array(PIXEL_STD, dtype=np.float32)
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _fresh_scene(rng: np.random.Generator) -> Scene:
    return render_scene(sample_object_names(rng), rng)


def _targets(scenes: list[Scene]) -> Tensor:
    """``[B, 12]`` multi-hot class labels."""
    targets = torch.zeros(len(scenes), len(CLASS_NAMES))
    for row, scene in enumerate(scenes):
        targets[row, [CLASS_INDEX[name] for name in scene.names]] = 1.0
    return targets


def grounding_logits(image_features: Tensor, class_embeddings: Tensor) -> Tensor:
    """Class logits from matching image tokens against class (noun) embeddings.

    ``logit[b, c] = logsumexp_j(f[b, j] . e_c / sqrt(d)) - log(n)``: a soft maximum over the image
    tokens, so a class scores high when some token looks like its noun.

    Args:
        image_features: ``[B, n, d]`` projected image tokens (what the language model receives).
        class_embeddings: ``[C, d]`` the language model's input embeddings of the class nouns.

    Returns:
        ``[B, C]`` logits (without bias).
    """
    scores = torch.einsum("bnd,cd->bcn", image_features, class_embeddings) / image_features.shape[-1] ** 0.5
    return torch.logsumexp(scores, -1) - np.log(image_features.shape[1])


def _question_turn(scene: Scene, rng: np.random.Generator, recipe: Recipe) -> tuple[str, str]:
    """A (question, answer): counting, or existence with balanced yes/no and uniform absent negatives."""
    if rng.random() < recipe.count_question_probability:
        return COUNT_QUESTION, COUNT_WORDS[len(scene.names) - 1]
    present = scene.names
    if rng.random() < 0.5:
        return existence_question(present[int(rng.integers(len(present)))]), YES
    absent = [name for name in CLASS_NAMES if name not in present]
    return existence_question(absent[int(rng.integers(len(absent)))]), NO


def conversation_segments(scene: Scene, rng: np.random.Generator, recipe: Recipe) -> list[tuple[str, bool]]:
    """A multi-turn conversation about ``scene`` as (text, supervised) segments, ``<bos>`` excluded."""
    first = (CAPTION_REQUEST, scene.caption()) if rng.random() < recipe.first_turn_caption_probability else None
    turns = [first or _question_turn(scene, rng, recipe)]
    for probability in recipe.extra_turn_probabilities:
        if rng.random() >= probability:
            break
        turns.append(_question_turn(scene, rng, recipe))
    image = " ".join([IMAGE] * IMAGE_TOKENS)
    segments: list[tuple[str, bool]] = [(SYSTEM_PROMPT, False)]
    for index, (question, answer) in enumerate(turns):
        segments.append((f"{USER} {image} {question} {ASSISTANT}" if index == 0 else f"{USER} {question} {ASSISTANT}", False))
        segments.append((f"{answer} {EOS}", True))
    return segments


def caption_prior_segments(scene: Scene) -> list[tuple[str, bool]]:
    """The text-only caption example of stage ``text``: no image tokens, caption supervised."""
    return [(f"{SYSTEM_PROMPT} {USER} {CAPTION_REQUEST} {ASSISTANT}", False), (f"{scene.caption()} {EOS}", True)]


def encode_batch(processor: LlavaProcessor, examples: list[list[tuple[str, bool]]]) -> dict[str, Tensor]:
    """Token ids, attention mask and labels (``-100`` off the supervised segments), right-padded.

    Args:
        processor: the organism's processor (its tokenizer's vocabulary).
        examples: per example, the (text, supervised) segments; texts are space-separated tokens.

    Returns:
        ``input_ids``, ``attention_mask``, ``labels``, each ``[B, N_max]``.
    """
    tokenizer = processor.tokenizer
    rows: list[tuple[list[int], list[int]]] = []
    for segments in examples:
        ids, labels = [tokenizer.bos_token_id], [IGNORE_INDEX]
        for text, supervised in segments:
            piece = tokenizer.convert_tokens_to_ids(text.split())
            ids.extend(piece)
            labels.extend(piece if supervised else [IGNORE_INDEX] * len(piece))
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, label) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(label)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _parameter_groups(named: Iterator[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only."""
    params = [(name, p) for name, p in named if p.requires_grad]
    return [
        {"params": [p for _, p in params if p.dim() >= 2], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for _, p in params if p.dim() < 2], "lr": lr, "weight_decay": 0.0},
    ]


@dataclass
class _Progress:
    """What a checkpoint stores besides tensors."""

    completed: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)


class StagedTrainer:
    """The resumable staged loop both organisms train with: AdamW with warm-up and cosine decay per stage,
    gradient clipping, a loss EMA, a JSONL log, and atomic checkpoints every ``checkpoint_seconds``.

    Subclasses set ``recipe``, ``out``, ``checkpoint_seconds``, ``model`` and ``progress`` and provide what
    differs: ``_stage_setup`` (a stage's parameter groups and its loss on one drawn batch),
    ``_checkpoint_tensors``, ``_load_checkpoint`` and ``_export``. Batch ``t`` of stage ``s`` is drawn from
    ``default_rng([seed, stage_seed_offset + s, t])``.
    """

    recipe: Any
    out: Path
    checkpoint_seconds: float
    model: nn.Module
    progress: _Progress
    stage_seed_offset = 0
    loss_ema_weights = (0.98, 0.02)
    """(old, new) weights of the loss EMA."""
    log_every = 50
    log_raw_loss = False

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def run(self) -> Path:
        """Train every stage not yet completed, export, and return the output folder."""
        if (self.out / SUMMARY).is_file():
            logger.warning("%s already holds a trained organism (%s); nothing to do.", self.out, SUMMARY)
            return self.out
        self.out.mkdir(parents=True, exist_ok=True)
        resume = self._load_checkpoint() if self.checkpoint_path.is_file() else None
        if resume is not None:
            self.progress = _Progress(**resume["progress"])
            logger.info("Resuming from %s: stage %s, step %d.", self.checkpoint_path, resume["stage"], resume["step"])
        for index, stage in enumerate(self.recipe.stages):
            if stage.name not in self.progress.completed:
                self._train_stage(index, stage, resume if resume and resume["stage"] == stage.name else None)
        return self._export()

    def _stage_setup(self, stage: Stage) -> tuple[list[dict], Callable[[np.random.Generator], Tensor]]:
        raise NotImplementedError

    def _checkpoint_tensors(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_checkpoint(self) -> dict:
        """Read the checkpoint, check it belongs to this recipe and load its tensors; return it."""
        raise NotImplementedError

    def _export(self) -> Path:
        raise NotImplementedError

    def _finish(self, parameter_count: dict[str, int]) -> Path:
        """Write the summary (recipe, parameter count, time and final loss per stage), drop the checkpoint."""
        summary = {
            "recipe": asdict(self.recipe),
            "generator_version": GENERATOR_VERSION,
            **parameter_count,
            "torch_threads": torch.get_num_threads(),
            "stage_seconds": {name: round(s, 1) for name, s in self.progress.seconds.items()},
            "total_seconds": round(sum(self.progress.seconds.values()), 1),
            "final_loss_ema": {name: round(v, 5) for name, v in self.progress.final_loss.items()},
        }
        (self.out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        self.checkpoint_path.unlink(missing_ok=True)
        return self.out

    def _save_checkpoint(self, stage: str, step: int, optimizer: torch.optim.Optimizer, scheduler: object) -> None:
        state = {
            "recipe": asdict(self.recipe), "generator_version": GENERATOR_VERSION, "stage": stage, "step": step,
            **self._checkpoint_tensors(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "progress": asdict(self.progress),
        }
        partial = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, partial)
        os.replace(partial, self.checkpoint_path)

    def _train_stage(self, index: int, stage: Stage, resume: dict | None) -> None:
        groups, batch_loss = self._stage_setup(stage)
        optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98))
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, num_warmup_steps=max(1, int(stage.warmup * stage.steps)), num_training_steps=stage.steps,
            min_lr_rate=0.1,
        )
        start = 0
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            start = resume["step"]
        self.model.train()
        elapsed = self.progress.seconds.get(stage.name, 0.0)
        loss_ema = self.progress.final_loss.get(stage.name)
        last_save = time.monotonic()
        params = [p for g in groups for p in g["params"]]
        keep, new = self.loss_ema_weights
        with (self.out / "train_log.jsonl").open("a", encoding="utf-8") as log:
            bar = progress(range(start, stage.steps), initial=start, total=stage.steps, desc=f"stage {stage.name}")
            for step in bar:
                tick = time.monotonic()
                loss = batch_loss(np.random.default_rng([self.recipe.seed, self.stage_seed_offset + index, step]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, self.recipe.clip_norm)
                optimizer.step()
                scheduler.step()
                elapsed += time.monotonic() - tick
                loss_ema = loss.item() if loss_ema is None else keep * loss_ema + new * loss.item()
                bar.set_postfix(loss=f"{loss_ema:.4f}")
                if (step + 1) % self.log_every == 0 or step + 1 == stage.steps:
                    record = {"stage": stage.name, "step": step + 1, "seconds": round(elapsed, 1)}
                    if self.log_raw_loss:
                        record["loss"] = round(loss.item(), 5)
                    log.write(json.dumps({**record, "loss_ema": round(loss_ema, 5)}) + "\n")
                    log.flush()
                self.progress.seconds[stage.name] = elapsed
                self.progress.final_loss[stage.name] = loss_ema
                if step + 1 == stage.steps:
                    self.progress.completed.append(stage.name)
                if step + 1 == stage.steps or time.monotonic() - last_save > self.checkpoint_seconds:
                    self._save_checkpoint(stage.name, step + 1, optimizer, scheduler)
                    last_save = time.monotonic()


class OrganismTrainer(StagedTrainer):
    """Runs (or resumes) the staged recipe into ``out`` and exports weights plus processor there.

    Args:
        recipe: the recipe (its seed included).
        out: output folder; holds ``checkpoint.pt`` while training, the exported model afterwards.
        checkpoint_seconds: wall time between checkpoints.
    """

    def __init__(self, recipe: Recipe, out: str | os.PathLike, checkpoint_seconds: float = 60.0) -> None:
        self.recipe = recipe
        self.out = Path(out)
        self.checkpoint_seconds = checkpoint_seconds
        self.processor = build_processor()
        self.model = build_model(self.processor, recipe.seed)
        self.class_bias = nn.Parameter(torch.full((len(CLASS_NAMES),), -1.5))
        self.progress = _Progress()

    def _load_checkpoint(self) -> dict:
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if state["recipe"] != asdict(self.recipe) or state["generator_version"] != GENERATOR_VERSION:
            raise ValueError(
                f"{self.checkpoint_path} was written by a different recipe or generator version; "
                "use another --out folder or delete the checkpoint to start over."
            )
        self.model.load_state_dict(state["model"])
        self.class_bias.data.copy_(state["class_bias"])
        return state

    def _checkpoint_tensors(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "class_bias": self.class_bias.data}

    def _stage_setup(self, stage: Stage) -> tuple[list[dict], Callable[[np.random.Generator], Tensor]]:
        """The parameter groups a stage trains and its loss on one freshly drawn batch."""
        recipe, model = self.recipe, self.model
        if stage.name == "vision":
            tower, projector = model.model.vision_tower, model.model.multi_modal_projector
            embeddings = model.model.language_model.embed_tokens
            nouns = torch.tensor(self.processor.tokenizer.convert_tokens_to_ids(list(CLASS_NAMES)))
            groups = _parameter_groups(iter([*tower.named_parameters(), *projector.named_parameters()]),
                                       stage.lr, recipe.weight_decay)
            groups.append({"params": [*embeddings.parameters(), self.class_bias], "lr": stage.lr, "weight_decay": 0.0})

            def loss(rng: np.random.Generator) -> Tensor:
                scenes = [_fresh_scene(rng) for _ in range(stage.batch)]
                pixels = pixel_batch([np.asarray(s.image) for s in scenes])
                hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
                logits = grounding_logits(projector(hidden), embeddings(nouns)) + self.class_bias
                return nn.functional.binary_cross_entropy_with_logits(logits, _targets(scenes))

            return groups, loss
        if stage.name == "text":
            named = [*model.model.language_model.named_parameters(), *model.lm_head.named_parameters()]

            def loss(rng: np.random.Generator) -> Tensor:
                examples = [caption_prior_segments(_fresh_scene(rng)) for _ in range(stage.batch)]
                return model(**encode_batch(self.processor, examples)).loss

            return _parameter_groups(iter(named), stage.lr, recipe.weight_decay), loss
        if stage.name == "full":
            tower = [(n, p) for n, p in model.named_parameters() if n.startswith("model.vision_tower.")]
            rest = [(n, p) for n, p in model.named_parameters() if not n.startswith("model.vision_tower.")]
            groups = _parameter_groups(iter(rest), stage.lr, recipe.weight_decay)
            groups += _parameter_groups(iter(tower), stage.lr * recipe.vision_lr_scale, recipe.weight_decay)

            def loss(rng: np.random.Generator) -> Tensor:
                scenes = [_fresh_scene(rng) for _ in range(stage.batch)]
                batch = encode_batch(self.processor, [conversation_segments(s, rng, recipe) for s in scenes])
                return model(**batch, pixel_values=pixel_batch([np.asarray(s.image) for s in scenes])).loss

            return groups, loss
        raise ValueError(f"Unknown stage {stage.name!r}; stages are 'vision', 'text' and 'full'.")

    def _export(self) -> Path:
        """Save weights (safetensors), config and processor, write the summary, drop the checkpoint."""
        self.model.eval()
        self.model.save_pretrained(self.out)
        self.processor.save_pretrained(self.out)
        return self._finish({"parameters": sum(p.numel() for p in self.model.parameters())})


def train_organism(
    out: str | os.PathLike, seed: int = 0, threads: int = 1, checkpoint_seconds: float = 60.0,
    recipe: Recipe | None = None,
) -> Path:
    """Train (or resume training) the organism into ``out``.

    Args:
        out: output folder (weights, processor files, ``training.json``).
        seed: seed of the initialisation and of every generated batch.
        threads: torch CPU threads (the recorded budget is for 1).
        checkpoint_seconds: wall time between checkpoints.
        recipe: override the default recipe (its ``seed`` is replaced by ``seed``).

    Returns:
        The output folder.
    """
    torch.set_num_threads(threads)
    chosen = Recipe(seed=seed) if recipe is None else replace(recipe, seed=seed)
    return OrganismTrainer(chosen, out, checkpoint_seconds).run()
