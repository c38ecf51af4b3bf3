"""Figures of sink profiles, saved to files by path (notebooks call these, they define none)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from eahlib.profile import SinkProfile  # noqa: E402


def plot_density_heatmap(profile: SinkProfile, path: str | Path, title: str | None = None) -> Path:
    """Heatmap of the mean sink density over samples, layers × heads, written to ``path`` (PNG).

    Args:
        profile: a :class:`~eahlib.profile.SinkProfile`.
        path: output file; parent folders are created.
        title: figure title (default: the criterion).

    Returns:
        The written path.
    """
    frame = profile.to_frame()
    table = frame.groupby(["layer", "head"]).density.mean().unstack("head")
    n_image = int(profile.image_mask.sum(-1).max())
    fig, ax = plt.subplots(figsize=(max(6.5, 2.5 + 0.45 * table.shape[1]), max(3.5, 1.5 + 0.35 * table.shape[0])))
    sns.heatmap(table, ax=ax, cmap="viridis", vmin=0, annot=table.shape[1] <= 16, fmt=".1f",
                cbar_kws={"label": f"vision sinks (of {n_image} image tokens)"})
    ax.set_xlabel("head")
    ax.set_ylabel("decoder layer")
    ax.set_title(title or "Sink density per layer and head", fontsize=11)
    fig.text(0.01, 0.01, f"{profile.criterion.describe()}, {profile.normalizer} normalizer, "
             f"mean over {profile.density.shape[1]} samples", fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
