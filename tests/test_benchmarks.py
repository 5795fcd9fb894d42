"""The benchmark suite's own arithmetic (its timings are measured, never asserted)."""

from benchmarks.ensemble import batches, members, stacked_from, train_stacked, train_vmap
from benchmarks.limits import flops_per_step


def test_flops_per_step_of_the_reference_network():
    # 1 -> 64 -> 64 -> 64 -> 1: multiply-adds per example 64 + 4096 + 4096 + 64 = 8320;
    # forward 2 FLOPs each, backward twice that, batch 32.
    assert flops_per_step() == 6 * 32 * 8320
    assert flops_per_step(batch=1, d_in=2, d_out=3) == 6 * (2 * 64 + 64 * 64 * 2 + 64 * 3)


def test_the_stacked_net_and_the_torch_func_ensemble_train_the_same_members():
    """The two sides of the ensemble benchmark compute the same thing: same initial
    weights and batches give the same per-member losses, step after step."""
    xs, ys = batches(4, 40)
    stacked = train_stacked(stacked_from(members(4)), xs, ys)
    vmapped = train_vmap(members(4), xs, ys)
    assert stacked.shape == (40, 4)
    assert float(stacked[-1].mean()) < float(stacked[0].mean())  # it trains
    assert float((stacked - vmapped).abs().max()) < 1e-5
