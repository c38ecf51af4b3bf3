"""Built-in components: plain decoding (greedy, beam, sample), EAH and head ablation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from eahlib.ablation import ablate_heads
from eahlib.eah import EnhancedHeads, enhance_attention_heads
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


class _EAHRecorder:
    def __init__(self, enhanced: EnhancedHeads) -> None:
        self.enhanced = enhanced

    def extras(self, batch: int) -> list[dict[str, Any]]:
        heads = self.enhanced.chosen_heads[0] if self.enhanced.chosen_heads else torch.full((batch,), -1)
        densities = self.enhanced.densities[0] if self.enhanced.densities else None
        step = heads.shape[0] // batch  # beam search expands each sample into num_beams rows
        return [
            {"eah_head": int(heads[i * step]),
             "eah_density": int(densities[i * step].max()) if densities is not None else 0}
            for i in range(batch)
        ]


@contextlib.contextmanager
def eah(model: nn.Module, **params: Any) -> Iterator[_EAHRecorder]:
    """EAH (arXiv:2411.09968) around any decoder; see :func:`eahlib.enhance_attention_heads`."""
    with enhance_attention_heads(model, **params) as enhanced:
        yield _EAHRecorder(enhanced)


class _NoRecord:
    def extras(self, batch: int) -> list[dict[str, Any]]:
        return [{} for _ in range(batch)]


@contextlib.contextmanager
def ablate(model: nn.Module, heads: Mapping[str | int, list[int]], mode: str) -> Iterator[_NoRecord]:
    """Zero or mean-ablate heads, ``heads={layer: [head, ...]}`` (see :func:`eahlib.ablate_heads`)."""
    if not heads:
        raise ValueError("ablate needs heads={layer: [head, ...]}, e.g. --param 'ablate.heads={\"1\": [0]}'.")
    with ablate_heads(model, {int(layer): list(chosen) for layer, chosen in heads.items()}, mode):  # type: ignore[arg-type]
        yield _NoRecord()


register(Component("greedy", "decoder", greedy, {}, "standard", description="greedy decoding: the most likely token"))
register(Component("beam", "decoder", beam, {"num_beams": 5}, "standard",
                   description="beam search (5 beams as in the CHAIR tables of OPERA, VCD and EAH)"))
register(Component("sample", "decoder", sample, {"temperature": 1.0, "top_p": 0.9, "seed": 0},
                   "Holtzman et al., The Curious Case of Neural Text Degeneration, ICLR 2020",
                   description="nucleus (top-p) sampling, seeded per batch so resumed runs repeat"))
register(Component(
    "eah", "intervention", eah,
    {"layer": None, "threshold": None, "relative_threshold": None, "normalizer": None, "head": "densest",
     "decode": "off", "preset": None, "seed": 0},
    "Zhang et al., Seeing Clearly by Layer Two: Enhancing Attention Heads to Alleviate Hallucination in LVLMs, "
    "arXiv:2411.09968",
    description="EAH: broadcast the shallow-layer head with the most vision sinks to every head of that layer "
                "(defaults None: layer 1, threshold 8e-4, causal normalizer, as the paper preset)",
))
register(Component("ablate", "intervention", ablate, {"heads": {}, "mode": "zero"}, "analysis tool",
                   description="zero- or mean-ablate heads ({layer: [head, ...]}) at the input of the attention "
                               "output projection"))
