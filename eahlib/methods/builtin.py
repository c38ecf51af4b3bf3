"""Built-in decoders: plain decoding (greedy, beam, sample)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from eahlib.methods.registry import Component, register


def _new_tokens(model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int, **generate_kwargs: Any) -> Tensor:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    return out[:, inputs["input_ids"].shape[1]:]


def greedy(model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int) -> Tensor:
    """Greedy decoding."""
    return _new_tokens(model, inputs, max_new_tokens, do_sample=False, num_beams=1)


def beam(model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int, num_beams: int) -> Tensor:
    """Beam search (``num_beams=5`` as published for CHAIR)."""
    return _new_tokens(model, inputs, max_new_tokens, do_sample=False, num_beams=num_beams)


def sample(
    model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int, temperature: float, top_p: float, seed: int
) -> Tensor:
    """Nucleus sampling, seeded: the seed is mixed with the batch's prompt so a resumed run
    draws the same tokens for the same batch."""
    torch.manual_seed(seed + int(inputs["input_ids"].sum()) % 1_000_003)
    return _new_tokens(model, inputs, max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p, top_k=0)


register(Component("greedy", "decoder", greedy, {}, "standard", description="greedy decoding: the most likely token"))
register(Component("beam", "decoder", beam, {"num_beams": 5}, "standard",
                   description="beam search (5 beams as in the CHAIR tables of OPERA, VCD and EAH)"))
register(Component("sample", "decoder", sample, {"temperature": 1.0, "top_p": 0.9, "seed": 0},
                   "Holtzman et al., The Curious Case of Neural Text Degeneration, ICLR 2020",
                   description="nucleus (top-p) sampling, seeded per batch so resumed runs repeat"))
