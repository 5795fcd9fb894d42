"""The benchmark suite's own arithmetic (its timings are measured, never asserted)."""

from benchmarks.limits import flops_per_step


def test_flops_per_step_of_the_reference_network():
    # 1 -> 64 -> 64 -> 64 -> 1: multiply-adds per example 64 + 4096 + 4096 + 64 = 8320;
    # forward 2 FLOPs each, backward twice that, batch 32.
    assert flops_per_step() == 6 * 32 * 8320
    assert flops_per_step(batch=1, d_in=2, d_out=3) == 6 * (2 * 64 + 64 * 64 * 2 + 64 * 3)
