"""Vision-sink metrics: pure tensor functions, no ``nn.Module`` in sight.

A *vision sink* (EAH, arXiv:2411.09968) is an image token that receives a disproportionate
share of attention. Every count comes from the layer's own visibility mask, so the definitions
hold under causal, sliding-window, chunked, bidirectional-block and padded attention alike. For one
sample, one layer and its post-softmax attention ``A`` (``[H, N, N]``, rows = queries, columns = keys):

- ``R``: the real (non-padding) tokens, from the padding mask;
- ``V[i, j]``: query ``i`` may attend key ``j`` under the layer's mask (``i, j`` in ``R``);
- ``Q_j = {i in R : i != j, V[i, j]}``: the other queries that can see key ``j``;
- ``K_i = {j in R : V[i, j]}``: the keys query ``i`` can see (itself included).

The *received score* of key ``j`` in head ``h`` is the mean attention it gets from the queries
that can see it, and its *uniform score* what it would get if every query spread its attention
evenly over the keys it can see::

    s[h, j] = (1 / |Q_j|) * sum_{i in Q_j} A[h, i, j]            (0 when Q_j is empty)
    u[j]    = (1 / |Q_j|) * sum_{i in Q_j} 1 / |K_i|

Under a causal mask ``Q_j`` is the later real queries and ``|K_i| = i + 1`` (``i`` counted among the
real tokens), so ``s[h, j] = sum_{i > j} A[h, i, j] / (N - 1 - j)`` and
``u[j] = sum_{i > j} 1 / (i + 1) / (N - 1 - j)``: the closed forms this module evaluates whenever
``visibility`` is ``None``, bit for bit as before. Padding positions are neither queries nor keys, so
left and right padding give the same numbers.

In a layer with attention sinks (a learned extra logit per head, as gpt-oss has), rows sum to less than 1: the
scores are the attention the real keys actually receive, while the uniform score assumes each row spreads its
whole mass, so a head that parks mass in its sink shows fewer sinks at a given ``k``.

A key is a sink of head ``h`` when its score exceeds a :class:`SinkCriterion`: an absolute
threshold (``8e-4`` in the released code) or ``k`` times its uniform score. The *sink density* of
a head is its number of image-token sinks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Normalizer = Literal["causal", "release"]
NORMALIZERS: tuple[str, ...] = ("causal", "release")
RELEASE_THRESHOLD = 8e-4
"""The absolute threshold of the released EAH code (tuned on LLaVA-1.5 prompts of ~650 tokens)."""

RELATIVE_TOLERANCE = 1e-5
"""A relative bound is raised by this fraction, so that float32 round-off of a score equal to
``k * u`` (e.g. exactly uniform attention with ``k = 1``) never counts as a sink."""

MASSIVE_ACTIVATION_DIMS: dict[str, tuple[int, ...]] = {
    "llava-1.5-7b": (2533, 1415),
    "llava-1.5-13b": (2100, 4743),
}
"""Hidden dimensions that carry massive activations, as published by VAR (arXiv 2503.03321)."""


@dataclass(frozen=True)
class SinkCriterion:
    """When a received score makes a key a sink.

    Attributes:
        kind: ``"absolute"``: ``s > value``; ``"relative"``: ``s > value * u`` with ``u`` the
            key's uniform score under the layer's mask (see :func:`uniform_received_attention`),
            up to :data:`RELATIVE_TOLERANCE`.
        value: the threshold, or the multiple ``k`` of the uniform score.
    """

    kind: Literal["absolute", "relative"]
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("absolute", "relative"):
            raise ValueError(f"SinkCriterion.kind must be 'absolute' or 'relative', got {self.kind!r}.")
        if not isinstance(self.value, (int, float)) or math.isnan(self.value) or self.value < 0:
            name = "threshold" if self.kind == "absolute" else "relative_threshold"
            raise ValueError(f"{name} must be a non-negative number, got {self.value!r}.")

    def describe(self) -> str:
        """A short label, e.g. ``'threshold=0.0008'`` or ``'relative_threshold=4.0'``."""
        name = "threshold" if self.kind == "absolute" else "relative_threshold"
        return f"{name}={self.value:g}"

    def bounds(
        self,
        attention_mask: Tensor,
        normalizer: Normalizer = "causal",
        image_mask: Tensor | None = None,
        visibility: Tensor | None = None,
    ) -> Tensor:
        """Per-key score bound a sink must exceed.

        Args:
            attention_mask: ``[B, N]``, 1 = real token.
            normalizer: as in :func:`received_attention`.
            image_mask: ``[B, N]``, needed by the release normalizer.
            visibility: ``[B, N, N]`` the layer's mask, as in :func:`received_attention`.

        Returns:
            ``[B, 1, N]`` float32 bounds, broadcastable against ``[B, H, N]`` scores.
        """
        if self.kind == "absolute":
            return torch.full_like(attention_mask, self.value, dtype=torch.float32).unsqueeze(1)
        uniform = uniform_received_attention(attention_mask, normalizer, image_mask, visibility)
        return self.bounds_from_uniform(uniform).unsqueeze(1)

    def bounds_from_uniform(self, uniform: Tensor) -> Tensor:
        """The bound for keys whose uniform scores are ``uniform`` (any shape; same shape out)."""
        if self.kind == "absolute":
            return torch.full_like(uniform, self.value, dtype=torch.float32)
        return self.value * (1 + RELATIVE_TOLERANCE) * uniform.float()


def sink_criterion(
    threshold: float | None = None,
    relative_threshold: float | None = None,
    default: float | None = RELEASE_THRESHOLD,
) -> SinkCriterion:
    """Build the criterion from the two mutually exclusive keyword arguments.

    Args:
        threshold: absolute bound on the received score.
        relative_threshold: ``k`` in ``s > k * u`` (``u`` = uniform-attention score).
        default: absolute threshold used when neither is given (``None``: one is required).

    Returns:
        The criterion.
    """
    if threshold is not None and relative_threshold is not None:
        raise ValueError(
            f"Give either threshold= (absolute, got {threshold}) or relative_threshold= "
            f"(k times uniform, got {relative_threshold}), not both."
        )
    if relative_threshold is not None:
        return SinkCriterion("relative", float(relative_threshold))
    if threshold is None:
        if default is None:
            raise ValueError("A sink criterion is required: pass threshold= or relative_threshold=.")
        threshold = default
    return SinkCriterion("absolute", float(threshold))


def _real_token_mask(attention_mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    """``[B, N]`` bool mask of real tokens (all real when ``attention_mask`` is None)."""
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if attention_mask.shape != (batch, length):
        raise ValueError(
            f"attention_mask must have shape [batch, seq] = {[batch, length]}, got {list(attention_mask.shape)}."
        )
    return attention_mask.to(device=device).bool()


def _received_denominator(real: Tensor, normalizer: Normalizer, image_mask: Tensor | None) -> Tensor:
    """Per-key divisor ``[B, N]`` (float32); non-positive where the score is defined as 0."""
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}.")
    rank = real.long().cumsum(-1) - 1  # position among the real tokens
    if normalizer == "causal":
        count = real.long().sum(-1, keepdim=True)
        return (count - 1 - rank).float()
    if image_mask is None:
        raise ValueError("normalizer='release' needs image_mask (the sample's image-token positions).")
    if image_mask.shape != real.shape:
        raise ValueError(f"image_mask must have shape {list(real.shape)}, got {list(image_mask.shape)}.")
    image = image_mask.to(real.device).bool() & real
    big = torch.iinfo(torch.long).max
    start = torch.where(image, rank, big).amin(-1, keepdim=True)
    end = torch.where(image, rank, -1).amax(-1, keepdim=True) + 1
    inside = (rank >= start) & (rank < end)
    return torch.where(inside, (end + start - rank).float(), torch.zeros((), device=real.device))


def _checked_visibility(visibility: Tensor, real: Tensor, normalizer: Normalizer) -> Tensor:
    """``[B, N, N]`` bool visibility among the real tokens (validated)."""
    batch, length = real.shape
    if visibility.shape != (batch, length, length):
        raise ValueError(
            f"visibility must be [batch, seq, seq] = {[batch, length, length]}, got {list(visibility.shape)}."
        )
    if normalizer != "causal":
        raise ValueError(
            f"normalizer={normalizer!r} reproduces the released code, which assumes causal attention; this layer's "
            "mask is not causal (a sliding window, a bidirectional block...). Use normalizer='causal', whose "
            "definitions follow the layer's own mask."
        )
    visible = visibility.to(real.device).bool()
    return visible & real[:, :, None] & real[:, None, :]


def _other_queries(visible: Tensor) -> Tensor:
    """``[B, N, N]``: query ``i`` sees key ``j`` and ``i != j`` (the members of ``Q_j``, column ``j``)."""
    length = visible.shape[-1]
    return visible & ~torch.eye(length, dtype=torch.bool, device=visible.device)


def beyond_causal(visibility: Tensor, attention_mask: Tensor | None = None) -> Tensor | None:
    """The visibility the definitions need: ``None`` when the mask is plain causal over the real tokens.

    A layer whose mask lets every real query see exactly the real keys at or before it is served by the
    closed causal forms (bit for bit the numbers of a causal model); any other mask (sliding window,
    chunks, bidirectional blocks) is returned as given, for the general forms.

    Args:
        visibility: ``[B, N, N]`` bool, query ``i`` may attend key ``j``.
        attention_mask: ``[B, N]``, 1 = real token (default: all real).

    Returns:
        ``None`` or ``visibility``.
    """
    batch, length = visibility.shape[0], visibility.shape[-1]
    real = _real_token_mask(attention_mask, batch, length, visibility.device)
    pair = real[:, :, None] & real[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=visibility.device).tril()
    return None if torch.equal(visibility.bool() & pair, causal & pair) else visibility


def received_attention(
    attn: Tensor,
    attention_mask: Tensor | None = None,
    normalizer: Normalizer = "causal",
    image_mask: Tensor | None = None,
    visibility: Tensor | None = None,
) -> Tensor:
    """Mean attention each key receives from the other real queries that can see it.

    Args:
        attn: ``[B, H, N, N]`` post-softmax attention (rows = queries, columns = keys).
        attention_mask: ``[B, N]``, 1 = real token, 0 = padding (left, right or inside).
        normalizer: ``"causal"`` divides by ``|Q_j|``, the number of other real queries that can
            see key ``j`` (``N - 1 - j`` under a causal mask); ``"release"`` divides the sum over
            later queries by ``e + s - j`` like the released code, where ``[s, e)`` is the sample's
            image-token span (first to last image token); the score is then defined on that span
            only and 0 elsewhere (causal layers only).
        image_mask: ``[B, N]`` bool, image-token positions; needed by ``"release"`` only.
        visibility: ``[B, N, N]`` bool, query ``i`` may attend key ``j`` under the layer's own mask;
            ``None``: causal (the closed form).

    Returns:
        ``[B, H, N]`` float32 scores; 0 at padding positions and where no other query sees the key.
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be [batch, heads, seq, seq] with a square last pair, got {list(attn.shape)}.")
    batch, _, length, _ = attn.shape
    real = _real_token_mask(attention_mask, batch, length, attn.device)
    if visibility is None:
        later = torch.ones(length, length, dtype=torch.bool, device=attn.device).tril(-1)  # query i > key j
        weights = later & real[:, None, :, None] & real[:, None, None, :]
        denominator = _received_denominator(real, normalizer, image_mask).unsqueeze(1)
    else:
        weights = _other_queries(_checked_visibility(visibility, real, normalizer)).unsqueeze(1)
        denominator = weights.sum(-2).float()
    totals = torch.where(weights, attn.float(), 0.0).sum(-2)
    defined = denominator > 0
    return torch.where(defined, totals / denominator.clamp(min=1.0), 0.0)


def uniform_received_attention(
    attention_mask: Tensor,
    normalizer: Normalizer = "causal",
    image_mask: Tensor | None = None,
    visibility: Tensor | None = None,
) -> Tensor:
    """Received score of every key if each query spread its attention evenly over what it can see.

    ``u_j = (1/|Q_j|) * sum_{i in Q_j} 1/|K_i|`` (module docstring); under a causal mask query ``i``
    (0-based among real tokens) sees ``i + 1`` keys, so ``u_j = (1/(N-1-j)) * sum_{i>j} 1/(i+1)``.

    Args:
        attention_mask: ``[B, N]``, 1 = real token.
        normalizer: as in :func:`received_attention`.
        image_mask: ``[B, N]``, needed by the release normalizer.
        visibility: ``[B, N, N]`` the layer's mask, as in :func:`received_attention`; ``None``: causal.

    Returns:
        ``[B, N]`` float32 scores; 0 where :func:`received_attention` is defined as 0.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, seq], got {list(attention_mask.shape)}.")
    real = attention_mask.bool()
    if visibility is not None:
        visible = _checked_visibility(visibility, real, normalizer)
        seen = visible.sum(-1, keepdim=True).double()  # |K_i|, one per query row
        share = torch.where(seen > 0, 1.0 / seen.clamp(min=1), 0.0)
        others = _other_queries(visible)
        count = others.sum(-2).double()  # |Q_j|
        after = torch.where(others, share, 0.0).sum(-2)
        return torch.where(count > 0, after / count.clamp(min=1), 0.0).float()
    rank = real.long().cumsum(-1) - 1
    share = torch.where(real, 1.0 / (rank + 1).clamp(min=1).double(), 0.0)
    after = share.sum(-1, keepdim=True) - share.cumsum(-1)  # sum over later real queries
    denominator = _received_denominator(real, normalizer, image_mask).double()
    defined = (denominator > 0) & real
    return torch.where(defined, after / denominator.clamp(min=1.0), 0.0).float()


def sink_mask(
    attn: Tensor,
    image_mask: Tensor,
    criterion: SinkCriterion,
    attention_mask: Tensor | None = None,
    normalizer: Normalizer = "causal",
    visibility: Tensor | None = None,
) -> Tensor:
    """Which image tokens are vision sinks of each head.

    Args:
        attn: ``[B, H, N, N]`` post-softmax attention.
        image_mask: ``[B, N]`` bool, image-token positions.
        criterion: the sink criterion (see :func:`sink_criterion`).
        attention_mask: ``[B, N]``, 1 = real token.
        normalizer: as in :func:`received_attention`.
        visibility: ``[B, N, N]`` the layer's mask (``None``: causal), as in :func:`received_attention`.

    Returns:
        ``[B, H, N]`` bool.
    """
    batch, _, length, _ = attn.shape
    real = _real_token_mask(attention_mask, batch, length, attn.device)
    if image_mask.shape != (batch, length):
        raise ValueError(f"image_mask must have shape {[batch, length]}, got {list(image_mask.shape)}.")
    image = image_mask.to(attn.device).bool() & real
    scores = received_attention(attn, real, normalizer, image, visibility)
    bounds = criterion.bounds(real, normalizer, image, visibility).to(attn.device)
    return (scores > bounds) & image.unsqueeze(1)


def sink_density(
    attn: Tensor,
    image_mask: Tensor,
    threshold: float | None = None,
    attention_mask: Tensor | None = None,
    normalizer: Normalizer = "causal",
    relative_threshold: float | None = None,
    visibility: Tensor | None = None,
) -> Tensor:
    """Number of vision sinks of each head.

    Args:
        attn: ``[B, H, N, N]`` post-softmax attention.
        image_mask: ``[B, N]`` bool, image-token positions.
        threshold: absolute bound (default ``8e-4`` when ``relative_threshold`` is not given).
        attention_mask: ``[B, N]``, 1 = real token.
        normalizer: as in :func:`received_attention`.
        relative_threshold: ``k``: a sink receives more than ``k`` times the uniform score.
        visibility: ``[B, N, N]`` the layer's mask (``None``: causal), as in :func:`received_attention`.

    Returns:
        ``[B, H]`` int64 counts.
    """
    criterion = sink_criterion(threshold, relative_threshold)
    return sink_mask(attn, image_mask, criterion, attention_mask, normalizer, visibility).sum(-1)


def massive_activation_sinks(
    hidden_states: Tensor,
    dims: Sequence[int] | str | None,
    tau: float = 20.0,
) -> Tensor:
    """Massive-activation sink test of VAR (arXiv 2503.03321).

    A token is a sink if ``max_{d in dims} |x_d / rms(x)|`` exceeds ``tau``, with
    ``rms(x) = sqrt(mean(x^2) + 1e-6)`` computed in float32 without a learned weight.

    Args:
        hidden_states: ``[B, N, D]``, a layer's input hidden state.
        dims: hidden dimensions to inspect, a name from :data:`MASSIVE_ACTIVATION_DIMS`
            (e.g. ``"llava-1.5-7b"``), or ``None`` for all dimensions.
        tau: the threshold on the normalised magnitude.

    Returns:
        ``[B, N]`` bool.
    """
    if isinstance(dims, str):
        if dims not in MASSIVE_ACTIVATION_DIMS:
            raise ValueError(f"Unknown massive-activation dims {dims!r}; known: {sorted(MASSIVE_ACTIVATION_DIMS)}.")
        dims = MASSIVE_ACTIVATION_DIMS[dims]
    magnitude = normalised_magnitude(hidden_states)
    if dims is not None:
        index = torch.as_tensor(list(dims), dtype=torch.long, device=magnitude.device)
        if index.numel() == 0 or int(index.max()) >= magnitude.shape[-1] or int(index.min()) < -magnitude.shape[-1]:
            raise ValueError(f"dims {list(dims)} are out of range for hidden size {magnitude.shape[-1]}.")
        magnitude = magnitude.index_select(-1, index)
    return magnitude.amax(-1) > tau


def normalised_magnitude(hidden_states: Tensor) -> Tensor:
    """Each entry's magnitude relative to its token's root mean square, ``|x_d| / rms(x)``.

    ``rms(x) = sqrt(mean(x^2) + 1e-6)`` in float32, without a learned weight (an RMSNorm's input scale).
    No entry can exceed ``sqrt(D)``, which a token reaches when one dimension holds all of its norm.

    Args:
        hidden_states: ``[B, N, D]``.

    Returns:
        ``[B, N, D]`` float32.
    """
    if hidden_states.dim() != 3:
        raise ValueError(f"hidden_states must be [batch, seq, hidden], got {list(hidden_states.shape)}.")
    x = hidden_states.float()
    return x.abs() / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
