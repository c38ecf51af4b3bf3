"""Head ablation: silence chosen attention heads of the language model.

A head's contribution is its slice of the input to the attention output projection
(``o_proj``): ``[B, q, H * d] -> [B, q, H, d]``, split by head before the heads are mixed.
``mode="zero"`` sets the slice to 0; ``mode="mean"`` replaces it by its mean over the prompt's
real tokens, computed at the prefill call and reused at every decoding step (the head keeps
its average message but loses all token-specific information).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from eahlib.methods.registry import Component, NoRecord, register
from eahlib.models import attention_module, decoder, head_count, head_dim, output_projection

AblationMode = Literal["zero", "mean"]


@dataclass
class _PaddingMask:
    """The 2-D attention mask of the decoder's current forward call (``None``: no padding)."""

    mask: Tensor | None = None

    def saw_decoder_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        self.mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None


@dataclass(eq=False)
class _HeadAblation:
    """Forward pre-hook state for one layer's ``o_proj``."""

    heads: list[int]
    n_heads: int
    head_dim: int
    mode: AblationMode
    padding: _PaddingMask
    means: Tensor | None = field(default=None)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        batch, length, _ = hidden.shape
        split = hidden.view(batch, length, self.n_heads, self.head_dim).clone()
        index = torch.tensor(self.heads, device=hidden.device)
        if self.mode == "zero":
            split[:, :, index] = 0
        else:
            if length > 1 or self.means is None:  # a prefill: per-sample means over real tokens
                real = torch.ones(batch, length, device=hidden.device)
                if self.padding.mask is not None:
                    real = self.padding.mask[:, -length:].to(hidden.device).float()
                weights = (real / real.sum(1, keepdim=True).clamp(min=1)).view(batch, length, 1, 1)
                self.means = (split[:, :, index].float() * weights).sum(1, keepdim=True)
            split[:, :, index] = self.means.to(split.dtype).expand(-1, length, -1, -1)
        return (split.view(batch, length, -1), *args[1:])


@contextlib.contextmanager
def ablate_heads(
    model: nn.Module,
    heads: Mapping[int, Sequence[int]],
    mode: AblationMode = "zero",
) -> Iterator[None]:
    """Zero or mean-ablate attention heads while the block runs.

    Example:
        >>> with ablate_heads(model, {1: [0, 3]}, mode="zero"):  # doctest: +SKIP
        ...     out = model.generate(**inputs)

    Args:
        model: a supported vision-language model.
        heads: ``{layer: [head, ...]}``, 0-based.
        mode: ``"zero"`` or ``"mean"`` (mean over each sample's real prompt tokens).

    Yields:
        Nothing; the model is restored on exit (only this context's hooks are removed).
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}.")
    for layer, chosen in heads.items():
        attention_module(model, layer)  # validates the layer index
        n_heads = head_count(model, layer)
        bad = [h for h in chosen if not isinstance(h, int) or not 0 <= h < n_heads]
        if bad or not chosen:
            raise ValueError(f"Layer {layer}: heads must be a non-empty list of indices in 0..{n_heads - 1}, got {list(chosen)}.")
    padding = _PaddingMask()
    handles = []
    try:
        handles.append(decoder(model).register_forward_pre_hook(padding.saw_decoder_call, with_kwargs=True))
        for layer, chosen in heads.items():
            n_heads = head_count(model, layer)
            hook = _HeadAblation(sorted(set(chosen)), n_heads, head_dim(model, layer), mode, padding)
            handles.append(output_projection(model, layer).register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def ablate(model: nn.Module, heads: Mapping[str | int, list[int]], mode: str) -> Iterator[NoRecord]:
    """Zero or mean-ablate heads, ``heads={layer: [head, ...]}`` (see :func:`ablate_heads`)."""
    if not heads:
        raise ValueError("ablate needs heads={layer: [head, ...]}, e.g. --param 'ablate.heads={\"1\": [0]}'.")
    with ablate_heads(model, {int(layer): list(chosen) for layer, chosen in heads.items()}, mode):  # type: ignore[arg-type]
        yield NoRecord()


register(Component("ablate", "intervention", ablate, {"heads": {}, "mode": "zero"}, "analysis tool",
                   description="zero- or mean-ablate heads ({layer: [head, ...]}) at the input of the attention "
                               "output projection"))
