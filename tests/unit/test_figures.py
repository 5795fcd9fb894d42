"""The figures draw their curves without seaborn's plotting calls (a tenth of their cost):
the same curves as seaborn's kdeplot and lineplot, on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from regstudy_report import figures
from regstudy_report.density import kde_curve


def _axes():
    return Figure().subplots()


def _lines_of(ax):
    """Each line's data and look (a marker's size and edge where it has markers)."""
    return [(line.get_xdata().astype(float), line.get_ydata().astype(float), to_rgba(line.get_color()),
             line.get_linewidth(), line._unscaled_dash_pattern, line.sticky_edges.y, line.get_marker(),
             *((line.get_markersize(), to_rgba(line.get_markeredgecolor()), line.get_markeredgewidth())
               if line.get_marker() not in (None, "None", "") else ()))
            for line in ax.lines]


def _assert_same_lines(ours, seaborns):
    assert len(ours) == len(seaborns)
    for a, b in zip(ours, seaborns):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12)
        assert a[2:] == b[2:]


def test_kde_curve_is_seaborns():
    rng = np.random.default_rng(0)
    for values in (rng.normal(0, 0.3, 700), rng.uniform(-1, 1, 40), np.r_[rng.normal(0, 1, 50), np.nan]):
        ax = _axes()
        sns.kdeplot(x=values, ax=ax)
        support, density = kde_curve(values)
        np.testing.assert_array_equal(support, ax.lines[0].get_xdata())
        np.testing.assert_array_equal(density, ax.lines[0].get_ydata())
    assert kde_curve([1.0]) is None and kde_curve(np.full(9, 0.25)) is None


def test_density_lines_are_kdeplots():
    """Per hue level, in kdeplot's drawing order, with its labels and autoscaled limits."""
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"value": np.r_[rng.normal(0, 1, 300), rng.normal(1, 0.2, 300)],
                         "when": pd.Categorical(["init"] * 300 + ["final"] * 300, categories=["init", "final"])})
    palette = {"init": "0.55", "final": "tab:blue"}
    ours, theirs = _axes(), _axes()
    figures._kdes(ours, rows, "when", palette, {"init": "init", "final": "trained"}, 1.0)
    sns.kdeplot(rows, x="value", hue="when", palette=palette, common_norm=False, legend=False, lw=1.2, ax=theirs)
    _assert_same_lines(_lines_of(ours), _lines_of(theirs))
    assert ours.get_ylabel() == theirs.get_ylabel() == "Density"
    assert ours.get_ylim() == theirs.get_ylim() and ours.get_xlim() == theirs.get_xlim()


def _members():
    rng = np.random.default_rng(2)
    rows = [{"family": family, "strength": s, "seed": seed, "metric": rng.normal(s, 0.1)}
            for family in ("l1", "l1_prox") for s in (0.0, 0.01, 0.1) for seed in range(3)]
    frame = pd.DataFrame(rows)
    frame.loc[4, "metric"] = np.nan  # a diverged member's missing metric
    frame.loc[frame["strength"] == 0.1, "seed"] = 0  # one value at strength 0.1: no band there
    return frame[~((frame["strength"] == 0.1) & (frame.index % 3 != 0))]


def test_mean_sd_lines_are_seaborns():
    members = _members()
    palette = figures.family_palette(["l1", "l1_prox"])
    dashes = {"l1": "", "l1_prox": (4, 2)}
    ours, theirs = _axes(), _axes()
    figures._mean_sd_lines(ours, members, "strength", "metric", "family", ["l1", "l1_prox"], palette, dashes=dashes,
                           marker="o", markersize=4, lw=1.4)
    sns.lineplot(members, x="strength", y="metric", hue="family", hue_order=["l1", "l1_prox"], palette=palette,
                 style="family", dashes=dashes, errorbar="sd", marker="o", markersize=4, lw=1.4, legend=False,
                 ax=theirs)
    _assert_same_lines(_lines_of(ours), _lines_of(theirs))
    assert len(ours.collections) == len(theirs.collections)
    for a, b in zip(ours.collections, theirs.collections):
        np.testing.assert_allclose(a.get_paths()[0].vertices, b.get_paths()[0].vertices, rtol=1e-12)
        np.testing.assert_array_equal(a.get_facecolor(), b.get_facecolor())
        np.testing.assert_array_equal(a.get_edgecolor(), b.get_edgecolor())


def test_lines_are_seaborns_unaggregated_lineplot():
    rng = np.random.default_rng(3)
    means = pd.DataFrame({"strength": np.repeat([0.0, 0.1, 1.0], 5), "epoch": np.tile(np.arange(1, 6), 3)})
    means["loss"] = rng.uniform(0.1, 1, len(means))
    means.loc[[2, 7], "loss"] = [np.nan, np.inf]
    means = means.sample(frac=1, random_state=0)  # any order: drawn sorted by epoch
    palette = figures.strength_palette(means["strength"], "lam")
    ours, theirs = _axes(), _axes()
    figures._lines(ours, means, "epoch", "loss", "strength", palette, linestyle="--", lw=1.1)
    sns.lineplot(means, x="epoch", y="loss", hue="strength", palette=palette, estimator=None, linestyle="--",
                 lw=1.1, legend=False, ax=theirs)
    _assert_same_lines(_lines_of(ours), _lines_of(theirs))


def test_thin_keeps_every_nth_row_of_each_level():
    """Every ceil(n / cap)-th row of each level, from its first, in table order (as a groupby
    cumcount modulo the step would pick them)."""
    rng = np.random.default_rng(4)
    rows = pd.DataFrame({"when": pd.Categorical(rng.choice(["init", "final"], 2500), categories=["init", "final"]),
                         "strength": rng.choice([0.0, 0.1, 1.0], 2500), "value": rng.normal(size=2500)})
    for by in ("when", "strength"):
        step = np.ceil(rows.groupby(by, observed=True)[by].transform("size") / 300)
        expected = rows[rows.groupby(by, observed=True).cumcount() % step == 0]
        pd.testing.assert_frame_equal(figures._thin(rows, by, cap=300), expected)
    assert figures._thin(rows.iloc[:0], "when").empty


def _log_and_symlog_figure():
    with figures.matplotlib.rc_context(figures._RC):
        fig, axes = figures._panels(3, 3, (3.0, 2.3))
        x = np.arange(1, 40)
        axes[0, 0].plot(x, 0.3 + 1 / x)
        axes[0, 0].set(yscale="log", title="log y", xlabel="epoch", ylabel="loss")
        axes[0, 1].plot([0, 1e-4, 1e-3, 1e-2, 1e-1], [0.5, 0.52, 0.6, 0.7, 0.8], marker="o")
        figures._symlog_x(axes[0, 1], pd.Series([0, 1e-4, 1e-3, 1e-2, 1e-1]))
        image = axes[0, 2].imshow(np.arange(64.0).reshape(8, 8) * 1e-3, cmap="mako_r")
        fig.colorbar(image, ax=axes[0, 2])
    return fig


def _pixels(fig):
    canvas = figures.FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def test_frozen_ticks_draw_the_same_pixels():
    """Fixing the ticks with their labels, and leaving out those that draw nothing (outside
    the view, unlabelled minor ticks), changes no pixel: log, symlog and colorbar axes. (Both
    drawn once first, so that the locators see the panels' final size.)"""
    free, frozen = _log_and_symlog_figure(), _log_and_symlog_figure()
    _pixels(free), _pixels(frozen)
    figures._freeze_ticks(frozen)
    np.testing.assert_array_equal(_pixels(frozen), _pixels(free))


def test_png_holds_the_drawn_pixels():
    """The data URI's PNG, without an alpha channel, is the canvas's opaque pixels."""
    import base64
    import io

    import PIL.Image

    fig = _log_and_symlog_figure()
    uri = figures.to_data_uri(fig)
    drawn = np.asarray(fig.canvas.buffer_rgba())  # what that draw rendered
    png = PIL.Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert png.mode == "RGB" and (drawn[..., 3] == 255).all()
    np.testing.assert_array_equal(np.asarray(png), drawn[..., :3])
