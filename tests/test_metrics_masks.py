"""Sink definitions under any attention mask, against direct loops over the sets ``Q_j`` and ``K_i``.

The loops below restate the definitions of ``eahlib.metrics`` one query and one key at a time: ``Q_j`` is
the other real queries that may see key ``j``, ``K_i`` the real keys query ``i`` may see.
"""

from __future__ import annotations

import math

import pytest
import torch

import eahlib as eah
from eahlib.metrics import beyond_causal

LENGTH = 14


def window_mask(length: int, window: int) -> torch.Tensor:
    """``[N, N]`` causal sliding window: query ``i`` sees keys ``i - window < j <= i``."""
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    return (j <= i) & (j > i - window)


def block_mask(length: int, block: range) -> torch.Tensor:
    """``[N, N]`` causal, plus bidirectional attention inside ``block`` (an image, as in Gemma 3)."""
    inside = torch.zeros(length, dtype=torch.bool)
    inside[list(block)] = True
    return torch.ones(length, length, dtype=torch.bool).tril() | (inside[:, None] & inside[None, :])


def real_tokens(padding: str, n_real: int = 11) -> torch.Tensor:
    """``[N]`` real tokens: left, right, or a gap in the middle (as inside a packed batch)."""
    real = torch.zeros(LENGTH, dtype=torch.bool)
    if padding == "left":
        real[LENGTH - n_real:] = True
    elif padding == "right":
        real[:n_real] = True
    else:
        real[:] = True
        real[5:5 + LENGTH - n_real] = False
    return real


def attention_under(visible: torch.Tensor, real: torch.Tensor, heads: int, seed: int) -> torch.Tensor:
    """``[1, H, N, N]`` random softmax over the real keys each query may see; garbage in padding rows."""
    gen = torch.Generator().manual_seed(seed)
    allowed = visible & real[None, :]
    logits = torch.randn(1, heads, LENGTH, LENGTH, generator=gen) * 3
    attn = torch.softmax(logits.masked_fill(~allowed, -math.inf), -1).nan_to_num(0.0)
    return torch.where(real[None, None, :, None], attn, torch.rand(1, heads, LENGTH, LENGTH, generator=gen))


def loop_scores(attn: torch.Tensor, visible: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Received ``[H, N]`` and uniform ``[N]`` scores of one sample, straight from the definitions."""
    heads, length = attn.shape[1], attn.shape[-1]
    received, uniform = torch.zeros(heads, length), torch.zeros(length)
    tokens = [t for t in range(length) if real[t]]
    for j in tokens:
        queries = [i for i in tokens if i != j and visible[i, j]]
        if not queries:
            continue
        seen = {i: sum(1 for key in tokens if visible[i, key]) for i in queries}
        uniform[j] = sum(1 / seen[i] for i in queries) / len(queries)
        for h in range(heads):
            received[h, j] = sum(float(attn[0, h, i, j]) for i in queries) / len(queries)
    return received, uniform


MASKS = {
    "window 4": window_mask(LENGTH, 4),
    "window 1": window_mask(LENGTH, 1),
    "image block": block_mask(LENGTH, range(2, 9)),
    "window 3 with image block": window_mask(LENGTH, 3) | block_mask(LENGTH, range(2, 9)) & ~torch.ones(
        LENGTH, LENGTH, dtype=torch.bool).tril(),
}


@pytest.mark.parametrize("padding", ["left", "right", "inside"])
@pytest.mark.parametrize("mask", sorted(MASKS))
def test_received_and_uniform_scores_follow_the_mask(mask: str, padding: str) -> None:
    visible, real = MASKS[mask], real_tokens(padding)
    attn = attention_under(visible, real, heads=3, seed=len(mask))
    got = eah.received_attention(attn, real[None], visibility=visible[None])
    got_uniform = eah.uniform_received_attention(real[None].long(), visibility=visible[None])
    want, want_uniform = loop_scores(attn, visible, real)
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got_uniform[0], want_uniform, rtol=1e-6, atol=1e-9)
    assert beyond_causal(visible[None], real[None]) is not None


@pytest.mark.parametrize("padding", ["left", "right", "inside"])
def test_sliding_window_densities_equal_a_loop_count(padding: str) -> None:
    visible, real = MASKS["window 4"], real_tokens(padding)
    image = torch.zeros(LENGTH, dtype=torch.bool)
    image[[t for t in range(LENGTH) if real[t]][1:8]] = True
    attn = attention_under(visible, real, heads=4, seed=11)
    found = 0
    for k in (1.0, 1.5, 3.0):
        got = eah.sink_density(attn, image[None], attention_mask=real[None], relative_threshold=k,
                               visibility=visible[None])
        received, uniform = loop_scores(attn, visible, real)
        bound = k * (1 + eah.metrics.RELATIVE_TOLERANCE) * uniform
        want = ((received > bound) & image).sum(-1)
        assert torch.equal(got[0], want)
        found += int(got.sum())
    assert found > 0


def test_a_window_shorter_than_the_prompt_hides_no_real_token() -> None:
    """The failure the mask-aware definitions fix: one query's row would call most tokens padding."""
    visible, real = MASKS["window 4"], torch.ones(LENGTH, dtype=torch.bool)
    image = torch.zeros(LENGTH, dtype=torch.bool)
    image[1:9] = True
    attn = attention_under(visible, real, heads=2, seed=4)
    attn[:, 0, :, 3] += 5.0 * visible[:, 3]  # key 3 takes most of its visible queries' attention in head 0
    attn = attn / attn.sum(-1, keepdim=True)
    sinks = eah.sink_mask(attn, image[None], eah.sink_criterion(relative_threshold=2.0), real[None],
                          visibility=visible[None])
    assert bool(sinks[0, 0, 3])
    last_row = visible[-1]
    assert not last_row[3], "the last query cannot see key 3: a row-based real-token rule would drop it"


def test_even_attention_in_a_bidirectional_image_block_is_not_a_sink() -> None:
    block = range(2, 9)
    visible, real = MASKS["image block"], torch.ones(LENGTH, dtype=torch.bool)
    image = torch.zeros(LENGTH, dtype=torch.bool)
    image[list(block)] = True
    even = (visible / visible.sum(-1, keepdim=True)).view(1, 1, LENGTH, LENGTH)
    assert int(eah.sink_density(even, image[None], relative_threshold=1.0, visibility=visible[None]).sum()) == 0

    uniform = eah.uniform_received_attention(real[None].long(), visibility=visible[None])[0]
    for k in (1.5, 3.0):
        planted = even.clone()
        sink = 4
        share = k * 1.2 * float(uniform[sink])  # each query that sees the sink gives it k*1.2 its uniform share
        for i in range(LENGTH):
            if visible[i, sink] and i != sink:
                planted[0, 0, i] *= (1 - share) / (1 - planted[0, 0, i, sink])
                planted[0, 0, i, sink] = share
        sinks = eah.sink_mask(planted, image[None], eah.sink_criterion(relative_threshold=k), visibility=visible[None])
        assert sinks[0, 0].nonzero().squeeze(1).tolist() == [sink]


@pytest.mark.parametrize("padding", ["left", "right"])
def test_a_causal_visibility_is_served_by_the_closed_forms(padding: str) -> None:
    real = real_tokens(padding)
    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).tril()
    assert beyond_causal(causal[None], real[None]) is None
    # Padding rows and columns may hold anything: only the real tokens' pattern counts.
    noisy = causal | (~real[:, None] | ~real[None, :])
    assert beyond_causal(noisy[None], real[None]) is None
    attn = attention_under(causal, real, heads=2, seed=9)
    general = eah.received_attention(attn, real[None], visibility=causal[None])
    torch.testing.assert_close(general, eah.received_attention(attn, real[None]), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(eah.uniform_received_attention(real[None].long(), visibility=causal[None]),
                               eah.uniform_received_attention(real[None].long()), rtol=1e-6, atol=1e-9)


def test_padding_changes_nothing_for_the_real_tokens() -> None:
    n_real, gen = 11, torch.Generator().manual_seed(1)
    pattern = MASKS["window 3 with image block"][:n_real, :n_real]
    logits = torch.randn(1, 2, n_real, n_real, generator=gen).masked_fill(~pattern, -math.inf)
    compact = torch.softmax(logits, -1)
    outcomes = []
    for padding in ("left", "right", "inside"):
        real = real_tokens(padding, n_real)
        at = real.nonzero().squeeze(1)
        visible = torch.rand(LENGTH, LENGTH, generator=gen) > 0.5  # padding rows and columns: anything
        visible[at[:, None], at] = pattern
        attn = torch.rand(1, 2, LENGTH, LENGTH, generator=gen)
        attn[:, :, at[:, None], at] = compact
        scores = eah.received_attention(attn, real[None], visibility=visible[None])[0][:, at]
        uniform = eah.uniform_received_attention(real[None].long(), visibility=visible[None])[0][at]
        outcomes.append((scores, uniform))
    for scores, uniform in outcomes[1:]:
        torch.testing.assert_close(scores, outcomes[0][0], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(uniform, outcomes[0][1], rtol=1e-6, atol=1e-9)
    assert float(outcomes[0][0].sum()) > 0


def test_release_normalizer_refuses_a_non_causal_layer() -> None:
    visible, real = MASKS["window 4"], torch.ones(LENGTH, dtype=torch.bool)
    attn = attention_under(visible, real, heads=1, seed=0)
    image = torch.zeros(1, LENGTH, dtype=torch.bool)
    image[0, 2:6] = True
    with pytest.raises(ValueError, match="assumes causal attention"):
        eah.received_attention(attn, real[None], "release", image, visibility=visible[None])
    with pytest.raises(ValueError, match=r"visibility must be \[batch, seq, seq\]"):
        eah.received_attention(attn, real[None], visibility=visible)
