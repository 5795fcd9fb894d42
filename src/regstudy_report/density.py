"""Kernel density curves of the report's parameter figure, computed as seaborn's kdeplot
computes them (and drawn by :mod:`regstudy_report.figures` with a plain line): seaborn's
own call cost ten times the estimate, in bookkeeping around one curve."""

from __future__ import annotations

import math

import numpy as np
import scipy.stats

GRID_POINTS = 200  # seaborn's gridsize
CUT = 3  # the grid extends this many bandwidths past the extreme values (seaborn's cut)


def kde_curve(values) -> tuple[np.ndarray, np.ndarray] | None:
    """(support, density) of a Gaussian kernel density estimate of the finite `values`,
    with Scott's bandwidth, on a grid of 200 points from 3 bandwidths below the smallest
    value to 3 above the largest; the density has unit area. None for fewer than two
    values or zero variance, where kdeplot draws nothing."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2 or math.isclose(np.nan_to_num(x.var(ddof=1)), 0):
        return None
    try:
        kde = scipy.stats.gaussian_kde(x, bw_method="scott")
    except np.linalg.LinAlgError:  # a numerically singular spread: seaborn skips it too
        return None
    bandwidth = np.sqrt(kde.covariance.squeeze())
    support = np.linspace(x.min() - bandwidth * CUT, x.max() + bandwidth * CUT, GRID_POINTS)
    return support, kde(support)
