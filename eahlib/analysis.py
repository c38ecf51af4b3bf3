"""Sink analyses over sets of images: the loops the notebooks call (they hold no logic).

Each survey runs the model on a list of images with one prompt, in batches with a progress
bar, and returns a tidy :class:`pandas.DataFrame`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from eahlib.bench.runner import chat_prompt, encode_batch
from eahlib.metrics import massive_activation_sinks, sink_criterion
from eahlib.profile import SinkProfile, sink_profile
from eahlib.progress import progress

ImageLike = str | os.PathLike | Image.Image


def model_inputs(model: nn.Module, processor: Any, images: Sequence[ImageLike], prompt: str) -> dict[str, torch.Tensor]:
    """Left-padded processor inputs for ``images`` with one chat-template ``prompt``, on the model's device."""
    return encode_batch(model, processor, images, [chat_prompt(processor, prompt)] * len(images))


def _batches(images: Sequence[ImageLike], size: int, desc: str) -> Iterator[tuple[int, Sequence[ImageLike]]]:
    for start in progress(range(0, len(images), size), desc=desc, unit="batch"):
        yield start, images[start:start + size]


def sink_survey(
    model: nn.Module,
    processor: Any,
    images: Sequence[ImageLike],
    prompt: str,
    threshold: float | None = None,
    relative_threshold: float | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Sink density of every layer and head for each image.

    Returns:
        Columns ``image, layer, head, density, n_image_tokens, criterion, criterion_value``.
    """
    criterion = sink_criterion(threshold, relative_threshold)
    frames = []
    for start, chunk in _batches(images, batch_size, "sink survey"):
        profile = sink_profile(model, **_criterion_kwargs(criterion), **model_inputs(model, processor, chunk, prompt))
        frame = profile.to_frame()
        frame.insert(0, "image", frame.pop("sample") + start)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _criterion_kwargs(criterion: Any) -> dict[str, float]:
    return {"threshold" if criterion.kind == "absolute" else "relative_threshold": criterion.value}


@dataclass(frozen=True)
class AttentionMap:
    """Received scores over one sample's image tokens, laid out for a figure.

    Attributes:
        grid: ``[rows, cols]`` scores (NaN where a wrapped layout has no token).
        spatial: the grid is the image's square patch grid (row-major, as CLIP and SigLIP emit them), so
            it can be drawn over the image; otherwise the tokens are in prompt order, wrapped into rows
            (tiled, merged or multi-crop layouts, whose geometry the token count alone does not give).
    """

    grid: np.ndarray
    spatial: bool


def image_grid(n_tokens: int) -> tuple[int, int] | None:
    """The square patch grid of ``n_tokens`` image tokens, or ``None`` when they do not form one."""
    side = math.isqrt(n_tokens)
    return (side, side) if side * side == n_tokens else None


def attention_map(profile: SinkProfile, layer: int, sample: int, head: int,
                  grid: tuple[int, int] | None = None) -> AttentionMap:
    """Received scores over one sample's image tokens: the patch grid (``grid``, or square), else prompt order."""
    row = profile.layers.index(layer)
    scores = profile.image_scores(row, sample)[head].numpy()
    shape = grid or image_grid(scores.shape[0])
    if shape is not None:
        if shape[0] * shape[1] != scores.shape[0]:
            raise ValueError(f"grid={shape} holds {shape[0] * shape[1]} tokens, but the sample has {scores.shape[0]}.")
        return AttentionMap(scores.reshape(shape), spatial=True)
    cols = math.isqrt(scores.shape[0] - 1) + 1
    padded = np.full(cols * -(-scores.shape[0] // cols), np.nan)
    padded[: scores.shape[0]] = scores
    return AttentionMap(padded.reshape(-1, cols), spatial=False)


def massive_activation_survey(
    model: nn.Module,
    processor: Any,
    images: Sequence[ImageLike],
    prompt: str,
    dims: Sequence[int] | str | None = None,
    tau: float = 20.0,
    relative_threshold: float = 4.0,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Attention-score vision sinks versus massive-activation sinks, per image and layer.

    A token is an attention sink of a layer if it is a vision sink of at least one head; it is a
    massive-activation sink if :func:`eahlib.massive_activation_sinks` flags the layer's input
    hidden state there.

    Returns:
        Columns ``image, layer, attention_sinks, massive_sinks, massive_image_sinks, overlap,
        massive_on_bos`` (counts of tokens; overlap = image tokens that are both).
    """
    rows = []
    for start, chunk in _batches(images, batch_size, "massive activations"):
        inputs = model_inputs(model, processor, chunk, prompt)
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
        profile = sink_profile(model, relative_threshold=relative_threshold, **inputs)
        real = profile.attention_mask
        first_real = real.float().argmax(-1)
        sinks = profile.sinks()
        for layer_row, layer in enumerate(profile.layers):
            massive = massive_activation_sinks(hidden[layer].cpu(), dims, tau) & real
            attention = sinks[layer_row].any(1)
            for b in range(len(chunk)):
                rows.append({
                    "image": start + b, "layer": layer,
                    "attention_sinks": int(attention[b].sum()),
                    "massive_sinks": int(massive[b].sum()),
                    "massive_image_sinks": int((massive[b] & profile.image_mask[b]).sum()),
                    "overlap": int((massive[b] & attention[b]).sum()),
                    "massive_on_bos": bool(massive[b, first_real[b]]),
                })
    return pd.DataFrame(rows)


def save_frame(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a result table as CSV (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def layer_matrix(survey: pd.DataFrame) -> np.ndarray:
    """``[images, layers]`` mean density over heads, from a :func:`sink_survey` frame."""
    return survey.groupby(["image", "layer"]).density.mean().unstack("layer").to_numpy()


def densest_head_maps(profile: SinkProfile, layers: Sequence[int], sample: int = 0) -> dict[str, AttentionMap]:
    """Attention maps of the densest head of each given layer, titled ``"layer L, head H (n sinks)"``."""
    maps = {}
    for layer in layers:
        row = profile.layers.index(layer)
        head = int(profile.density[row, sample].argmax())
        title = f"layer {layer}, head {head} ({int(profile.density[row, sample, head])} sinks)"
        maps[title] = attention_map(profile, layer, sample, head)
    return maps
