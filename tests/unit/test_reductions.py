"""The exact reductions of the per-epoch statistics (regstudy.reductions), against torch's
own calls and counts made by hand, on both paths of the C extension."""

from __future__ import annotations

import math

import pytest
import torch

from regstudy import products
from regstudy.reductions import column_extrema, kernel_counts

from conftest import needs_exact  # noqa: E402

pytestmark = needs_exact  # the exact path's own kernels and their bits

PATHS = ["loop"] + (["avx2"] if products.path() == "avx2" else [])
NAN, INF = float("nan"), float("inf")


@pytest.fixture(params=PATHS)
def path(request):
    before = products.path()
    products.set_path(request.param)
    yield request.param
    products.set_path(before)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where NaN (a zero's sign aside)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


def test_extrema_by_hand(path):
    h = torch.tensor([[[1.0, -2.0, NAN], [3.0, -INF, 0.5], [-1.0, 4.0, 0.25]]])  # 1 member, 3 rows, 3 units
    hi, lo = column_extrema(h)
    assert same(hi, torch.tensor([[3.0, 4.0, NAN]])) and same(lo, torch.tensor([[-1.0, -INF, NAN]]))
    hi, lo = column_extrema(h[:, 1:])  # a slice of rows, as evaluation passes the training rows
    assert hi.tolist() == [[3.0, 4.0, 0.5]] and lo.tolist() == [[-1.0, -INF, 0.25]]


def test_extrema_are_amax_and_amin(path):
    g = torch.Generator().manual_seed(0)
    for k, n, units in [(1, 1, 1), (3, 2, 7), (2, 300, 8), (5, 129, 75), (2, 40, 64), (3, 17, 33)]:
        h = torch.randn(k, n + 3, units, generator=g)
        h[0, n // 2, 0] = NAN  # a NaN mid-column, and one in the first row
        h[-1, 0, -1] = NAN
        h[0, :, units // 2] = INF
        for rows in (h, h[:, :n]):
            hi, lo = column_extrema(rows)
            assert same(hi, rows.amax(1)) and same(lo, rows.amin(1)), (k, n, units)


def test_kernel_counts_by_hand(path):
    w = torch.tensor([[[0.0, 1e-4, -0.0], [0.0, 2.0, NAN]]])  # 1 member, 2 inputs, 3 units
    # |w| < 1e-3: 0, 1e-4, -0, 0 (NaN is not); equal to 0: 0, -0, 0; all-zero columns: the first
    assert kernel_counts(w, 1e-3).tolist() == [[4, 3, 1]]


def test_kernel_counts_are_torchs_sums(path):
    g = torch.Generator().manual_seed(1)
    for k, fan_in, fan_out in [(2, 1, 1), (3, 64, 64), (2, 200, 64), (4, 64, 10), (2, 13, 21)]:
        w = torch.randn(k, fan_in, fan_out, generator=g) * 1e-3
        w[0, :, 0] = 0.0
        w[-1, :, -1] = -0.0
        w[0, 0, -1] = NAN
        a = w.abs()
        expected = torch.stack([(a < 1e-3).flatten(1).sum(1), (a == 0).flatten(1).sum(1), (a.amax(1) == 0).sum(1)], 1)
        assert torch.equal(kernel_counts(w, 1e-3), expected), (k, fan_in, fan_out)
        assert torch.equal(kernel_counts(w.transpose(1, 2).contiguous().transpose(1, 2), 1e-3), expected)


def test_the_threshold_is_compared_as_float32():
    w = torch.full((1, 1, 1), 1e-3)
    above = math.nextafter(w.item(), 1.0)  # a double just above the weight, the same float32
    assert w.item() < above and not w.abs().lt(above).item()  # torch compares in float32
    assert kernel_counts(w, above).tolist() == [[0, 0, 0]]


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="h: a 3-d float32 CPU tensor is needed, not a 2-d"):
        column_extrema(torch.ones(2, 3))
    with pytest.raises(ValueError, match="extrema.. needs at least one row"):
        column_extrema(torch.ones(2, 0, 3))
    with pytest.raises(TypeError, match="w: a 3-d float32 CPU tensor is needed, not a 3-d torch.float64"):
        kernel_counts(torch.ones(2, 3, 4, dtype=torch.float64), 1e-3)
