"""Sink metrics against direct loops over the definitions."""

from __future__ import annotations

import math

import pytest
import torch

import eahlib as eah
from eahlib.metrics import RELATIVE_TOLERANCE


def random_causal_attention(real: torch.Tensor, heads: int, seed: int) -> torch.Tensor:
    """``[B, H, N, N]`` softmax over the real keys up to each query; garbage in padding rows."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = real.shape
    logits = torch.randn(batch, heads, length, length, generator=gen) * 3
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = causal & real[:, None, None, :]
    attn = torch.softmax(logits.masked_fill(~allowed, -math.inf), -1).nan_to_num(0.0)
    garbage = torch.rand(batch, heads, length, length, generator=gen)
    return torch.where(real[:, None, :, None], attn, garbage)


def padded_masks(padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-token and image masks for 3 samples of 12, 9 and 7 real tokens."""
    length, lengths = 12, [12, 9, 7]
    real = torch.zeros(3, length, dtype=torch.bool)
    image = torch.zeros(3, length, dtype=torch.bool)
    for b, n in enumerate(lengths):
        start = length - n if padding == "left" else 0
        real[b, start:start + n] = True
        image[b, start + 1:start + 1 + n // 2] = True  # image block right after <bos>
    return real, image


def loop_received(attn: torch.Tensor, real: torch.Tensor, normalizer: str, image: torch.Tensor) -> torch.Tensor:
    batch, heads, length, _ = attn.shape
    out = torch.zeros(batch, heads, length)
    for b in range(batch):
        pos = [p for p in range(length) if real[b, p]]
        n = len(pos)
        img_ranks = [r for r, p in enumerate(pos) if image[b, p]]
        s, e = (min(img_ranks), max(img_ranks) + 1) if img_ranks else (0, 0)
        for h in range(heads):
            for j, pj in enumerate(pos):
                total = sum(float(attn[b, h, pi, pj]) for pi in pos[j + 1:])
                if normalizer == "causal":
                    out[b, h, pj] = total / (n - 1 - j) if j < n - 1 else 0.0
                elif s <= j < e:
                    out[b, h, pj] = total / (e + s - j)
    return out


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("normalizer", ["causal", "release"])
def test_received_attention_matches_loop(padding: str, normalizer: str) -> None:
    real, image = padded_masks(padding)
    attn = random_causal_attention(real, heads=3, seed=1)
    got = eah.received_attention(attn, real.long(), normalizer, image)
    want = loop_received(attn, real, normalizer, image)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_padding_side_does_not_change_scores() -> None:
    left_real, left_image = padded_masks("left")
    right_real, right_image = padded_masks("right")
    left = random_causal_attention(left_real, heads=2, seed=3)
    right = torch.zeros_like(left)
    for b in range(3):  # move each sample's real block to the front
        lp, rp = left_real[b].nonzero().squeeze(1), right_real[b].nonzero().squeeze(1)
        right[b][:, rp[:, None], rp] = left[b][:, lp[:, None], lp]
    got_left = eah.received_attention(left, left_real).masked_select(left_real[:, None].expand(-1, 2, -1))
    got_right = eah.received_attention(right, right_real).masked_select(right_real[:, None].expand(-1, 2, -1))
    torch.testing.assert_close(got_left, got_right)


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("normalizer", ["causal", "release"])
def test_sink_density_matches_loop(padding: str, normalizer: str) -> None:
    real, image = padded_masks(padding)
    attn = random_causal_attention(real, heads=4, seed=2)
    scores = loop_received(attn, real, normalizer, image)
    values = scores[image[:, None].expand_as(scores)].sort().values
    middle = len(values) // 2
    threshold = float(values[middle - 1] + values[middle]) / 2  # between two scores, not on one
    got = eah.sink_density(attn, image, threshold=threshold, attention_mask=real, normalizer=normalizer)
    want = ((scores > threshold) & image[:, None]).sum(-1)
    assert torch.equal(got, want)
    assert 0 < int(got.sum()) < int(image.sum()) * 4


def test_sink_density_default_is_release_threshold() -> None:
    real, image = padded_masks("left")
    attn = random_causal_attention(real, heads=2, seed=4)
    assert torch.equal(eah.sink_density(attn, image, attention_mask=real),
                       eah.sink_density(attn, image, threshold=8e-4, attention_mask=real))


def test_uniform_received_attention_matches_direct_sum() -> None:
    real, image = padded_masks("left")
    got = eah.uniform_received_attention(real.long())
    for b in range(3):
        pos = real[b].nonzero().squeeze(1).tolist()
        n = len(pos)
        for j, pj in enumerate(pos):
            want = sum(1 / (i + 1) for i in range(j + 1, n)) / (n - 1 - j) if j < n - 1 else 0.0
            assert math.isclose(float(got[b, pj]), want, rel_tol=1e-6)
        assert float(got[b, ~real[b]].abs().sum()) == 0.0


@pytest.mark.parametrize("k", [1.0, 1.5, 4.0, 50.0])
def test_uniform_causal_attention_has_no_sinks(k: float) -> None:
    real, image = padded_masks("right")
    length = real.shape[1]
    rank = real.long().cumsum(-1) - 1
    uniform = torch.zeros(3, 1, length, length)
    for b in range(3):
        for i in real[b].nonzero().squeeze(1):
            keys = real[b] & (torch.arange(length) <= i)
            uniform[b, 0, i, keys] = 1.0 / (rank[b, i] + 1)
    density = eah.sink_density(uniform, image, attention_mask=real, relative_threshold=k)
    assert int(density.sum()) == 0
    scores = eah.received_attention(uniform, real)
    torch.testing.assert_close(scores[:, 0], eah.uniform_received_attention(real.long()))


def planted_sink_attention(length: int, sink: int, share: float) -> torch.Tensor:
    """One head where every later query gives ``share`` of its attention to key ``sink``."""
    attn = torch.zeros(1, 1, length, length)
    for i in range(length):
        attn[0, 0, i, : i + 1] = 1.0 / (i + 1)
        if i > sink:
            attn[0, 0, i, : i + 1] *= 1 - share
            attn[0, 0, i, sink] += share
    return attn


@pytest.mark.parametrize("k", [1.5, 2.0, 4.0, 8.0, 12.0])
def test_planted_sink_found_for_wide_range_of_k(k: float) -> None:
    length, sink = 40, 5
    image = torch.zeros(1, length, dtype=torch.bool)
    image[0, 3:20] = True
    attn = planted_sink_attention(length, sink, share=0.8)
    sinks = eah.sink_mask(attn, image, eah.sink_criterion(relative_threshold=k))
    assert sinks[0, 0].nonzero().squeeze(1).tolist() == [sink]


def test_absolute_and_relative_agree_where_threshold_equals_k_times_uniform() -> None:
    real, image = padded_masks("left")
    attn = random_causal_attention(real, heads=4, seed=5)
    k = 1.3
    relative = eah.sink_mask(attn, image, eah.sink_criterion(relative_threshold=k), real)
    uniform = eah.uniform_received_attention(real.long())
    for b, j in image.nonzero().tolist():
        threshold = k * (1 + RELATIVE_TOLERANCE) * float(uniform[b, j])
        absolute = eah.sink_mask(attn, image, eah.sink_criterion(threshold=threshold), real)
        assert torch.equal(absolute[b, :, j], relative[b, :, j])
    assert relative.any() and not relative.all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": -1.0}, "non-negative"),
        ({"threshold": float("nan")}, "non-negative"),
        ({"relative_threshold": -2.0}, "relative_threshold must be"),
        ({"threshold": 1e-3, "relative_threshold": 2.0}, "not both"),
        ({"normalizer": "mean"}, "normalizer must be one of"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    real, image = padded_masks("left")
    attn = random_causal_attention(real, heads=2, seed=6)
    with pytest.raises(ValueError, match=message):
        eah.sink_density(attn, image, attention_mask=real, **kwargs)


def test_release_normalizer_needs_image_mask() -> None:
    real, _ = padded_masks("left")
    attn = random_causal_attention(real, heads=2, seed=7)
    with pytest.raises(ValueError, match="needs image_mask"):
        eah.received_attention(attn, real, normalizer="release")


def test_shape_errors_name_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"\[batch, heads, seq, seq\]"):
        eah.received_attention(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        eah.received_attention(torch.rand(1, 1, 4, 4), torch.ones(1, 5))


def test_massive_activation_sinks() -> None:
    hidden = torch.randn(2, 6, 1024, generator=torch.Generator().manual_seed(0))
    hidden[0, 0, 7] = 500.0  # a massive activation at dim 7 on the first token
    hidden[1, 3, 9] = 500.0
    assert eah.massive_activation_sinks(hidden, dims=[7]).nonzero().tolist() == [[0, 0]]
    assert eah.massive_activation_sinks(hidden, dims=None).nonzero().tolist() == [[0, 0], [1, 3]]
    assert not eah.massive_activation_sinks(hidden.half(), dims=[9], tau=40.0).any()  # |x|/rms ~ 31
    with pytest.raises(ValueError, match="out of range"):
        eah.massive_activation_sinks(hidden, dims="llava-1.5-7b")
    with pytest.raises(ValueError, match="Unknown massive-activation dims"):
        eah.massive_activation_sinks(hidden, dims="gpt-2")
    big = torch.zeros(1, 2, 4096)
    big[0, 1, 2533] = 1e4
    big[0, :, 0] = 1.0
    assert eah.massive_activation_sinks(big, dims="llava-1.5-7b").tolist() == [[False, True]]


def test_normalised_magnitude() -> None:
    hidden = torch.tensor([[[3.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]])
    # rms of the first token: sqrt((9 + 16) / 4 + 1e-6); the second holds all its norm in one entry: sqrt(4)
    expected = torch.tensor([[[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]])
    expected[0, 0] /= math.sqrt(25 / 4 + 1e-6)
    expected[0, 1] /= math.sqrt(1 + 1e-6)
    torch.testing.assert_close(eah.normalised_magnitude(hidden), expected)
    assert eah.normalised_magnitude(hidden.half()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[batch, seq, hidden\]"):
        eah.normalised_magnitude(hidden[0])
