"""Vision-aware head divergence (VHD) as an analysis, and EAH's view of the heads beside VHR's.

VHD (He et al., ACL 2025, arXiv:2412.13949, Eq. 4) is, for one generation step, the Euclidean distance
between a head's output with the image and without it (the prompt without its image tokens); a head's
output is its slice of the input to the attention output projection. Token-VHD (T-VHD, Eq. 5) sums over
the layers the ``k`` largest VHD of each layer at one step: how much the token predicted at that step
leans on the image rather than on language priors.

EAH (arXiv:2411.09968) picks, at a shallow layer, the head with the most vision sinks
(:attr:`eahlib.SinkProfile.density`); VHR reinforces the heads above their layer's median VHD. The
two views of a layer's heads are compared by :func:`head_views`.

The paper does not give ``k``; the default here is ``ceil(H / 8)`` (4 of LLaVA's 32 heads), "the most
prominent heads" of Fig. 2, where a few heads stand out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from eahlib.interventions.vhr import (
    LAST_FRACTION,
    PUBLISHED_ALPHA,
    TOKEN_TYPE_KEYS,
    head_divergence,
    prompt_without_image,
    reinforce_vision_heads,
    run_without_image,
)
from eahlib.methods.opera import split_batch
from eahlib.models import attention_layers, image_token_ids, output_projection, uniform_heads
from eahlib.profile import SinkProfile


def default_top_k(n_heads: int) -> int:
    """T-VHD's ``k`` when none is given: ``ceil(H / 8)``."""
    return max(1, math.ceil(n_heads / 8))


def token_divergence(vhd: Tensor, top_k: int) -> Tensor:
    """T-VHD (Eq. 5): the sum over layers of each layer's ``top_k`` largest VHD.

    Args:
        vhd: ``[..., L, H]`` VHD of one step's heads.
        top_k: heads counted per layer.

    Returns:
        ``[...]`` float32.
    """
    if not 1 <= top_k <= vhd.shape[-1]:
        raise ValueError(f"top_k must be in 1..{vhd.shape[-1]} (the heads per layer), got {top_k!r}.")
    return vhd.float().topk(top_k, dim=-1).values.sum((-2, -1))


@dataclass
class HeadDivergence:
    """VHD of every head at every step of one batch, and VHR's choice of heads.

    Attributes:
        vhd: ``[S, L, B, H]`` float32, the stock model's VHD at step ``s`` (step 0: the prompt's last token,
            which predicts the first answer token; step ``s``: the token predicting ``tokens[:, s]``); NaN at
            the steps after a sample's end of sequence.
        reinforced: ``[L, B, H]`` bool, the heads VHR reinforces for each sample (chosen at step 0, layer by
            layer with the earlier layers reinforced); False at layers VHR leaves alone.
        tokens: ``[B, S]`` the token of each step (``-1``: none given or generated).
        layers: the attention layers (rows of ``vhd`` and ``reinforced``).
        vhr_layers: the layers VHR reinforces.
        top_k: T-VHD's heads per layer.
    """

    vhd: Tensor
    reinforced: Tensor
    tokens: Tensor
    layers: list[int]
    vhr_layers: list[int]
    top_k: int

    def first_step(self) -> Tensor:
        """``[L, B, H]`` VHD at the first generation step (the prompt's), the view VHR chooses its heads from."""
        return self.vhd[0]

    def token_vhd(self) -> Tensor:
        """``[B, S]`` T-VHD of each step (NaN after a sample's end)."""
        return token_divergence(self.vhd.permute(2, 0, 1, 3), self.top_k)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table of the first step: one row per (layer, sample, head) with ``vhd`` and ``reinforced``."""
        n_layers, batch, heads = self.reinforced.shape
        grid = np.stack(np.meshgrid(np.array(self.layers), np.arange(batch), np.arange(heads), indexing="ij"), -1)
        frame = pd.DataFrame(grid.reshape(-1, 3), columns=["layer", "sample", "head"])
        frame["vhd"] = self.first_step().reshape(-1).numpy()
        frame["reinforced"] = self.reinforced.reshape(-1).numpy()
        return frame


def _extended(sample: Mapping[str, Tensor], tokens: Tensor) -> dict[str, Tensor]:
    """One sample's prompt followed by ``tokens`` ``[1, T]`` (mask and token types extended)."""
    out = dict(sample)
    out["input_ids"] = torch.cat([sample["input_ids"], tokens], -1)
    out["attention_mask"] = torch.cat([sample["attention_mask"], torch.ones_like(tokens, dtype=sample["attention_mask"].dtype)], -1)
    for key in TOKEN_TYPE_KEYS:
        if isinstance(sample.get(key), Tensor) and sample[key].shape == sample["input_ids"].shape:
            out[key] = torch.cat([sample[key], torch.zeros_like(tokens, dtype=sample[key].dtype)], -1)
    return out


def _last_head_outputs(model: nn.Module, layers: Sequence[int], steps: int, run: object) -> Tensor:
    """``[L, S, H, d]``: the head outputs of the last ``steps`` positions of a one-row forward ``run()``."""
    n_heads, width = uniform_heads(model, layers, "vision_head_divergence")
    seen: dict[int, Tensor] = {}

    def capture(layer: int):
        def hook(module: nn.Module, args: tuple) -> None:
            seen[layer] = args[0][0, -steps:].detach().float().view(steps, n_heads, width)
        return hook

    handles = [output_projection(model, layer).register_forward_pre_hook(capture(layer)) for layer in layers]
    try:
        run()  # type: ignore[operator]
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([seen[layer] for layer in layers])


@torch.no_grad()
def vision_head_divergence(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    max_new_tokens: int = 0,
    tokens: Tensor | None = None,
    top_k: int | None = None,
    alpha: float = PUBLISHED_ALPHA,
    layers: Sequence[int] | None = None,
    last_fraction: float = LAST_FRACTION,
    second_layer: bool = True,
) -> HeadDivergence:
    """VHD of every head (Eq. 4) at the prompt and at each answer token, and the heads VHR reinforces.

    Each sample runs alone (its padding removed): one forward pass of the prompt and its answer with the
    image, one of the same without the image tokens, both without a cache; the steps are read off the last
    positions. The answer is ``tokens`` if given, else the model's greedy answer of ``max_new_tokens`` tokens
    (image-token ids suppressed: they could not be run again without image features). A third pass under
    :func:`eahlib.interventions.vhr.reinforce_vision_heads` records VHR's heads.

    Example:
        >>> divergence = vision_head_divergence(model, inputs, max_new_tokens=32)  # doctest: +SKIP
        >>> divergence.token_vhd()  # [batch, steps]: T-VHD of each generated token  # doctest: +SKIP

    Args:
        model: a supported vision-language model.
        inputs: the processor's left-padded batch.
        max_new_tokens: greedy answer length when ``tokens`` is not given (0: the prompt's step only).
        tokens: ``[B, T]`` answer tokens to score (e.g. the captions of a benchmark run).
        top_k: T-VHD's heads per layer (default :func:`default_top_k`).
        alpha, layers, last_fraction, second_layer: VHR's settings (see ``reinforce_vision_heads``).

    Returns:
        The :class:`HeadDivergence`.
    """
    all_layers = attention_layers(model)
    n_heads, _ = uniform_heads(model, all_layers, "vision_head_divergence")
    top_k = default_top_k(n_heads) if top_k is None else top_k
    if not 1 <= top_k <= n_heads:
        raise ValueError(f"top_k must be in 1..{n_heads} (the heads per layer), got {top_k!r}.")
    image_ids = image_token_ids(model)
    if tokens is not None and bool(torch.isin(tokens, torch.tensor(image_ids, device=tokens.device)).any()):
        raise ValueError("The answer tokens hold an image-token id; they cannot be run again without image features.")
    eos = model.generation_config.eos_token_id
    eos_ids = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos))
    per_sample = []
    for i, sample in enumerate(split_batch(model, inputs)):
        prompt_length = sample["input_ids"].shape[1]
        if tokens is not None:
            answer = tokens[i:i + 1].to(sample["input_ids"].device)
        elif max_new_tokens > 0:
            answer = model.generate(**sample, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                    suppress_tokens=image_ids)[:, prompt_length:]
        else:
            answer = sample["input_ids"][:, :0]
        steps = max(answer.shape[1], 1)
        full = _extended(sample, answer[:, :steps - 1])
        with_image = _last_head_outputs(model, all_layers, steps, lambda: model(**full, use_cache=False))
        text = prompt_without_image(model, full)
        without_image = _last_head_outputs(model, all_layers, steps, lambda: run_without_image(model, text))
        vhd = head_divergence(with_image, without_image).transpose(0, 1)  # [S, L, H]
        ended = torch.isin(answer[0, :steps - 1].cpu(), eos_ids).cumsum(0) > 0
        vhd[1:][ended] = float("nan")
        with reinforce_vision_heads(model, alpha, layers, last_fraction, second_layer) as vhr:
            model(**sample, use_cache=False)
        reinforced = torch.zeros(len(all_layers), n_heads, dtype=torch.bool)
        for row, layer in enumerate(vhr.layers):
            reinforced[all_layers.index(layer)] = vhr.reinforced[0][0, row]
        chosen = answer[0].cpu() if answer.shape[1] else torch.full((1,), -1)
        per_sample.append((vhd.cpu(), reinforced, chosen, vhr.layers))
    width = max(v.shape[0] for v, *_ in per_sample)
    vhd = torch.full((width, len(all_layers), len(per_sample), n_heads), float("nan"))
    chosen_tokens = torch.full((len(per_sample), width), -1, dtype=torch.long)
    for b, (sample_vhd, _, chosen, _) in enumerate(per_sample):
        vhd[:sample_vhd.shape[0], :, b] = sample_vhd
        chosen_tokens[b, :chosen.shape[0]] = chosen
    reinforced = torch.stack([r for _, r, _, _ in per_sample], 1)
    return HeadDivergence(vhd, reinforced, chosen_tokens, all_layers, list(per_sample[0][3]), top_k)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side is constant or not finite (no ranking to compare)."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def head_views(profile: SinkProfile, divergence: HeadDivergence) -> pd.DataFrame:
    """EAH's view of each layer's heads (vision-sink density) beside VHR's (VHD at the first step).

    Args:
        profile: :func:`eahlib.sink_profile` of the batch.
        divergence: :func:`vision_head_divergence` of the same batch.

    Returns:
        One row per (layer, sample) of the layers both cover: ``spearman_rho`` between the heads' sink
        densities and their VHD (NaN when either is constant); ``densest_head``, the head EAH would broadcast at
        that layer (the lowest-index densest head; -1 when no head has a sink); ``densest_reinforced``, whether
        VHR reinforces that head (False at a layer VHR leaves alone or without sinks); ``vhr_layer``; and
        ``n_reinforced``, VHR's heads at the layer.
    """
    batch = profile.density.shape[1]
    if divergence.reinforced.shape[1] != batch:
        raise ValueError(f"The profile has {batch} samples but the divergence {divergence.reinforced.shape[1]}: "
                         "compute both on the same batch.")
    rows = []
    for row, layer in enumerate(profile.layers):
        if layer not in divergence.layers:
            continue
        other = divergence.layers.index(layer)
        for sample in range(batch):
            density = profile.density[row, sample].numpy()
            vhd = divergence.first_step()[other, sample].numpy()
            reinforced = divergence.reinforced[other, sample].numpy()
            densest = int(density.argmax()) if density.max() > 0 else -1
            rows.append({
                "layer": layer, "sample": sample, "spearman_rho": _spearman(density, vhd), "densest_head": densest,
                "densest_reinforced": bool(densest >= 0 and reinforced[densest]),
                "vhr_layer": layer in divergence.vhr_layers, "n_reinforced": int(reinforced.sum()),
            })
    return pd.DataFrame(rows, columns=["layer", "sample", "spearman_rho", "densest_head", "densest_reinforced",
                                       "vhr_layer", "n_reinforced"])
