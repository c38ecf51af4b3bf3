"""Figures of sink profiles and head views, saved to files by path (notebooks call these, they define none)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from PIL import Image  # noqa: E402

from eahlib.analysis import AttentionMap  # noqa: E402
from eahlib.divergence import HeadDivergence, head_views  # noqa: E402
from eahlib.profile import SinkProfile  # noqa: E402


def plot_density_heatmap(density: SinkProfile | pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Heatmap of the mean sink density, layers × heads, written to ``path`` (PNG).

    Args:
        density: a :class:`~eahlib.profile.SinkProfile`, or a tidy frame with columns ``layer,
            head, density`` (e.g. :func:`eahlib.analysis.sink_survey`); means over its rows.
        path: output file; parent folders are created.
        title: figure title.

    Returns:
        The written path.
    """
    frame = density.to_frame() if isinstance(density, SinkProfile) else density
    table = frame.groupby(["layer", "head"]).density.mean().unstack("head")
    n_image = int(frame.n_image_tokens.max()) if "n_image_tokens" in frame else None
    samples = frame["image" if "image" in frame else "sample"].nunique()
    fig, ax = plt.subplots(figsize=(max(6.5, 2.5 + 0.45 * table.shape[1]), max(3.5, 1.5 + 0.35 * table.shape[0])))
    label = "vision sinks" + (f" (of {n_image} image tokens)" if n_image else "")
    sns.heatmap(table, ax=ax, cmap="viridis", vmin=0, annot=table.shape[1] <= 16, fmt=".1f",
                cbar_kws={"label": label})
    ax.set_xlabel("head")
    ax.set_ylabel("decoder layer")
    ax.set_title(title or "Sink density per layer and head", fontsize=11)
    criterion = f"{frame.criterion.iloc[0]} threshold {frame.criterion_value.iloc[0]:g}" if "criterion" in frame else ""
    fig.text(0.01, 0.01, f"{criterion}, mean over {samples} samples", fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, path, tight=False)


def _save(fig: plt.Figure, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_layer_density(survey: pd.DataFrame, path: str | Path, title: str = "Vision-sink density by layer") -> Path:
    """Mean density per head for each layer, one point per image, with the spread across images.

    Args:
        survey: a :func:`eahlib.analysis.sink_survey` frame.
        path: output PNG.
        title: figure title.
    """
    per_image = survey.groupby(["image", "layer"]).density.mean().reset_index()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * per_image.layer.nunique() + 2), 4.0))
    sns.boxplot(data=per_image, x="layer", y="density", ax=ax, color="0.85", showfliers=False)
    sns.stripplot(data=per_image, x="layer", y="density", ax=ax, size=2.5, alpha=0.5, color="tab:blue")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("vision sinks per head (mean over heads)")
    criterion = f"{survey.criterion.iloc[0]} {survey.criterion_value.iloc[0]:g}" if "criterion" in survey else ""
    ax.set_title(f"{title}\n{per_image.image.nunique()} images, {criterion}", fontsize=11)
    return _save(fig, path)


def plot_attention_maps(image: Image.Image, maps: dict[str, AttentionMap], path: str | Path) -> Path:
    """The image next to received-score maps: a spatial map is stretched over the image; tokens without a
    known patch geometry are shown in prompt order, wrapped into rows.

    Args:
        image: the input image (resized to the model's input square for alignment).
        maps: title → :class:`eahlib.analysis.AttentionMap` (e.g. from :func:`eahlib.analysis.attention_map`).
        path: output PNG.
    """
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3.2 * (len(maps) + 1), 3.4))
    square = image.convert("RGB").resize((336, 336))
    axes[0].imshow(square)
    axes[0].set_title("image", fontsize=10)
    for ax, (title, attention) in zip(axes[1:], maps.items()):
        if attention.spatial:
            ax.imshow(square)
            shown = ax.imshow(attention.grid, cmap="magma", alpha=0.6, extent=(0, 336, 336, 0), interpolation="nearest")
        else:
            shown = ax.imshow(attention.grid, cmap="magma", interpolation="nearest")
            ax.set_xlabel("image tokens in prompt order", fontsize=8)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="received attention")
        ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def plot_sink_overlap(survey: pd.DataFrame, path: str | Path) -> Path:
    """Per layer: image tokens that are attention sinks, massive-activation sinks, and both.

    Args:
        survey: a :func:`eahlib.analysis.massive_activation_survey` frame.
        path: output PNG.
    """
    columns = {"attention_sinks": "attention-score sinks (image tokens)",
               "massive_image_sinks": "massive-activation sinks (image tokens)", "overlap": "both"}
    means = survey.groupby("layer")[list(columns)].mean().rename(columns=columns)
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    means.plot(ax=ax, marker="o")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("tokens per image (mean)")
    bos = survey.groupby("layer").massive_on_bos.mean()
    ax.set_title(f"Attention sinks vs massive activations ({survey.image.nunique()} images)\n"
                 f"first token massive in {bos.mean():.0%} of (image, layer) pairs", fontsize=10)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    return _save(fig, path)


def plot_correlation(x: np.ndarray, y: np.ndarray, estimate: object, path: str | Path,
                     xlabel: str, ylabel: str) -> Path:
    """Scatter with a regression line; the title gives the correlation and its CI."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    sns.regplot(x=np.asarray(x, float), y=np.asarray(y, float), ax=ax, x_jitter=0.15, y_jitter=0.02,
                scatter_kws={"s": 10, "alpha": 0.5})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Spearman rho = {estimate}  (95% bootstrap CI)", fontsize=10)
    return _save(fig, path)


def plot_conditions(summary: pd.DataFrame, metric: str, path: str | Path, title: str) -> Path:
    """Point estimates with confidence intervals per condition (rows of ``summary``).

    Args:
        summary: columns ``condition``, ``<metric>``, ``<metric>_low``, ``<metric>_high``.
        metric: which metric to show.
        path: output PNG.
        title: figure title.
    """
    ordered = summary.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.0, max(2.5, 0.32 * len(ordered) + 1.2)))
    y = np.arange(len(ordered))
    errors = np.vstack([ordered[metric] - ordered[f"{metric}_low"], ordered[f"{metric}_high"] - ordered[metric]])
    ax.errorbar(ordered[metric], y, xerr=errors, fmt="o", color="tab:blue", ecolor="0.5", capsize=3)
    ax.set_yticks(y, ordered["condition"])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (95% bootstrap CI)")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_head_views(profile: SinkProfile, divergence: HeadDivergence, path: str | Path) -> Path:
    """EAH's view of the heads beside VHR's, on one batch: the mean sink density (layers x heads); the mean
    VHD at the first step, a dot on each head VHR reinforces (its size: the share of samples); and per layer
    the mean Spearman rho between the two (:func:`eahlib.head_views`) and the share of samples whose densest
    head VHR reinforces.

    Args:
        profile: :func:`eahlib.sink_profile` of the batch.
        divergence: :func:`eahlib.vision_head_divergence` of the same batch.
        path: output PNG.
    """
    views = head_views(profile, divergence)
    layers = [layer for layer in profile.layers if layer in divergence.layers]
    mine = [divergence.layers.index(layer) for layer in layers]
    density = pd.DataFrame(profile.density[[profile.layers.index(layer) for layer in layers]].float().mean(1).numpy(),
                           index=layers)
    vhd = pd.DataFrame(divergence.first_step()[mine].nanmean(1).numpy(), index=layers)
    share = divergence.reinforced[mine].float().mean(1).numpy()
    per_layer = views.groupby("layer").agg(rho=("spearman_rho", "mean"), reinforced=("densest_reinforced", "mean"))
    height = max(3.5, 1.5 + 0.3 * len(layers))
    fig, axes = plt.subplots(1, 3, figsize=(6.0 + 0.7 * density.shape[1], height),
                             gridspec_kw={"width_ratios": [1, 1, 0.55]})
    sns.heatmap(density, ax=axes[0], cmap="viridis", vmin=0, cbar_kws={"label": "vision sinks (mean)"})
    sns.heatmap(vhd, ax=axes[1], cmap="magma", cbar_kws={"label": "VHD at the first step (mean)"})
    rows, heads = np.nonzero(share)
    axes[1].scatter(heads + 0.5, rows + 0.5, s=40 * share[rows, heads], color="white", edgecolor="black",
                    linewidth=0.5, label="reinforced by VHR")
    for ax, name in zip(axes[:2], ("EAH's view: sink density", "VHR's view: VHD")):
        ax.set_xlabel("head")
        ax.set_ylabel("decoder layer")
        ax.set_title(name, fontsize=10)
    position = np.arange(len(per_layer)) + 0.5
    axes[2].barh(position, per_layer["rho"].fillna(0), color="tab:blue", alpha=0.6, label="Spearman rho (mean)")
    axes[2].scatter(per_layer["reinforced"], position, color="tab:red", zorder=3,
                    label="densest head reinforced (share)")
    axes[2].set_ylim(len(per_layer), 0)
    axes[2].set_yticks(position, per_layer.index)
    axes[2].set_xlim(-1.1, 1.1)
    axes[2].axvline(0, color="0.5", linewidth=0.8)
    axes[2].set_title("per layer", fontsize=10)
    axes[2].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.05))
    fig.suptitle(f"Heads by vision sinks (EAH) and by vision-aware divergence (VHR), {views['sample'].nunique()} "
                 "samples", fontsize=11)
    return _save(fig, path)
