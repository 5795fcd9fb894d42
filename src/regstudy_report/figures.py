"""The report's figures: one function per figure, from one dataset's tables to a Figure.

Each function takes the tables of a single dataset (see docs/results.md) and returns a
matplotlib Figure in seaborn's style, its density curves and mean ± sd lines the ones
seaborn's kdeplot and lineplot draw (computed here: their plotting calls cost ten times the
curves). Its docstring is the figure's caption in the report. Seeds are averaged or shown
as a band; only members with status ok are drawn, except in the panels that mark a
diverged member as such.
"""

from __future__ import annotations

import base64
import functools
import io
import math

import matplotlib

matplotlib.use("Agg")  # before seaborn, which imports pyplot

import numpy as np
import pandas as pd
import PIL.Image
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullLocator

from regstudy_report.density import kde_curve
from regstudy_report.tables import (
    FAMILY_ORDER,
    MEMBER_KEY,
    best_strength,
    matched_strength,
    ok_rows,
    ordered,
    strength_name,
    stronger_is_smaller,
)

DPI = 90
# Panels are drawn this much larger than their nominal inches, so that text (about 11 pt at
# 90 dpi, 14 px) is readable at 100% zoom when the figure is shown at its natural size.
PANEL_SCALE = 1.3
SPARSITY_FAMILIES = ("l1", "l1_prox", "l2", "elastic_net", "elastic_net_prox", "group_lasso", "group_lasso_prox")
FEATURE_FAMILIES = ("l1", "l1_prox", "elastic_net", "elastic_net_prox", "l2")
NORMALIZATION_PAIRS = (("l2", "batchnorm_l2"), ("weight_decay", "layernorm_weight_decay"))
# A trained kernel whose spread fell below this fraction of the initial spread is drawn as
# a spike: a KDE of it would be a needle that flattens every other curve of the panel.
COLLAPSED_SPREAD = 0.01
# Points per KDE curve: evenly thinned above this; the curves do not change visibly and
# the report stays fast with thousands of sampled weights per member.
KDE_POINTS = 1000
# A KDE panel's y axis stops at this multiple of the initial distribution's peak density, so
# that sharply shrunk weights do not flatten every other curve; the clipped peak is printed.
DENSITY_CLIP = 8.0
# Titles at the top of their panel (axes.titley, instead of None: placed above whatever the
# x axis puts there): no panel has x tick labels on top, and looking for them laid out
# both axes of every panel twice more at each layout pass.
_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.9), "axes.titley": 1.0}
_FAMILY_COLORS = [c for i in (0, 1) for c in sns.color_palette("tab20")[i::2]]


def _styled(plot):
    """Draw under the report's seaborn style without touching global rcParams."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return plot(*args, **kwargs)

    return wrapper


def _freeze_ticks(fig: Figure) -> None:
    """Fix every axis's ticks where its locator puts them now, with the labels its
    formatter gives them now, leaving out the ticks that would draw nothing.

    Matplotlib re-runs each locator and formatter, and lays out each tick, at every layout
    pass and at the draw; on figures of dozens of panels that was most of the drawing
    time. Limits are final here, so the ticks are the same (their number is chosen for the
    panel's size before the layout fits it, which differs little)."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            _fix_ticks(axis, "major", axis.get_majorticklocs())
            _fix_ticks(axis, "minor", axis.get_minorticklocs())


def _fix_ticks(axis, which: str, locs) -> None:
    """Fixed major or minor ticks at `locs`, labelled as now: only those inside the view
    (matplotlib draws no other), and only those with a label where the ticks have no mark
    and no grid line (the unlabelled minor ticks of a log axis)."""
    ticker = axis.major if which == "major" else axis.minor
    if isinstance(ticker.locator, NullLocator) or not len(locs):
        return
    locs = np.asarray(locs, dtype=float)
    labels = np.asarray(ticker.formatter.format_ticks(locs), dtype=object)
    offset = ticker.formatter.get_offset()
    low, high = sorted(axis.get_transform().transform(axis.get_view_interval()))
    at = axis.get_transform().transform(locs)
    keep = (at >= low - 1e-9 * (high - low)) & (at <= high + 1e-9 * (high - low))
    params = axis.get_tick_params(which=which)
    if not any(on for key, on in params.items() if not key.startswith("label")):  # no mark, no grid
        keep &= labels != ""
    formatter = FixedFormatter(list(labels[keep]))
    formatter.set_offset_string(offset)
    if which == "major":
        axis.set_major_locator(FixedLocator(locs[keep]))
        axis.set_major_formatter(formatter)
    else:
        axis.set_minor_locator(FixedLocator(locs[keep]))
        axis.set_minor_formatter(formatter)


def to_data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI, free of metadata so that it is byte-reproducible.

    An opaque figure (all of the report's, on white) is written without an alpha channel:
    a tenth smaller and faster to compress; zlib level 3 compresses it about as well as
    the default 6, in two thirds of the time."""
    _freeze_ticks(fig)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    if (pixels[..., 3] == 255).all():
        pixels = pixels[..., :3]
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="png", dpi=(fig.dpi, fig.dpi), compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _panels(n: int, ncols: int, size: tuple[float, float], **subplot_kw):
    """A constrained-layout figure with n panels of `size` inches on a grid `ncols` wide."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    size = (size[0] * PANEL_SCALE, size[1] * PANEL_SCALE)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    return fig, axes


def _note(ax, text: str, color: str = "0.3") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=color, fontsize=10)


def strength_palette(strengths, name: str) -> dict:
    """Strength -> colour on a sequential palette, darker = stronger regularization."""
    levels = sorted(pd.unique(pd.Series(strengths).dropna()), reverse=stronger_is_smaller(name))
    return dict(zip(levels, sns.color_palette("crest", len(levels))))


def family_palette(families) -> dict:
    """Family -> colour, the same colour for a family in every figure."""
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    unknown = sorted(set(families) - set(rank))
    rank.update({f: len(FAMILY_ORDER) + i for i, f in enumerate(unknown)})
    return {f: _FAMILY_COLORS[rank[f] % len(_FAMILY_COLORS)] for f in families}


_OUTSIDE = {"loc": "center left", "bbox_to_anchor": (1.01, 0.5)}  # legends beside the panel, off the curves


def _strength_legend(ax, palette: dict, name: str) -> None:
    handles = [Line2D([], [], color=c, lw=2, label=f"{s:g}") for s, c in palette.items()]
    ax.legend(handles=handles, title=name, fontsize=9.5, title_fontsize=10, **_OUTSIDE)


def _loss_unit(members: pd.DataFrame) -> str:
    return "MSE, y²" if (members["task"] == "regression").all() else "cross-entropy, nats"


def _symlog_x(ax, strengths: pd.Series) -> float:
    """Log x axis that still shows strength 0: linear between 0 and the smallest positive strength."""
    positive = strengths[strengths > 0]
    linthresh, top = (float(positive.min()), float(positive.max())) if len(positive) else (1.0, 1.0)
    ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
    decades = np.arange(math.ceil(math.log10(linthresh)), math.ceil(math.log10(top)) + 1)
    ax.set_xticks([0.0] + [10.0**d for d in decades[:: math.ceil(len(decades) / 4)]])  # at most 5 labels
    ax.set_xlim(left=-0.3 * linthresh)  # no empty negative side
    return linthresh


def _seed_means(rows: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean over seeds, one row per `keys` (pandas is much faster here than seaborn's estimator)."""
    return rows.groupby(keys, as_index=False)[columns].mean()


def _thin(rows: pd.DataFrame, by: str, cap: int = KDE_POINTS) -> pd.DataFrame:
    """At most about `cap` rows per level of `by`, evenly spaced in table order: every
    ceil(n / cap)-th of a level's n rows, from its first."""
    levels = pd.factorize(rows[by])[0]
    keep = np.zeros(len(rows), dtype=bool)
    for level in range(levels.max(initial=-1) + 1):
        at = np.flatnonzero(levels == level)
        keep[at[:: math.ceil(len(at) / cap)]] = True
    return rows[keep]


def _surface(rows: pd.DataFrame, column: str):
    """x0, x1, z of a column over the 2-D plotting grid: 2-D arrays when the grid is regular."""
    grid = rows.pivot_table(index="x1", columns="x0", values=column, aggfunc="mean")
    if grid.notna().to_numpy().all():
        return grid.columns.to_numpy(dtype=float), grid.index.to_numpy(dtype=float), grid.to_numpy(dtype=float)
    return tuple(rows[c].to_numpy(dtype=float) for c in ("x0", "x1", column))


def _contourf(ax, surface, **kwargs):
    x0, x1, z = surface
    return ax.contourf(x0, x1, z, **kwargs) if z.ndim == 2 else ax.tricontourf(x0, x1, z, **kwargs)


def _boundary(ax, surface) -> None:
    """The 0.5 contour, where the surface crosses it."""
    x0, x1, z = surface
    if np.nanmin(z) < 0.5 < np.nanmax(z):
        contour = ax.contour if z.ndim == 2 else ax.tricontour
        contour(x0, x1, z, levels=[0.5], colors="k", linewidths=1.1)


def _span(*arrays) -> tuple[float, float]:
    """Range of the finite values of all arrays, with a 3% margin."""
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    low, high = values.min(), values.max()
    margin = 0.03 * (high - low) or 0.5
    return (low - margin, high + margin)


def _same_limits(axes, xlim, ylim) -> None:
    """Equal limits on a grid of panels, tick labels only on the outer ones.

    Cheaper than sharex/sharey, whose limit propagation grows with the square of the
    panels; the ticks are chosen once and fixed, as a locator is re-run on every axis at
    each layout pass (most of a large grid's drawing time)."""
    xticks, yticks = (MaxNLocator(nbins=5).tick_values(*lim) for lim in (xlim, ylim))
    xticks = xticks[(xticks >= min(xlim)) & (xticks <= max(xlim))]
    yticks = yticks[(yticks >= min(ylim)) & (yticks <= max(ylim))]
    for ax in np.ravel(axes):
        if ax.axison:
            ax.set(xlim=xlim, ylim=ylim, xticks=xticks, yticks=yticks)
            ax.label_outer()


def _plot_limits(predictions: pd.DataFrame, data: dict, y_columns: list[str]):
    """x and y limits covering the plotting grid, the training data and the given columns."""
    x_train = np.asarray(data.get("x_train", np.empty((0, 2))), dtype=float)
    if "x0" in predictions:
        return (_span(predictions["x0"], x_train[:, :1] if x_train.ndim == 2 else []),
                _span(predictions["x1"], x_train[:, 1:2] if x_train.ndim == 2 else []))
    return (_span(predictions["x"], x_train),
            _span(*(predictions[c] for c in y_columns), data.get("y_train", [])))


def _first_seed(job_members: pd.DataFrame) -> pd.DataFrame:
    """One member per strength (ascending): the one with the first seed."""
    return job_members.sort_values(["strength", "seed"]).groupby("strength", sort=True).head(1)


def _joined_points(rows: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows with a finite x and y, sorted by x then y: the points lineplot joins."""
    finite = np.isfinite(rows[x].to_numpy(dtype=float)) & np.isfinite(rows[y].to_numpy(dtype=float))
    return rows[finite].sort_values([x, y])


def _lines(ax, rows: pd.DataFrame, x: str, y: str, hue: str, palette: dict, **line_kws) -> None:
    """One line per `hue` level (ascending) through points already aggregated, as seaborn's
    lineplot with estimator=None draws them."""
    for level, points in _joined_points(rows, x, y).groupby(hue, sort=True):
        ax.plot(points[x], points[y], color=palette[level], **line_kws)


def _mean_sd_lines(ax, rows: pd.DataFrame, x: str, y: str, hue: str, order: list, palette: dict,
                   dashes: dict | None = None, **line_kws) -> None:
    """Per `hue` level in `order`, the mean of `y` at each `x` with a ±1 sd band (none where
    one value), as seaborn's lineplot with errorbar="sd" draws them: white-edged markers,
    the band in the line's colour at alpha 0.2."""
    by_level = dict(list(_joined_points(rows, x, y).groupby(hue, sort=False)))
    for level in (level for level in order if level in by_level):
        at_x = by_level[level].groupby(x)[y]
        mean, sd = at_x.mean(), at_x.std()
        style = {"dashes": dashes[level]} if dashes and dashes[level] else {}
        ax.plot(mean.index, mean, color=palette[level], markeredgewidth=0.75, markeredgecolor="w", **style,
                **line_kws)
        ax.fill_between(mean.index, mean - sd, mean + sd, color=palette[level], alpha=0.2)


@_styled
def loss_curves(curves: pd.DataFrame, members: pd.DataFrame) -> Figure:
    """Training (solid) and validation (dashed) data loss per epoch, log scale, one panel per
    family and one line per strength (darker = stronger), mean over the seeds that did not
    diverge; epochs after early stopping are left out. Units: MSE in y² for regression,
    cross-entropy in nats for classification."""
    families = ordered(members["family"].unique(), FAMILY_ORDER)
    fig, axes = _panels(len(families), 3, (3.7, 2.3))
    kept = ok_rows(curves, members)
    kept = kept[~kept["stopped"]]
    for ax, family in zip(axes.ravel(), families):
        name = strength_name(members, family)
        palette = strength_palette(members.loc[members["family"] == family, "strength"], name)
        rows = kept[kept["family"] == family]
        ax.set(title=family, xlabel="epoch", ylabel=f"loss ({_loss_unit(members)})")
        if not np.isfinite(rows[["train_loss", "val_loss"]].to_numpy(dtype=float)).any():
            _note(ax, "no finite losses")
            continue
        means = _seed_means(rows, ["strength", "epoch"], ["train_loss", "val_loss"])
        for split, style in [("train_loss", "-"), ("val_loss", "--")]:
            _lines(ax, means, "epoch", split, "strength", palette, linestyle=style, lw=1.1)
        ax.set_yscale("log")
        _strength_legend(ax, palette, name)
    return fig


def _draw_data(ax, data: dict, two_d: bool) -> None:
    if "x_train" not in data or "y_train" not in data:
        return
    x, y = np.asarray(data["x_train"]), np.asarray(data["y_train"]).ravel()
    if two_d:
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=5, edgecolors="white", linewidths=0.2, zorder=3)
    else:
        ax.scatter(x.ravel(), y, s=4, color="0.6", alpha=0.6, linewidths=0)


@_styled
def fitted_functions(predictions: pd.DataFrame, members: pd.DataFrame, data: dict) -> Figure:
    """What each trained network computes, one row per family and one panel per strength
    (first seed): for 1-D regression the fitted curve (red) over the training data (grey);
    for 2-D classification the predicted probability of class 1 (blue 0 to red 1), the
    decision boundary p1 = 0.5 (black) and the training points."""
    two_d = "x0" in predictions
    families = ordered(predictions["family"].unique(), FAMILY_ORDER)
    chosen = {f: _first_seed(members[members["family"] == f]) for f in families}
    ncols = max(len(c) for c in chosen.values())
    fig, axes = _panels(len(families) * ncols, ncols, (1.6, 1.4))
    by_member = dict(list(predictions.groupby(["family", "member"])))
    for row_axes, family in zip(axes, families):
        name = strength_name(members, family)
        row_axes[0].set_ylabel(family, fontsize=11, fontweight="bold")
        for ax, member in zip(row_axes, chosen[family].itertuples()):
            ax.set_title(f"{name}={member.strength:g}", fontsize=10)
            _draw_data(ax, data, two_d)
            rows = by_member.get((family, member.member), predictions.iloc[:0])
            if member.status != "ok":
                _note(ax, f"diverged (seed {member.seed})", color="tab:red")
                continue
            if two_d:
                surface = _surface(rows, "p1")
                _contourf(ax, surface, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.55)
                _boundary(ax, surface)
            else:
                rows = rows.sort_values("x")
                ax.plot(rows["x"], rows["y_pred"], color="tab:red", lw=1.3)
        for ax in row_axes[len(chosen[family]):]:
            ax.set_axis_off()
    _same_limits(axes, *_plot_limits(predictions, data, ["y_pred"]))
    return fig


def _hue_order(column: pd.Series) -> list:
    """The levels of a hue column in seaborn's order: a categorical's categories, numbers
    ascending, anything else as it comes."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    levels = column.dropna().unique()
    return sorted(levels) if pd.api.types.is_numeric_dtype(column) else list(levels)


def _density(ax, values, **line_kws) -> None:
    """The kernel density curve of `values` as seaborn's kdeplot draws it (no autoscale
    margin below 0, the y axis labelled Density); no curve without a spread."""
    curve = kde_curve(values)
    if curve is not None:
        line, = ax.plot(*curve, **line_kws)
        line.sticky_edges.y[:] = (0, np.inf)
    if not ax.get_ylabel():
        ax.set_ylabel("Density")


def _kdes(ax, rows: pd.DataFrame, hue: str, palette: dict, labels: dict, reference_std: float,
          legend: dict | None = None) -> None:
    """KDE of `value` per hue level, each normalized on its own; collapsed levels as spikes."""
    rows = _thin(rows, hue)
    spread = rows.groupby(hue)["value"].std()
    threshold = COLLAPSED_SPREAD * reference_std if np.isfinite(reference_std) else 0.0
    collapsed = set(spread.index[~(spread > threshold)])
    values = dict(list(rows.groupby(hue, observed=True)["value"]))
    smooth = [level for level in _hue_order(rows[hue]) if level in values and level not in collapsed]
    for level in reversed(smooth):  # as kdeplot draws them: the first level on top
        _density(ax, values[level], color=palette[level], lw=1.2)
    for level in collapsed:
        ax.axvline(values[level].median(), color=palette[level], lw=1.5)
    handles = [Line2D([], [], color=palette[level], lw=2,
                      label=labels[level] + (" (spike)" if level in collapsed else ""))
               for level in palette if level in spread.index]
    ax.legend(handles=handles, fontsize=9.5, **(legend or {}))


@_styled
def parameter_kdes(params: pd.DataFrame, members: pd.DataFrame) -> Figure:
    """Kernel density estimates of the kernel weights (a fixed sample of at most 512 per
    layer and member, all layers pooled), one row per family. Left: at initialization
    (grey) against after training (blue), all strengths and seeds pooled. Right: after
    training, one curve per strength (darker = stronger), with the initial distribution
    dashed. Each curve has unit area and uses at most 1000 evenly thinned weights. A
    distribution whose spread collapsed below 1% of the initial one is drawn as a vertical
    spike at its median; a density peak above 8 times the initial peak is clipped and its
    value printed in the panel. Units: weight value (density: 1/weight)."""
    families = ordered(members["family"].unique(), FAMILY_ORDER)
    kernels = params.loc[params["kind"] == "kernel", [*MEMBER_KEY, "when", "value"]]
    # one family's rows at a time: the dataset's millions of kernel rows joined at once, with
    # their keys as text, took the report's largest process past 2 GiB
    at = kernels.groupby("family", observed=True).indices
    fig, axes = _panels(2 * len(families), 2, (3.8, 1.9))
    for (ax_when, ax_strength), family in zip(axes, families):
        rows = ok_rows(kernels.iloc[at.get(family, [])], members)
        rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
        ax_when.set(title=f"{family}: init vs trained", xlabel="kernel weight")
        ax_strength.set(title=f"{family}: trained, per strength", xlabel="kernel weight")
        if rows.empty:
            _note(ax_when, "no parameters")
            _note(ax_strength, "no parameters")
            continue
        init = rows.loc[rows["when"] == "init", "value"]
        reference_std = float(init.std()) if len(init) > 1 else math.nan
        _kdes(ax_when, rows, "when", {"init": "0.55", "final": "tab:blue"},
              {"init": "init", "final": "trained"}, reference_std)
        name = strength_name(members, family)
        palette = strength_palette(rows["strength"], name)
        _kdes(ax_strength, rows[rows["when"] == "final"], "strength", palette,
              {s: f"{name}={s:g}" for s in palette}, reference_std, legend=_OUTSIDE)
        if len(init) > 1 and reference_std > 0:
            _density(ax_strength, init.iloc[:: math.ceil(len(init) / KDE_POINTS)], color="0.55", linestyle="--",
                     lw=0.9)
            top = DENSITY_CLIP * np.histogram(init, bins=30, density=True)[0].max()
            _clip_density(ax_when, top)
            _clip_density(ax_strength, top)
    return fig


def _clip_density(ax, top: float) -> None:
    """Stop the y axis at `top` when a curve peaks above it, and say how high it went."""
    peak = max((float(np.nanmax(line.get_ydata())) for line in ax.lines if line.get_transform() is ax.transData),
               default=0.0)
    if peak > top:
        ax.set_ylim(0, top)
        ax.text(0.02, 0.95, f"clipped, peak {peak:.3g}", transform=ax.transAxes, va="top", fontsize=9.5, color="0.3")


@_styled
def sparsity_vs_strength(members: pd.DataFrame) -> Figure:
    """Against strength, for the lasso, ridge, elastic-net and group-lasso families, with their
    proximal (_prox) variants dashed: the fraction of kernel weights with |w| below the zero
    threshold (stated in the axis label), the fraction exactly 0, and the number of hidden
    units still alive (output varying over the training set). Under Adam the subgradient
    variants leave weights jittering around 0 (near zero, rarely exactly 0); the proximal
    steps set them to exactly 0 and remove whole units. Mean ± 1 sd across seeds that did not
    diverge; x axis symmetric-log (linear below the smallest positive strength)."""
    ok = members[(members["status"] == "ok") & members["family"].isin(SPARSITY_FAMILIES)]
    families = ordered(ok["family"].unique(), FAMILY_ORDER)
    palette = family_palette(families)
    dashes = {f: (4, 2) if f.endswith("_prox") else "" for f in families}
    thresholds = ", ".join(f"{t:g}" for t in sorted(ok["zero_threshold"].dropna().unique()))
    totals = ", ".join(f"{t:g}" for t in sorted(ok["total_neurons"].dropna().unique()))
    panels = [("near_zero_fraction", f"fraction |w| < {thresholds}"), ("exact_zero_fraction", "fraction w = 0"),
              ("alive_neurons", f"alive units (of {totals})")]
    panels = [pc for pc in panels if pc[0] in ok]
    fig, axes = _panels(len(panels), 3, (3.3, 2.6))
    for ax, (column, label) in zip(axes.ravel(), panels):
        _mean_sd_lines(ax, ok, "strength", column, "family", families, palette, dashes=dashes, marker="o",
                       markersize=4, lw=1.4)
        linthresh = _symlog_x(ax, ok["strength"])
        ax.set(xlabel=f"λ (symlog, linear below {linthresh:g})", ylabel=label)
    handles = [Line2D([], [], color=palette[f], lw=2, marker="o", ms=4, label=f,
                      linestyle="--" if f.endswith("_prox") else "-") for f in families]
    axes[0, -1].legend(handles=handles, fontsize=10, loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


@_styled
def feature_weights(features: pd.DataFrame, members: pd.DataFrame) -> Figure:
    """Which input features each penalty keeps: the norm of each feature's first-layer weights
    ‖W₁[j, :]‖₂, mean over the seeds that did not diverge, for L1, elastic net and L2 (and the
    proximal variants), each at its matched strength (the strongest whose mean validation
    metric is within 0.02 of, or above, its strength 0: comparable fits); one row per family. Where the
    data generator knows them, relevant features are coloured by their block of correlated
    features and irrelevant ones are grey; 8×8 image inputs (digits) are drawn as an image
    of their pixels. Units: weight norm (dimensionless weights)."""
    families = [f for f in FEATURE_FAMILIES if f in set(features["family"])]
    kept = ok_rows(features, members)
    d = int(kept["feature"].max()) + 1 if len(kept) else 0
    as_image = d >= 16 and math.isqrt(d) ** 2 == d and kept["block"].isna().all()
    if as_image:
        fig, axes = _panels(len(families), len(families), (2.2, 2.1))
    else:
        fig, axes = _panels(len(families), 1, (9.0, 1.6))
    side = math.isqrt(d)
    block_colors = sns.color_palette("tab10")
    for ax, family in zip(axes.ravel(), families):
        job = members[members["family"] == family]
        best = matched_strength(job)
        best = best_strength(job) if best is None else best  # no strength 0 to match against
        if best is None:
            ax.set(title=family, xticks=[], yticks=[])
            _note(ax, "no setting trained on every seed without diverging", color="tab:red")
            continue
        rows = kept[(kept["family"] == family) & np.isclose(kept["strength"], best)]
        means = rows.groupby("feature").agg(norm=("norm", "mean"), block=("block", "first"))
        means = means.reindex(range(d))
        title = f"{family} ({strength_name(members, family)}={best:g})"
        if as_image:
            image = ax.imshow(means["norm"].to_numpy(dtype=float).reshape(side, side), cmap="mako_r")
            ax.set(title=title, xticks=[], yticks=[])
            fig.colorbar(image, ax=ax, shrink=0.8)
            continue
        blocks = means["block"]
        colors = [block_colors[int(b) % 10] if pd.notna(b) else "0.65" for b in blocks]
        ax.bar(means.index, means["norm"], color=colors, width=1.0, lw=0)
        ax.set(title=title, xlabel="input feature", ylabel="‖W₁[j, :]‖", xlim=(-0.5, d - 0.5))
    if not as_image and kept["block"].notna().any():
        handles = [Line2D([], [], color=block_colors[int(b) % 10], lw=6, label=f"block {int(b)}")
                   for b in sorted(kept["block"].dropna().unique())]
        handles.append(Line2D([], [], color="0.65", lw=6, label="irrelevant"))
        axes[0, 0].legend(handles=handles, fontsize=9.5, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def _normalized_layer_stats(layers: pd.DataFrame, normalized_family: str) -> tuple[pd.DataFrame, list[int]]:
    """Per member and epoch: Frobenius norm of the normalized layers' kernels taken together,
    and their mean effective learning rate. Normalized layers are those with an effective_lr
    in the normalized family (else all hidden layers)."""
    normed = layers[(layers["family"] == normalized_family) & layers["effective_lr"].notna()]
    hidden = layers.loc[layers["layer"] < layers["layer"].max(), "layer"]
    chosen = sorted(normed["layer"].unique()) or sorted(hidden.unique())
    rows = layers[layers["layer"].isin(chosen)].assign(squared=lambda d: d["weight_norm"] ** 2)
    stats = rows.groupby(["family", "member", "strength", "seed", "epoch"], as_index=False).agg(
        squared=("squared", "sum"), effective_lr=("effective_lr", "mean"))
    return stats.assign(weight_norm=np.sqrt(stats["squared"])), [int(c) for c in chosen]


@_styled
def norm_and_effective_lr(layers: pd.DataFrame, members: pd.DataFrame) -> Figure:
    """Weight norm and effective learning rate over training, with and without normalization:
    one row per pair (l2 vs batchnorm_l2, weight_decay vs layernorm_weight_decay). Left: the
    Frobenius norm of the kernels of the normalized hidden layers (taken together), without
    normalization solid, with it dashed. Right: the effective learning rate η/‖W‖² (mean over
    those layers), which exists only with normalization. One line per strength (darker =
    stronger), mean over seeds that did not diverge; log y scale."""
    present = set(members["family"])
    pairs = [pair for pair in NORMALIZATION_PAIRS if present & set(pair)]
    kept = ok_rows(layers, members)
    fig, axes = _panels(2 * len(pairs), 2, (3.6, 2.5))
    for (ax_norm, ax_lr), (plain, normed) in zip(axes, pairs):
        stats, chosen = _normalized_layer_stats(kept[kept["family"].isin([plain, normed])], normed)
        family = normed if normed in present else plain
        name = strength_name(members, family)
        palette = strength_palette(members.loc[members["family"].isin([plain, normed]), "strength"], name)
        stats = _seed_means(stats, ["family", "strength", "epoch"], ["weight_norm", "effective_lr"])
        for fam, style in [(plain, "-"), (normed, "--")]:
            _lines(ax_norm, stats[stats["family"] == fam], "epoch", "weight_norm", "strength", palette,
                   linestyle=style, lw=1.1)
        ax_norm.set(title=f"{plain} (solid)\nvs {normed} (dashed)", xlabel="epoch",
                    ylabel=f"‖W‖ of layers {', '.join(map(str, chosen))}", yscale="log")
        normalized = stats[(stats["family"] == normed) & stats["effective_lr"].notna()]
        ax_lr.set(title=f"effective learning rate\n{normed}", xlabel="epoch", ylabel="η/‖W‖²")
        if normalized.empty:
            _note(ax_lr, f"no {normed} results")
        else:
            _lines(ax_lr, normalized, "epoch", "effective_lr", "strength", palette, linestyle="--", lw=1.1)
            ax_lr.set_yscale("log")
        _strength_legend(ax_lr, palette, name)
    return fig


@_styled
def mc_dropout(predictions: pd.DataFrame, members: pd.DataFrame, data: dict) -> Figure:
    """Monte Carlo dropout (family dropout, first seed), one panel per dropout probability p:
    mean of the T stochastic passes with dropout kept on at evaluation. For 1-D regression
    the mean (line) with a ±2 std band over the training data (grey), in units of y; for
    2-D classification the std of the predicted class-1 probability over the passes
    (colour, same scale in all panels) with the 0.5 contour of the mean (black)."""
    dropout = members[members["family"] == "dropout"]
    rows = predictions[predictions["family"] == "dropout"]
    chosen = _first_seed(dropout)
    two_d = "x0" in predictions
    fig, axes = _panels(len(chosen), 4, (2.3, 2.0))
    top = max(float(np.nanmax(rows["mc_std"].to_numpy(dtype=float), initial=0.0)), 1e-6)
    shading = None
    for ax, member in zip(axes.ravel(), chosen.itertuples()):
        ax.set_title(f"p={member.strength:g}", fontsize=10)
        _draw_data(ax, data, two_d)
        if member.status != "ok":
            _note(ax, f"diverged (seed {member.seed})", color="tab:red")
            continue
        mine = rows[rows["member"] == member.member]
        if two_d:
            shading = _contourf(ax, _surface(mine, "mc_std"), levels=np.linspace(0, top, 11), cmap="viridis")
            _boundary(ax, _surface(mine, "mc_mean"))
        else:
            mine = mine.sort_values("x")
            low, high = mine["mc_mean"] - 2 * mine["mc_std"], mine["mc_mean"] + 2 * mine["mc_std"]
            ax.fill_between(mine["x"], low, high, color="tab:purple", alpha=0.3, lw=0)
            ax.plot(mine["x"], mine["mc_mean"], color="tab:purple", lw=1.3)
    band = rows.assign(low=rows["mc_mean"] - 2 * rows["mc_std"], high=rows["mc_mean"] + 2 * rows["mc_std"])
    _same_limits(axes, *_plot_limits(band, data, ["low", "high"]))
    if shading is not None:
        fig.colorbar(shading, ax=axes, label="MC std of p1", shrink=0.8, ticks=MaxNLocator(4))
    return fig
