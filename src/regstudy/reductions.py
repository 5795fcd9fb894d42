"""Exact reductions of the per-epoch statistics, in one pass over memory (C, in
``_products.c``).

Each is a comparison or a count, which rounds nothing, so it gives the numbers torch's
own calls give (``amax``/``amin``; sums of 0/1 comparisons), in whatever order it
reads. torch took a pass per statistic, and ``amax``/``amin`` over the rows of an
evaluation's ``(K, n, units)`` activations ran at about 2 GB/s.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .products import _check, _products


def column_extrema(h: Tensor) -> tuple[Tensor, Tensor]:
    """``(h.amax(1), h.amin(1))`` of ``h`` ``(K, n, units)``, ``n >= 1``: each member's
    largest and smallest value of each unit over the rows, NaN where a row is NaN (as
    ``amax``; a zero's sign may differ, its value not). ``h`` may be a slice of rows; its
    units must be contiguous."""
    _check("h", h, 3)
    k, n, units = h.shape
    if h.stride(2) != 1:
        h = h.contiguous()
    hi, lo = torch.empty(k, units), torch.empty(k, units)
    _products.extrema(k, n, units, h.data_ptr(), h.stride(0), h.stride(1), hi.data_ptr(), lo.data_ptr())
    return hi, lo


def kernel_counts(w: Tensor, small: float) -> Tensor:
    """Per member of a stacked kernel ``w`` ``(K, fan_in, fan_out)``, an int64 ``(K, 3)``:
    entries with ``|w| < small`` (``small`` as float32, as torch compares), entries equal
    to 0, and columns (a unit's incoming weights) that are all 0."""
    _check("w", w, 3)
    w = w.detach()
    if not w[0].is_contiguous():
        w = w.contiguous()
    k, fan_in, fan_out = w.shape
    out = torch.empty(k, 3, dtype=torch.int64)
    _products.kernel_counts(k, fan_in, fan_out, w.data_ptr(), w.stride(0), float(small), out.data_ptr())
    return out
