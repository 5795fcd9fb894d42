"""The figures a reader looks at first: the findings' effects with their intervals and
verdicts, the claims' verdicts, and the ranks across datasets.

Each function draws what :mod:`regstudy_report.findings`, :mod:`~regstudy_report.across`
and :mod:`~regstudy_report.claims` computed; nothing is computed here. Its docstring is
the figure's caption in the report.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from regstudy_report.across import Ranks
from regstudy_report.claims import CLAIM_VERDICTS, Claim, ClaimResult
from regstudy_report.figures import _OUTSIDE, _note, _panels, _styled, _symlog_x, family_palette
from regstudy_report.findings import BASELINE, LABELS, NO_REGULARIZATION, NOT_MEASURED, Finding
from regstudy_report.stats import BETTER, EQUIVALENT, UNDETERMINED, WORSE, sig
from regstudy_report.tables import DATASET_ORDER, FAMILY_ORDER, ordered

VERDICT_COLORS = {BETTER: "#1a9850", EQUIVALENT: "#4575b4", WORSE: "#d73027", UNDETERMINED: "#999999",
                  NO_REGULARIZATION: "#cccccc", NOT_MEASURED: "#ffffff", "baseline": "#ffffff"}
VERDICT_MARKS = {BETTER: "▲", EQUIVALENT: "=", WORSE: "▼", UNDETERMINED: "?", NO_REGULARIZATION: "0",
                 NOT_MEASURED: "", "baseline": ""}
CLAIM_COLORS = {"reproduced": "#1a9850", "not reproduced": "#d73027", "inconclusive": "#bbbbbb",
                "not testable": "#f2e6c9", "not measured": "#ffffff"}


def _verdict_legend(ax, labels=LABELS[:-2], **where) -> None:
    handles = [Line2D([], [], marker="o", ls="", color=VERDICT_COLORS[v], markeredgecolor="0.3", label=v)
               for v in labels]
    ax.legend(handles=handles, fontsize=9.5, **(where or _OUTSIDE))


@_styled
def effects_heatmap(found: list[Finding]) -> Figure:
    """Every finding at a glance: one cell per dataset and family, coloured by the effect on
    the test metric against the family's comparator, in equivalence margins (effect /
    margin, so R² and accuracy share a scale; green better, red worse, clipped at ±5), and
    marked with its verdict after Holm's correction per dataset: ▲ better, ▼ worse,
    = equivalent, ? undetermined, 0 no regularization selected; * borderline (a verdict
    a small change of the numbers could flip); an empty cell was not measured."""
    rows = [f for f in found if f.family != BASELINE]
    datasets = ordered({f.dataset for f in rows}, DATASET_ORDER)
    families = ordered({f.family for f in rows}, FAMILY_ORDER)
    grid = np.full((len(datasets), len(families)), np.nan)
    marks = np.full(grid.shape, "", dtype=object)
    for f in rows:
        i, j = datasets.index(f.dataset), families.index(f.family)
        if f.verdict != NOT_MEASURED and math.isfinite(f.effect.mean):
            grid[i, j] = np.clip(f.effect.mean / f.margin, -5, 5)
        marks[i, j] = VERDICT_MARKS[f.verdict] + ("*" if f.borderline else "")
    fig, axes = _panels(1, 1, (0.62 * max(len(families), 4), 0.5 * max(len(datasets), 2) + 0.9))
    ax = axes[0, 0]
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -5.0, 5.0), aspect="auto")
    for i in range(len(datasets)):
        for j in range(len(families)):
            if marks[i, j]:
                ax.text(j, i, marks[i, j], ha="center", va="center", fontsize=11, color="black")
    ax.set_xticks(range(len(families)), families, rotation=45, ha="right")
    ax.set_yticks(range(len(datasets)), datasets)
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="effect / equivalence margin", shrink=0.9)
    return fig


@_styled
def forest_plot(found: list[Finding]) -> Figure:
    """Each family at its best validation setting against its comparator (the baseline, or
    the family's own non-binding setting, marked †): the paired difference of the test
    metric, mean over seeds with its 95% t-interval, coloured by verdict (Holm-corrected
    per dataset). The grey band is the region of practical equivalence (±margin), the line
    0 no difference. Families with no regularization selected sit at 0; best first."""
    rows = [f for f in found if f.family != BASELINE and f.strength is not None]
    rows.sort(key=lambda f: (f.verdict in (NO_REGULARIZATION, NOT_MEASURED),
                             -(f.effect.mean if math.isfinite(f.effect.mean) else -math.inf)))
    fig, axes = _panels(1, 1, (6.4, 0.3 * max(len(rows), 3) + 0.8))
    ax = axes[0, 0]
    if not rows:
        _note(ax, "no family to compare")
        return fig
    margin = rows[0].margin
    ax.axvspan(-margin, margin, color="0.88", lw=0, zorder=0)
    ax.axvline(0.0, color="0.3", lw=0.9, zorder=1)
    for y, f in enumerate(rows):
        color = VERDICT_COLORS[f.verdict]
        if f.effect.defined:
            ax.plot([f.effect.lo, f.effect.hi], [y, y], color=color, lw=2.2, solid_capstyle="butt", zorder=2)
        if math.isfinite(f.effect.mean):
            ax.plot(f.effect.mean, y, "o", color=color, markeredgecolor="0.2", markersize=6, zorder=3)
    labels = [f"{f.family}{' †' if f.comparator.family != BASELINE else ''}"
              f"{' *' if f.borderline else ''} ({f.strength_name}={sig(f.strength)})" for f in rows]
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(f"Δ test {rows[0].metric_name} against the comparator (band: ±{sig(margin)})")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    _verdict_legend(ax, (BETTER, EQUIVALENT, WORSE, UNDETERMINED, NO_REGULARIZATION))
    return fig


@_styled
def paired_vs_strength(table: pd.DataFrame, members: pd.DataFrame, margin: float) -> Figure:
    """The effect of each strength, not just the best one: the paired difference against
    the family's comparator (the baseline, or its own non-binding setting) of the
    validation metric, the test metric (R² or accuracy) and the generalization gap
    (validation minus training data loss, in loss units), mean over seeds with its 95%
    t-interval as a band, one line per family; one row per swept key (λ, dropout p, noise
    σ, patience in epochs, max-norm c), the λ families in two rows (penalties with their
    proximal variants, then decay, normalization and the SGD controls). The grey band is
    the region of practical equivalence of the metric (±margin). The x axis is
    symmetric-log: logarithmic above the smallest positive strength, linear below it."""
    from regstudy_report.figures import SPARSITY_FAMILIES
    from regstudy_report.tables import strength_name

    metric = str(members["metric_name"].iloc[0])
    families = ordered(table["family"].unique(), FAMILY_ORDER)
    by_name: dict[tuple, list[str]] = {}
    for family in families:
        name = strength_name(members, family)
        by_name.setdefault((name, name == "lam" and family not in SPARSITY_FAMILIES), []).append(family)
    palette = family_palette(families)
    panels = [("val_metric", f"Δ validation {metric}"), ("test_metric", f"Δ test {metric}"), ("gap", "Δ gap")]
    fig, axes = _panels(3 * max(1, len(by_name)), 3, (3.0, 2.3))
    for row_axes, ((name, _), row_families) in zip(axes, by_name.items() or [(("strength", False), [])]):
        rows = table[table["family"].isin(row_families)]
        for ax, (column, label) in zip(row_axes, panels):
            if column != "gap":
                ax.axhspan(-margin, margin, color="0.88", lw=0, zorder=0)
            ax.axhline(0.0, color="k", ls=":", lw=1)
            for family in row_families:
                line = rows[(rows["family"] == family) & (rows["column"] == column)].sort_values("strength")
                line = line[np.isfinite(line["mean"].to_numpy(dtype=float))]
                if line.empty:
                    continue
                ax.plot(line["strength"], line["mean"], color=palette[family], marker="o", markersize=3, lw=1.2,
                        markeredgewidth=0.75, markeredgecolor="w")
                band = line[np.isfinite(line["lo"].to_numpy(dtype=float))]
                ax.fill_between(band["strength"], band["lo"], band["hi"], color=palette[family], alpha=0.2, lw=0)
            linthresh = _symlog_x(ax, rows["strength"] if len(rows) else pd.Series([0.0, 1.0]))
            ax.set(xlabel=f"{name} (symlog, linear below {linthresh:g})", ylabel=label)
        handles = [Line2D([], [], color=palette[f], lw=2, marker="o", ms=3, label=f) for f in row_families]
        row_axes[-1].legend(handles=handles, fontsize=10, loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


@_styled
def claim_grid(checked: list[tuple[Claim, list[ClaimResult]]]) -> Figure:
    """Every claim of the literature on every dataset it was checked on: one row per claim
    and variant (what was compared), one column per dataset, coloured by verdict; ~ marks
    a fragile verdict (it changes when a threshold of its criterion moves: see the claim's
    row below)."""
    rows = sorted({(c.id, r.variant) for c, results in checked for r in results if r.dataset != "any"},
                  key=lambda cv: ([c.id for c, _ in checked].index(cv[0]), cv[1]))
    datasets = ordered({r.dataset for _, results in checked for r in results if r.dataset != "any"}, DATASET_ORDER)
    fig, axes = _panels(1, 1, (1.0 * max(len(datasets), 3) + 3.5, 0.3 * max(len(rows), 3) + 0.8))
    ax = axes[0, 0]
    if not rows:
        _note(ax, "no claim was measured")
        return fig
    codes = np.full((len(rows), len(datasets)), CLAIM_VERDICTS.index("not measured"))
    for claim, results in checked:
        for r in results:
            if r.dataset == "any":
                continue
            i, j = rows.index((claim.id, r.variant)), datasets.index(r.dataset)
            codes[i, j] = CLAIM_VERDICTS.index(r.verdict)
            if r.fragile:
                ax.text(j, i, "~", ha="center", va="center", fontsize=13, color="black")
    cmap = ListedColormap([CLAIM_COLORS[v] for v in CLAIM_VERDICTS])
    ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(CLAIM_VERDICTS) - 0.5, aspect="auto")
    ax.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [f"{c}: {v}" if v else c for c, v in rows], fontsize=9)
    ax.set_xticks(np.arange(len(datasets) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
    ax.grid(False)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    ax.legend(handles=[Patch(facecolor=CLAIM_COLORS[v], edgecolor="0.5", label=v) for v in CLAIM_VERDICTS],
              fontsize=9.5, **_OUTSIDE)
    return fig


@_styled
def critical_difference(ranks: Ranks, alpha: float) -> Figure:
    """Mean rank of each family across datasets (1 = the best test metric at its best
    setting), with Nemenyi's post-hoc test after Friedman's: families joined by a bar
    cannot be told apart at the stated α (Demšar 2006; drawn by scikit-posthocs). With as
    few datasets as here, wide bars are expected: they say how little the ranks can
    separate, not that the families are alike."""
    import scikit_posthocs as sp

    fig, axes = _panels(1, 1, (7.5, 0.22 * len(ranks.families) + 1.2))
    ax = axes[0, 0]
    drawn = sp.critical_difference_diagram(ranks.mean_ranks, ranks.nemenyi, alpha=alpha, ax=ax,
                                           label_props={"fontsize": 9.5})
    # a bar joins the members of a set, in the set's iteration order, which hash
    # randomization changes from one process to the next: draw its points left to right
    for lines in drawn["crossbars"]:
        for line in lines:
            x, y = line.get_data()
            order = np.argsort(np.asarray(x, dtype=float), kind="stable")
            line.set_data(np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order])
    ax.set_title(f"Friedman p = {sig(ranks.friedman_p, 2)} over {len(ranks.datasets)} datasets", fontsize=10)
    return fig
