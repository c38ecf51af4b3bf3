"""Visual Contrastive Decoding (VCD; Leng et al., "Mitigating Object Hallucinations in Large
Vision-Language Models through Visual Contrastive Decoding", CVPR 2024).

At every step the next-token logits with the image, ``l``, are contrasted with those with a
distorted image, ``l'``: ``(1 + alpha) * l - alpha * l'``, and tokens with ``p < beta * max p``
under the original logits are removed (adaptive plausibility constraint). The distorted image
is the pixel tensor after ``noise_step`` of 1000 forward-diffusion steps,
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, with betas
``sigmoid(linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5``.

Defaults: ``alpha=1``, ``beta=0.1``, ``noise_step=500``, the defaults of DAMO-NLP-SG/VCD's eval
scripts (``experiments/eval/object_hallucination_vqa_{llava,instructblip,qwenvl}.py``;
``vcd_utils/vcd_sample.py`` falls back to the same ``beta``). Its POPE script
(``experiments/cd_scripts/llava1.5_pope.bash``) passes ``cd_beta`` 0.2 instead; eahlib keeps 0.1,
the value of the method's own code and of every model's script, so that one default serves
captioning (no released script) and POPE alike. ``beta=0.2`` reproduces the POPE script.
As released, the contrast and the cutoff use raw logits (``log beta + max logit``, which is the
same test as ``p < beta * max p``) and ``abar_t`` is the cumulative product up to index
``noise_step`` (0-based). The second forward runs batched beside ``generate`` with its own KV
cache. The noise is seeded: each image's noise comes from its own generator seeded with
``seed`` and the image's bytes, so it is reproducible and a sample's noise does not depend on
its batch (families that pack the images of a batch into one patch tensor, such as Qwen2-VL,
draw one noise for the whole tensor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor

from eahlib.methods.contrastive import FollowerStream, check_fraction, greedy_with, implausible
from eahlib.methods.registry import Component, register

DIFFUSION_STEPS = 1000


def diffusion_alpha_bar(noise_step: int) -> float:
    """``abar_t``: the fraction of the signal's variance left after ``noise_step`` (0-based) steps."""
    if not 0 <= noise_step < DIFFUSION_STEPS:
        raise ValueError(f"noise_step must be in [0, {DIFFUSION_STEPS}), got {noise_step!r}.")
    betas = torch.sigmoid(torch.linspace(-6, 6, DIFFUSION_STEPS, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    return float(torch.cumprod(1 - betas, 0)[noise_step])


def _seeded_noise(image: Tensor, seed: int) -> Tensor:
    digest = hashlib.sha256(f"{seed}:".encode() + image.detach().float().cpu().numpy().tobytes()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))  # the CPU generator keeps 32 bits
    return torch.randn(image.shape, generator=generator, dtype=torch.float32)


def diffusion_noise(pixel_values: Tensor, noise_step: int, seed: int, batch_size: int) -> Tensor:
    """The forward-diffusion sample ``x_t`` of a pixel tensor, reproducibly seeded.

    Args:
        pixel_values: ``[B, ...]`` one image per sample, or a packed ``[P, D]`` patch tensor.
        noise_step: ``t`` in ``[0, 1000)``.
        seed: noise seed.
        batch_size: ``B``; a leading dimension of another size counts as one packed tensor.

    Returns:
        A tensor like ``pixel_values`` (same shape, dtype and device).
    """
    abar = diffusion_alpha_bar(noise_step)
    images = list(pixel_values) if pixel_values.shape[0] == batch_size else [pixel_values]
    noise = torch.stack([_seeded_noise(image, seed) for image in images]).reshape(pixel_values.shape)
    noised = abar**0.5 * pixel_values.float() + (1 - abar) ** 0.5 * noise.to(pixel_values.device)
    return noised.to(pixel_values.dtype)


class VisualContrast(LogitsProcessor):
    """``(1 + alpha) * l - alpha * l'`` on the plausible tokens; ``l'`` from the noised-image stream.

    Args:
        stream: the forward stream on the noised image.
        alpha: contrast strength (0 = plain decoding).
        beta: plausibility cutoff relative to the most likely token.
    """

    def __init__(self, stream: FollowerStream, alpha: float, beta: float) -> None:
        self.stream, self.alpha, self.beta = stream, alpha, beta

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        noised = self.stream.next_logits(input_ids).to(scores.device)
        contrast = (1 + self.alpha) * scores - self.alpha * noised
        return contrast.masked_fill(implausible(scores, self.beta), -float("inf"))


def vcd(
    model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int,
    alpha: float, beta: float, noise_step: int, seed: int,
) -> Tensor:
    """Greedy VCD; returns the new tokens ``[B, T]``.

    Args:
        model: the vision-language model.
        inputs: the processor's left-padded batch (``input_ids``, ``attention_mask``, ``pixel_values``...).
        max_new_tokens: generation length limit.
        alpha: contrast strength (published 1).
        beta: plausibility cutoff (published 0.1).
        noise_step: diffusion step of the distorted image (published 500 of 1000).
        seed: noise seed.
    """
    if "pixel_values" not in inputs:
        raise ValueError("vcd needs the image (pixel_values) in the inputs: it contrasts against a noised copy of it.")
    if alpha < 0:
        raise ValueError(f"vcd's alpha must be >= 0, got {alpha!r}.")
    check_fraction("vcd's beta", beta)
    batch_size = int(inputs["input_ids"].shape[0])
    noised = {**inputs, "pixel_values": diffusion_noise(inputs["pixel_values"], noise_step, seed, batch_size)}
    stream = FollowerStream(model, noised, int(inputs["input_ids"].shape[1]))
    return greedy_with(model, inputs, max_new_tokens, [VisualContrast(stream, alpha, beta)])


register(Component(
    "vcd", "decoder", vcd, {"alpha": 1.0, "beta": 0.1, "noise_step": 500, "seed": 0},
    "Leng et al., Mitigating Object Hallucinations in Large Vision-Language Models through Visual Contrastive "
    "Decoding, CVPR 2024",
    description="VCD: contrast the logits on the image with those on a diffusion-noised image (alpha), "
                "with an adaptive plausibility cutoff (beta)",
))
