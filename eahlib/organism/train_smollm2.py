"""LLaVA-style CPU training of the SmolLM2 organism (:mod:`eahlib.organism.smollm2`).

Two stages on freshly generated shapes-world data (batch ``t`` of stage ``s`` is drawn from
``numpy.random.default_rng([seed, 100 + s, t])``, so a resumed run sees exactly the data an
uninterrupted one would), bf16 autocast, AdamW, gradient clipping at 1, warm-up then cosine decay:

* ``align`` (LLaVA stage 1): only the projector trains, on caption conversations; the language model
  and the vision tower are frozen.
* ``instruct`` (LLaVA stage 2): a LoRA adapter on every linear layer of the language model (peft),
  the projector and, at a quarter of the learning rate, the vision tower, on conversations that start
  with a caption request or a yes/no question and go on with up to three more yes/no questions.
  Questions are balanced (half about a present object); an absent object is a uniformly random absent
  class (half of the negatives), the most frequent absent class or the absent co-occurrence partner
  (a quarter each: POPE's popular and adversarial choices).

All prompts use the ChatML template of :data:`~eahlib.organism.smollm2.CHAT_TEMPLATE`; the loss is on the
assistant answers and their ``<|im_end|>`` only. A checkpoint (trainable tensors, optimiser, scheduler,
step, time) is written atomically every ``checkpoint_seconds``; re-running the same command continues.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from eahlib.organism.export import pope_negatives
from eahlib.organism.smollm2 import ADAPTER_DIR, IMAGE, MULTIMODAL_FILE, assemble
from eahlib.organism.tokenizer import CAPTION_REQUEST, IMAGE_TOKENS, existence_question
from eahlib.organism.train import (
    IGNORE_INDEX,
    Stage,
    StagedTrainer,
    _fresh_scene,
    _parameter_groups,
    _Progress,
    pixel_batch,
)
from eahlib.organism.world import GENERATOR_VERSION, Scene

logger = logging.getLogger(__name__)

PAD_MULTIPLE = 16
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the trained parts (with the generator version and the GGUF file)."""

    seed: int = 0
    stages: tuple[Stage, ...] = (
        Stage("align", steps=60, batch=8, lr=1e-3, warmup=0.1),
        Stage("instruct", steps=560, batch=8, lr=1e-3, warmup=0.05),
    )
    lora_rank: int = 16
    lora_alpha: int = 32
    vision_lr_scale: float = 0.25
    projector_lr_scale: float = 1.0
    first_turn_caption_probability: float = 0.6
    extra_turn_probabilities: tuple[float, ...] = (0.8, 0.6, 0.4)
    negative_kinds: tuple[tuple[str, float], ...] = (("random", 0.5), ("popular", 0.25), ("adversarial", 0.25))
    weight_decay: float = 0.0
    clip_norm: float = 1.0


def question_turn(scene: Scene, rng: np.random.Generator, recipe: Recipe) -> tuple[str, str]:
    """A balanced yes/no existence question about ``scene`` and its answer."""
    present = scene.names
    if rng.random() < 0.5:
        return existence_question(present[int(rng.integers(len(present)))]), "yes"
    kinds, weights = zip(*recipe.negative_kinds)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(weights) / sum(weights)))]
    return existence_question(pope_negatives(present, rng)[kind]), "no"


def conversation_turns(scene: Scene, rng: np.random.Generator, recipe: Recipe, caption_only: bool = False) -> list[tuple[str, str]]:
    """(question, answer) turns of one training conversation about ``scene``."""
    if caption_only:
        return [(CAPTION_REQUEST, scene.caption())]
    first = rng.random() < recipe.first_turn_caption_probability
    turns = [(CAPTION_REQUEST, scene.caption()) if first else question_turn(scene, rng, recipe)]
    for probability in recipe.extra_turn_probabilities:
        if rng.random() >= probability:
            break
        turns.append(question_turn(scene, rng, recipe))
    return turns


def conversation_segments(turns: list[tuple[str, str]]) -> list[tuple[str, bool]]:
    """ChatML (text, supervised) segments; the first user turn carries the image placeholders, expanded."""
    image = IMAGE * IMAGE_TOKENS
    segments: list[tuple[str, bool]] = []
    for index, (question, answer) in enumerate(turns):
        prefix = f"{image}\n" if index == 0 else ""
        segments.append((f"<|im_start|>user\n{prefix}{question}<|im_end|>\n<|im_start|>assistant\n", False))
        segments.append((f"{answer}<|im_end|>", True))
        segments.append(("\n", False))
    return segments


def encode_conversations(
    tokenizer: object, examples: list[list[tuple[str, bool]]], pad_multiple: int = 1
) -> dict[str, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` off the supervised segments).

    ``pad_multiple`` rounds the width up (few distinct shapes let the CPU kernels be reused across steps).
    """
    rows = []
    for segments in examples:
        ids: list[int] = []
        labels: list[int] = []
        for text, supervised in segments:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.extend(piece)
            labels.extend(piece if supervised else [IGNORE_INDEX] * len(piece))
        rows.append((ids, labels))
    width = -(-max(len(ids) for ids, _ in rows) // pad_multiple) * pad_multiple
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, label) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(label)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _compatible(saved: dict, recipe: dict, stage: str) -> bool:
    """A checkpoint taken in ``stage`` resumes under ``recipe`` if nothing up to that stage differs
    (later stages may change, e.g. their step counts)."""
    names = [s["name"] for s in saved["stages"]]
    done = names.index(stage) + 1 if stage in names else len(names)
    head = {k: v for k, v in saved.items() if k != "stages"}
    return head == {k: v for k, v in recipe.items() if k != "stages"} and \
        [dict(s) for s in saved["stages"][:done]] == [dict(s) for s in recipe["stages"][:done]]


class SmolLM2Trainer(StagedTrainer):
    """Runs (or resumes) the recipe into ``out`` and exports the trained parts there."""

    stage_seed_offset = 100
    loss_ema_weights = (0.97, 0.03)
    log_every = 10
    log_raw_loss = True

    def __init__(self, recipe: Recipe, out: str | os.PathLike, checkpoint_seconds: float = 120.0) -> None:
        from peft import LoraConfig, get_peft_model

        self.recipe = recipe
        self.out = Path(out)
        self.checkpoint_seconds = checkpoint_seconds
        base, self.processor = assemble(seed=recipe.seed)
        self.tokenizer = self.processor.tokenizer
        base.requires_grad_(False)
        config = LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
                            target_modules=LORA_TARGETS, bias="none")
        self.model = get_peft_model(base, config)
        self.base = base
        self.progress = _Progress()
        self._check_tokenization()

    def _check_tokenization(self) -> None:
        """The segment-wise encoding equals the processor's encoding of the chat-templated prompt."""
        from eahlib.organism.world import make_scene

        scene = make_scene(0, 0)
        segments = conversation_segments([(CAPTION_REQUEST, scene.caption())])
        ids = encode_conversations(self.tokenizer, [segments])["input_ids"][0].tolist()
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_REQUEST}]},
                        {"role": "assistant", "content": [{"type": "text", "text": scene.caption()}]}]
        text = self.processor.apply_chat_template(conversation)
        expected = self.processor(images=scene.image, text=text, return_tensors="pt")["input_ids"][0].tolist()
        if ids != expected:
            raise RuntimeError(f"Training encoding differs from the chat template's:\n{ids}\n{expected}")

    def _named(self, prefix: str) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if prefix in n]

    def _stage_groups(self, stage: Stage) -> list[dict]:
        """Freeze everything, then unfreeze and group what ``stage`` trains."""
        parts = [("multi_modal_projector", self.recipe.projector_lr_scale)]
        if stage.name == "instruct":
            parts += [("vision_tower", self.recipe.vision_lr_scale), ("lora_", 1.0)]
        for _, p in self.model.named_parameters():
            p.requires_grad_(False)
        groups: list[dict] = []
        for prefix, scale in parts:
            named = self._named(prefix)
            for _, p in named:
                p.requires_grad_(True)
            groups += _parameter_groups(iter(named), stage.lr * scale, self.recipe.weight_decay)
        return [g for g in groups if g["params"]]

    def _stage_setup(self, stage: Stage) -> tuple[list[dict], Callable[[np.random.Generator], Tensor]]:
        return self._stage_groups(stage), partial(self._loss, stage)

    def _loss(self, stage: Stage, rng: np.random.Generator) -> Tensor:
        scenes = [_fresh_scene(rng) for _ in range(stage.batch)]
        examples = [conversation_segments(conversation_turns(s, rng, self.recipe, stage.name == "align")) for s in scenes]
        batch = encode_conversations(self.tokenizer, examples, PAD_MULTIPLE)
        pixels = pixel_batch([np.asarray(s.image) for s in scenes])
        labels = batch.pop("labels")[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = self.base.model(**batch, pixel_values=pixels, use_cache=False).last_hidden_state[:, :-1]
            supervised = labels != IGNORE_INDEX  # the LM head runs on the supervised positions only
            logits = self.base.lm_head(hidden[supervised])
        return nn.functional.cross_entropy(logits.float(), labels[supervised])

    def _trainable_state(self) -> dict[str, Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters()
                if "lora_" in n or "multi_modal_projector" in n or "vision_tower" in n}

    def _checkpoint_tensors(self) -> dict[str, Any]:
        return {"trainable": self._trainable_state()}

    def _load_checkpoint(self) -> dict:
        resume = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if not _compatible(resume["recipe"], asdict(self.recipe), resume["stage"]) \
                or resume["generator_version"] != GENERATOR_VERSION:
            raise ValueError(f"{self.checkpoint_path} was written by a different recipe or generator version; "
                             "use another --out folder or delete the checkpoint to start over.")
        missing = self.model.load_state_dict(resume["trainable"], strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"Checkpoint has unexpected keys {missing.unexpected_keys[:5]}.")
        return resume

    def _export(self) -> Path:
        """Write the multimodal weights and the LoRA adapter (safetensors), the summary; drop the checkpoint."""
        from safetensors.torch import save_file

        self.model.eval()
        multimodal = {n.removeprefix("base_model.model."): p.detach().contiguous() for n, p in self.model.named_parameters()
                      if "multi_modal_projector" in n or "vision_tower" in n}
        save_file(multimodal, self.out / MULTIMODAL_FILE, metadata={"format": "pt"})
        self.model.save_pretrained(self.out / ADAPTER_DIR)
        (self.out / ADAPTER_DIR / "README.md").unlink(missing_ok=True)
        return self._finish({"trainable_parameters": sum(p.numel() for p in self._trainable_state().values())})


def train_smollm2_organism(
    out: str | os.PathLike, seed: int = 0, threads: int = 2, checkpoint_seconds: float = 120.0,
    recipe: Recipe | None = None,
) -> Path:
    """Train (or resume training) the SmolLM2 organism into ``out``; returns ``out``."""
    torch.set_num_threads(threads)
    chosen = Recipe(seed=seed) if recipe is None else replace(recipe, seed=seed)
    return SmolLM2Trainer(chosen, out, checkpoint_seconds).run()
