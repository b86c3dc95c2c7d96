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
def fitness_scatter(variants, score: str = "score_after", method: str = "masked_marginals",
                    title: str | None = None, ax=None):
    """Model score (x) against the measured ``DMS_score`` (y), one point per variant (a
    ``FitnessRun.variants`` table); coloured by mutation order when orders are mixed. The title
    names the method and gives the Spearman correlation."""
    from scipy.stats import spearmanr

    ax = _axes(ax, figsize=(4.5, 4))
    hue = "n_mutations" if variants["n_mutations"].nunique() > 1 else None
    sns.scatterplot(data=variants, x=score, y="DMS_score", hue=hue, s=10, alpha=0.5,
                    linewidth=0, palette="colorblind" if hue else None, ax=ax)
    rho = spearmanr(variants[score], variants["DMS_score"]).statistic
    when = score.replace("score_", "")
    ax.set(xlabel=f"{method.replace('_', ' ')} score ({when} TTT)", ylabel="measured DMS score")
    ax.set_title(f"{title + ': ' if title else ''}Spearman {rho:.3f}", fontsize=10)
    return ax


def marginal_heatmaps(before, after, wild_type: str, axes=None, title: str | None = None):
    """Masked marginals (L x 20 log-probabilities) before and after TTT and their difference,
    as three stacked position x amino-acid heat maps (wild type dotted). Returns the Axes."""
    import numpy as np

    if axes is None:
        width = max(7.0, min(18.0, len(wild_type) * 0.12))
        _, axes = plt.subplots(3, 1, figsize=(width, 8.5), layout="constrained")
    label = "log p(aa | rest)"
    marginals_heatmap(before, wild_type, ax=axes[0], center=None, cmap="viridis", label=label,
                      title=f"{title + ': ' if title else ''}masked marginals before TTT")
    marginals_heatmap(after, wild_type, ax=axes[1], center=None, cmap="viridis", label=label,
                      title="after TTT")
    marginals_heatmap(np.asarray(after) - np.asarray(before), wild_type, ax=axes[2],
                      label="change in log p", title="after - before")
    return axes


def fitness_figure(variants, before, after, wild_type: str, method: str = "masked_marginals",
                   title: str | None = None):
    """One assay at a glance: predicted vs measured before and after TTT (top), masked-marginal
    heat maps before / after / difference (below). Returns the Figure."""
    width = max(9.0, min(18.0, len(wild_type) * 0.12))
    fig = plt.figure(figsize=(width, 13), layout="constrained")
    grid = fig.add_gridspec(4, 2, height_ratios=[1.5, 1, 1, 1])
    for col, when in enumerate(("before", "after")):
        fitness_scatter(variants, f"score_{when}", method, title=f"{when} TTT",
                        ax=fig.add_subplot(grid[0, col]))
    axes = [fig.add_subplot(grid[i, :]) for i in (1, 2, 3)]
    marginal_heatmaps(before, after, wild_type, axes=axes)
    if title:
        fig.suptitle(title)
    return fig


def _short_label(assay: str) -> str:
    parts = assay.split("_")
    return f"{parts[0]} {parts[-1]}"


def delta_spearman_plot(table, ax=None):
    """The paper's key view: change in Spearman from TTT (y, with the paired bootstrap 95 %
    interval when ``delta_spearman_ci_lo/_hi`` are present) against the pseudo-perplexity before
    TTT (x), one labelled point per assay (a ``fitness.results_table``)."""
    from scipy.stats import spearmanr

    ax = _axes(ax, figsize=(6, 4.5))
    x, y = table["pseudo_perplexity_before"], table["delta_spearman"]
    if {"delta_spearman_ci_lo", "delta_spearman_ci_hi"} <= set(table.columns):
        err = [(y - table["delta_spearman_ci_lo"]).clip(lower=0),  # a percentile interval
               (table["delta_spearman_ci_hi"] - y).clip(lower=0)]    # may miss the estimate
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="grey", elinewidth=1, alpha=0.7)
    multi = table["doubles_n"].fillna(0) > 0 if "doubles_n" in table else None
    style = (multi.map({True: "with doubles", False: "singles only"}).rename("assay")
             if multi is not None else None)
    sns.scatterplot(x=x, y=y, style=style, s=60, ax=ax, zorder=3)
    for xi, yi, name in zip(x, y, table["assay"]):
        ax.annotate(_short_label(name), (xi, yi), xytext=(4, 3), textcoords="offset points",
                    fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    title = "TTT gain vs perplexity before TTT"
    if len(table) >= 3:
        title += f" (Spearman across assays {spearmanr(x, y).statistic:.2f})"
    ax.set(xlabel="pseudo-perplexity before TTT", ylabel="change in Spearman (after - before)")
    ax.set_title(title, fontsize=10)
    return ax


def homolog_comparison(table, axes=None):
    """Two panels from ``fitness.compare_homolog_ttt``: Spearman per assay with no TTT, TTT on the
    wild type and TTT on the wild type and its homologs; and the change from adding homologs
    (with its paired 95 % interval) against the effective number of homologs (MSA depth)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    long = table.melt(id_vars="assay", value_vars=["spearman_none", "spearman_single",
                                                   "spearman_homolog"],
                      var_name="TTT", value_name="Spearman")
    long["TTT"] = long["TTT"].map({"spearman_none": "none", "spearman_single": "wild type",
                                   "spearman_homolog": "wild type + homologs"})
    long["assay"] = long["assay"].map(_short_label)
    sns.barplot(long, x="assay", y="Spearman", hue="TTT", ax=axes[0])
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_title("zero-shot Spearman per assay", fontsize=10)
    x, y = table["effective_homologs"], table["delta_homolog_vs_single"]
    err = [(y - table["delta_homolog_vs_single_lo"]).clip(lower=0),
           (table["delta_homolog_vs_single_hi"] - y).clip(lower=0)]
    axes[1].errorbar(x, y, yerr=err, fmt="o", color="C2", ecolor="grey")
    for xi, yi, name in zip(x, y, table["assay"]):
        axes[1].annotate(_short_label(name), (xi, yi), xytext=(4, 3), textcoords="offset points",
                         fontsize=7)
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_xscale("log")
    axes[1].set(xlabel="effective homologs (sum of redundancy weights)",
                ylabel="Spearman, homolog TTT - wild-type TTT")
    axes[1].set_title("what the homologs add, against MSA depth", fontsize=10)
    return axes


# -------------------------------------------------------------------------- structure
def contact_map(true, pred, top: int | None = None, min_sep: int = 6, ax=None,
                title: str | None = None):
    """True contacts (grey, both triangles) with the ``top`` (default L) predicted pairs with
    ``j - i >= min_sep`` drawn in the upper triangle: blue when in contact, red when not."""
    import numpy as np

    ax = _axes(ax, figsize=(4.5, 4.5))
    length = len(true)
    size = max(2.0, (250 / length) ** 2)  # marker area: about one cell of the map
    ii, jj = np.where(np.nan_to_num(true) > 0)
    far = np.abs(ii - jj) >= min_sep
    ax.scatter(jj[far], ii[far], s=size, marker="s", color="0.75", linewidths=0,
               label="true contact")
    i, j = np.triu_indices(length, k=min_sep)
    order = np.argsort(-pred[i, j], kind="stable")[: top or length]
    i, j = i[order], j[order]
    hit = np.nan_to_num(true[i, j]) > 0
    ax.scatter(j[hit], i[hit], s=size, color="tab:blue", label="predicted, correct")
    ax.scatter(j[~hit], i[~hit], s=size, color="tab:red", label="predicted, wrong")
    ax.set(xlim=(-0.5, length - 0.5), ylim=(length - 0.5, -0.5), xlabel="residue j",
           ylabel="residue i", aspect="equal", title=title or f"top {len(i)} predictions")
    ax.grid(False)
    ax.legend(loc="lower left", fontsize="x-small", frameon=True)
    return ax


def heatmap_row(maps: dict, cmap: str = "viridis", axes=None):
    """Square heat maps side by side, one per ``{title: L x L array}`` item; returns the Axes."""
    if axes is None:
        _, axes = plt.subplots(1, len(maps), figsize=(3.8 * len(maps), 3.4), squeeze=False,
                               layout="constrained")
        axes = axes[0]
    for ax, (title, matrix) in zip(axes, maps.items()):
        image = ax.imshow(matrix, cmap=cmap)
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
        ax.set(title=title, xlabel="residue j")
        ax.grid(False)
    axes[0].set_ylabel("residue i")
    return axes


def contact_map_pair(true, before, after, top: int | None = None,
                     titles=("before TTT", "after TTT"), axes=None):
    """Two ``contact_map`` panels side by side (before / after TTT); returns the two Axes."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, pred, title in zip(axes, (before, after), titles):
        contact_map(true, pred, top=top, ax=ax, title=title)
    return axes


def before_after(table, metric: str = "precision_at_L_long", hue: str | None = None, ax=None):
    """Per-protein ``<metric>_before`` (x) against ``<metric>_after`` (y) with the diagonal:
    points above it improved with TTT. The title gives both means."""
    ax = _axes(ax)
    x, y = table[f"{metric}_before"], table[f"{metric}_after"]
    sns.scatterplot(data=table, x=f"{metric}_before", y=f"{metric}_after", hue=hue, s=50, ax=ax)
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.05 * (high - low or 1)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.5", lw=1, ls="--")
    label = metric.replace("_", " ")
    ax.set(xlabel=f"{label} before TTT", ylabel=f"{label} after TTT",
           title=f"mean {x.mean():.3f} -> {y.mean():.3f} (n={len(table)})")
    return ax


def contacts_3d(coords, pairs, ax=None, title: str | None = None):
    """Static 3D view (matplotlib): the chain trace through ``coords`` (L x 3, NaN gaps) and one
    line per row of ``pairs`` (``i``, ``j``, ``contact``): blue correct, red wrong, grey unknown.
    """
    import numpy as np

    if ax is None:
        ax = plt.figure(figsize=(5, 5)).add_subplot(projection="3d")
    ax.plot(*coords.T, color="0.6", lw=1.5)
    for row in pairs.itertuples():
        colour = "0.7" if np.isnan(row.contact) else ("tab:blue" if row.contact else "tab:red")
        ax.plot(*coords[[row.i, row.j]].T, color=colour, lw=1.2)
    ax.set_box_aspect(np.nanmax(coords, axis=0) - np.nanmin(coords, axis=0))  # undistorted
    ax.set_axis_off()
    ax.set_title(title or f"top {len(pairs)} predicted contacts (blue correct, red wrong)")
    return ax


def contacts_view(pdb_text: str, coords, pairs, width: int = 480, height: int = 400):
    """Interactive py3Dmol view: grey cartoon of ``pdb_text`` with a cylinder per row of ``pairs``
    between the residues' C-beta points (blue correct, red wrong, grey unknown). py3Dmol loads
    its JavaScript from a CDN (blank offline); without py3Dmol this falls back to
    ``contacts_3d``."""
    import numpy as np

    try:
        import py3Dmol
    except ImportError:
        return contacts_3d(coords, pairs)
    view = py3Dmol.view(width=width, height=height)
    view.addModel(pdb_text, "pdb")
    view.setStyle({"cartoon": {"color": "lightgrey"}})
    for row in pairs.itertuples():
        a, b = coords[row.i], coords[row.j]
        if np.isnan(a).any() or np.isnan(b).any():
            continue
        colour = "grey" if np.isnan(row.contact) else ("blue" if row.contact else "red")
        view.addCylinder({"start": dict(zip("xyz", map(float, a))),
                          "end": dict(zip("xyz", map(float, b))),
                          "radius": 0.2, "color": colour, "fromCap": 1, "toCap": 1})
    view.zoomTo()
    return view


def plddt_per_step(result, ax=None, title: str | None = None):
    """Mean pLDDT after each TTT step (step 0: before TTT) of a ``studies.folding.FoldResult``, the
    step kept marked; TM-score per step on a second axis when it was computed for every step."""
    ax = _axes(ax, (5, 3.5))
    table = result.table()
    ax.plot(table["step"], table["plddt"], marker="o", color="C0", label="mean pLDDT")
    ax.axvline(result.best_step, color="grey", ls="--", lw=1)
    ax.annotate(f"kept: step {result.best_step}", (result.best_step, table["plddt"].max()),
                textcoords="offset points", xytext=(4, -12), fontsize=8, color="grey")
    ax.set(xlabel="TTT step", ylabel="mean pLDDT", title=title or "")
    if "tm_score" in table and table["tm_score"].notna().sum() > 1:
        twin = ax.twinx()
        known = table.dropna(subset=["tm_score"])
        twin.plot(known["step"], known["tm_score"], marker="s", color="C3", label="TM-score")
        twin.set_ylabel("TM-score", color="C3")
    return ax


def structures_view(pdbs: dict, width: int = 520, height: int = 420):
    """Interactive py3Dmol view of several structures together (label -> PDB text, e.g. the
    experimental chain and superimposed predictions), one colour each, with a legend printed
    below; without py3Dmol, ``None``."""
    try:
        import py3Dmol
    except ImportError:
        return None
    colours = ["lightgrey", "orange", "royalblue", "seagreen", "purple"]
    view = py3Dmol.view(width=width, height=height)
    for k, (label, text) in enumerate(pdbs.items()):
        view.addModel(text, "pdb")
        view.setStyle({"model": k}, {"cartoon": {"color": colours[k % len(colours)]}})
    view.zoomTo()
    print("  ".join(f"{label}: {colours[k % len(colours)]}" for k, label in enumerate(pdbs)))
    return view


def traces_3d(traces: dict, ax=None, title: str | None = None):
    """Static 3D view of C-alpha traces (label -> N x 3 coordinates), one line each."""
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.figure(figsize=(5, 5)).add_subplot(projection="3d")
    for label, xyz in traces.items():
        ax.plot(*xyz.T, lw=1.5, label=label)
    ax.legend(fontsize=8)
    ax.set_axis_off()
    ax.set_title(title or "")
    return ax


# --------------------------------------------------------------------------- function
def confusion_heatmap(confusion, ax=None, title: str | None = None):
    """A confusion table (rows true, columns predicted; ``FunctionResult.confusion``): colour =
    fraction of each true class, numbers = protein counts."""
    ax = _axes(ax, (6, 5))
    counts = confusion.to_numpy()
    fractions = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    sns.heatmap(fractions, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar=False,
                xticklabels=confusion.columns, yticklabels=confusion.index, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set(xlabel="predicted", ylabel="true", title=title or "")
    ax.tick_params(axis="x", labelrotation=90)
    return ax


def probability_change(table, ax=None):
    """Per protein: change of the true-class probability after TTT (``delta_p_true``) against the
    pseudo-perplexity before TTT (``ppl_before``; log axis when it spans more than 3-fold),
    coloured by ``label``."""
    ax = _axes(ax, (6, 4))
    labels = sorted(table["label"].unique())
    sns.scatterplot(data=table, x="ppl_before", y="delta_p_true", hue="label", hue_order=labels,
                    palette=_label_colours(labels), ax=ax, s=40)
    ax.axhline(0, color="grey", lw=1, zorder=0)
    if table["ppl_before"].max() > 3 * table["ppl_before"].min():
        ax.set_xscale("log")
    ax.set(xlabel="pseudo-perplexity before TTT", ylabel="change of true-class probability")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    return ax


def _label_colours(labels):
    return dict(zip(labels, sns.color_palette("tab10", len(labels))))


def embedding_shift(points, ax=None):
    """PCA view (``function.pca_shift``): training proteins as faint dots, test proteins as arrows
    from the base embedding (``pc1``, ``pc2``) to the one after TTT (``pc1_after``, ...)."""
    ax = _axes(ax, (6, 5))
    train, test = points[points["set"] == "train"], points[points["set"] == "test"]
    labels = sorted(points["label"].unique())
    palette = _label_colours(labels)
    sns.scatterplot(data=train, x="pc1", y="pc2", hue="label", hue_order=labels, palette=palette,
                    alpha=0.35, s=12, linewidth=0, ax=ax)
    for row in test.itertuples():
        ax.annotate("", xy=(row.pc1_after, row.pc2_after), xytext=(row.pc1, row.pc2),
                    arrowprops={"arrowstyle": "->", "color": palette[row.label], "lw": 1.5})
        ax.scatter([row.pc1], [row.pc2], color=palette[row.label], edgecolor="black", s=40)
        ax.annotate(row.id, (row.pc1, row.pc2), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="embeddings before -> after TTT")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    return ax


# ------------------------------------------------------------------------- quickstart
def marginals_heatmap(matrix, seq: str, ax=None, center: float | None = 0.0, cmap: str = "RdBu",
                      robust: bool = True, title: str | None = None,
                      label: str = "log p(mt) - log p(wt)"):
    """Position x amino-acid heat map of an L x 20 matrix (columns ``STANDARD_AA``), e.g.
    ``scoring.substitution_scores`` or a before/after difference; the wild type is dotted.

    ``center`` (default 0) makes the colour scale symmetric around it (``None``: plain min-max);
    ``robust`` caps the scale at the 98th percentile so a few extreme cells do not wash it out.
    """
    import numpy as np

    from tttlab.common.sequences import STANDARD_AA

    values = np.asarray(matrix, dtype=float)
    if values.ndim != 2 or values.shape != (len(seq), len(STANDARD_AA)):
        raise ValueError(f"matrix shape {values.shape} does not match {len(seq)} residues x 20")
    ax = _axes(ax, figsize=(max(6, len(seq) * 0.12), 3.2))
    finite = values[np.isfinite(values)]
    if center is None:
        lo, hi = (np.percentile(finite, [2, 98]) if robust and finite.size else
                  (np.nanmin(values), np.nanmax(values)))
    else:
        dev = np.abs(finite - center)
        half = (np.percentile(dev, 98) if robust else dev.max()) if dev.size else 1.0
        half = half or 1.0
        lo, hi = center - half, center + half
    image = ax.imshow(values.T, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="none")
    wt = [(i, STANDARD_AA.index(c)) for i, c in enumerate(seq) if c in STANDARD_AA]
    if wt:
        ax.scatter(*zip(*wt), s=4, c="black", marker="o", linewidths=0)
    ax.set_yticks(range(len(STANDARD_AA)), list(STANDARD_AA), fontsize=7)
    step = 5 if len(seq) <= 100 else 10 if len(seq) <= 300 else 50
    ticks = [t for t in range(step - 1, len(seq), step)]
    ax.set_xticks(ticks, [str(t + 1) for t in ticks], fontsize=8)
    ax.set(xlabel="position", ylabel="substitution")
    ax.grid(False)
    ax.figure.colorbar(image, ax=ax, label=label, fraction=0.03, pad=0.01)
    if title:
        ax.set_title(title)
    return ax


def ttt_summary_figure(history, before, after, seq: str, title: str | None = None):
    """One figure for a customisation: loss and pseudo-perplexity per TTT step (``history`` =
    ``TTTResult.table()``) above the substitution-score heat maps before, after and their
    difference (``before``/``after``: L x 20 matrices such as ``scoring.substitution_scores``).
    Returns the Figure."""
    import numpy as np
    import pandas as pd

    history = pd.DataFrame(history)
    width = max(9.0, min(18.0, len(seq) * 0.12))
    fig = plt.figure(figsize=(width, 11), layout="constrained")
    grid = fig.add_gridspec(4, 2, height_ratios=[1.1, 1, 1, 1])
    for col, y in enumerate(("loss", "pseudo_perplexity")):
        ax = fig.add_subplot(grid[0, col])
        if y in history and history[y].notna().any():
            ttt_curve(history, y, ax=ax).xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {y.replace('_', ' ')} recorded", ha="center", va="center")
    marginals_heatmap(before, seq, ax=fig.add_subplot(grid[1, :]), title="before TTT")
    marginals_heatmap(after, seq, ax=fig.add_subplot(grid[2, :]), title="after TTT")
    marginals_heatmap(np.asarray(after) - np.asarray(before), seq, ax=fig.add_subplot(grid[3, :]),
                      cmap="PuOr", title="after - before", label="change in score")
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------ pretraining
def size_sweep_curves(runs: dict, unigram: float | None = None, reference: dict | None = None):
    """Validation perplexity of several pretraining runs (``{label: history rows}``) against
    training tokens and against training compute (process CPU hours), side by side.
    ``reference``: ``{label: perplexity}`` drawn as dotted lines (e.g. the previous model)."""
    import pandas as pd

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for label, history in runs.items():
        table = pd.DataFrame(history)
        for ax, x in zip(axes, (table["tokens"] / 1e6, table["cpu_seconds"] / 3600)):
            ax.plot(x, table["val_masked_perplexity"], marker="o", ms=3, label=label)
    for ax in axes:
        if unigram is not None:
            ax.axhline(unigram, ls="--", color="grey", label="unigram baseline")
        for i, (label, value) in enumerate((reference or {}).items()):
            ax.axhline(value, ls=":", color=f"C{len(runs) + i}", label=label)
    if unigram is not None:  # the step-0 point (about 33, uniform guessing) would flatten the rest
        axes[0].set_ylim(top=unigram * 1.2)
    axes[0].set(xlabel="training tokens (millions)", ylabel="validation masked-LM perplexity")
    axes[1].set(xlabel="training compute (process CPU hours)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def pretraining_progress(history: list[dict], checkpoints: list[dict], unigram: float | None = None,
                         reference: dict | None = None, bars: dict | None = None):
    """A pretraining run at a glance, against training tokens: its validation curve (both
    perplexities when recorded) and, at the checkpoints measured with ``benchmarks/v2_bars.py``,
    the pfam40 pseudo-perplexity ratio, the mean zero-shot DMS Spearman and the long-range contact
    precision, each with its bar (dashed) and the previous model (``reference``: dotted; keys
    ``val_masked_perplexity``, ``val_mask_token_perplexity``, ``pfam40_ratio``,
    ``dms_spearman_mean``, ``contacts_p_at_l_long_mean``)."""
    import pandas as pd

    reference, bars = reference or {}, bars or {}
    table = pd.DataFrame(history)
    table = table[table["step"] > 0]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    ax = axes[0]
    for colour, key, label, short in (
            ("C0", "val_masked_perplexity", "15 % selected (objective)", "objective"),
            ("C1", "val_mask_token_perplexity", "mask-token positions only", "mask tokens")):
        if key in table and table[key].notna().any():
            ax.plot(table["tokens"] / 1e6, table[key], lw=1.2, color=colour, label=label)
        if key in reference:  # the previous model on the same measure, in the curve's colour
            ax.axhline(reference[key], ls=":", color=colour, label=f"previous model, {short}")
    if unigram is not None:
        ax.axhline(unigram, ls="--", color="black", lw=0.8, label="unigram")
    ax.set(xlabel="training tokens (millions)", ylabel="validation perplexity")
    ax.legend(fontsize=7)
    points = sorted(checkpoints, key=lambda c: c["weights"]["tokens"])
    tokens = [c["weights"]["tokens"] / 1e6 for c in points]
    panels = (("pfam40_ratio", "pfam40 pseudo-perplexity / unigram", "pfam40_ratio_max"),
              ("dms_spearman_mean", "mean zero-shot Spearman, 12 DMS", "dms_spearman_min"),
              ("contacts_p_at_l_long_mean", "long-range P@L, 20 pfam40 test",
               "contacts_p_at_l_long_min"))
    for ax, (key, label, bar) in zip(axes[1:], panels):
        ax.plot(tokens, [c.get(key) for c in points], marker="o")
        if bar in bars:
            ax.axhline(bars[bar], ls="--", color="C3", label="bar")
        if key in reference:
            ax.axhline(reference[key], ls=":", color="grey", label="previous model")
        ax.set(xlabel="training tokens (millions)", ylabel=label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_sweep_plot(table, out, helper: str, name: str) -> str | None:
    """``<helper>(table)`` of a sweep's finished tasks saved as ``out/<name>.png`` (None when no
    task finished)."""
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    if ok.empty:
        return None
    ax = globals()[helper](ok)
    path = save_figure(ax, name, folder=out)
    plt.close(ax.figure)
    return path
