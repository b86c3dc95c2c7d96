"""Figures for tttlab, seaborn axes-level style: each helper takes tidy tables or arrays (never a
model), accepts ``ax=None`` and returns the ``Axes``. Call ``set_style()`` once per notebook.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns


def set_style() -> None:
    """The tttlab look: seaborn's notebook context, white grid, colour-blind palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def _axes(ax, figsize=(5, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def ttt_curve(history, y: str = "loss", ax=None):
    """A TTT history table (``TTTResult.table()``): ``y`` (loss or pseudo_perplexity) per step."""
    ax = _axes(ax)
    data = history.dropna(subset=[y]) if hasattr(history, "dropna") else history
    sns.lineplot(data=data, x="step", y=y, marker="o", ax=ax)
    ax.set(xlabel="TTT step", ylabel=y.replace("_", " "))
    return ax


def save_figure(fig_or_ax, name: str, folder="figures") -> str:
    """Save a figure (or an Axes' figure) as PNG under ``folder`` (created), return the path."""
    from pathlib import Path

    fig = fig_or_ax.figure if hasattr(fig_or_ax, "figure") and not hasattr(fig_or_ax, "savefig") \
        else fig_or_ax
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return str(path)


# ---------------------------------------------------------------------------- fitness

# -------------------------------------------------------------------------- structure

# --------------------------------------------------------------------------- function
