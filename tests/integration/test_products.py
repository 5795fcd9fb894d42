"""The stacked layers' products (regstudy.products): their arithmetic, checked by hand, and
the same bits from the AVX2 kernel and the one-element-at-a-time loop."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from regstudy import products
from regstudy.data import load_npz
from regstudy.job import build_module, load_tensors, member_grid
from regstudy.stages.train import compose_job

from conftest import needs_exact  # noqa: E402

pytestmark = needs_exact  # the exact path's own kernels and their bits

PATHS = ["loop"] + (["avx2"] if products.path() == "avx2" else [])


@pytest.fixture
def on_path():
    """``on_path(name)`` computes products with that path for the rest of the test."""
    before = products.path()
    yield products.set_path
    products.set_path(before)


def t(rows) -> torch.Tensor:
    """One member's matrix ``(1, rows, cols)`` from nested lists."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(0)


@pytest.mark.parametrize("name", PATHS)
def test_each_term_is_a_fused_multiply_add_rounded_once(on_path, name):
    on_path(name)
    a = 1 + 2.0**-12
    # a * a = 1 + 2^-11 + 2^-24 exactly. Rounded to float32 first (a tie, to even), it is
    # 1 + 2^-11, and adding the bias -(1 + 2^-11) gives 0; fused, the 2^-24 survives.
    out = products.product(t([[a]]), t([[a]]), torch.tensor([[-(1 + 2.0**-11)]]))
    assert out.item() == 2.0**-24
    assert (t([[a]]) * t([[a]]) + torch.tensor(-(1 + 2.0**-11))).item() == 0.0  # unfused


@pytest.mark.parametrize("name", PATHS)
def test_terms_are_summed_from_the_bias_in_ascending_order(on_path, name):
    on_path(name)
    big = 2.0**24  # float32's integers are exact up to here; big + 1 rounds back to big
    ones = t([[1.0, 1.0, 1.0]])
    # acc = 0 -> big -> big + 1 = big (rounded) -> big - big = 0; in float64 the sum is 1
    assert products.product(ones, t([[big], [1.0], [-big]])).item() == 0.0
    assert products.product(ones, t([[-big], [1.0], [big]])).item() == 1.0  # -big + 1 is exact
    # the bias starts the chain: big, then + 1 (lost), then - big
    assert products.product(t([[1.0, 1.0]]), t([[1.0], [-big]]), torch.tensor([[big]])).item() == 0.0
    assert (t([[1.0, 1.0]]) @ t([[1.0], [-big]]) + big).item() == 1.0  # product, then bias


def test_the_avx2_kernel_gives_the_loops_bits_at_every_tile_edge(on_path):
    if "avx2" not in PATHS:
        pytest.skip("this CPU has no AVX2 and FMA")
    g = torch.Generator().manual_seed(0)
    shapes = [(k, m, p, n) for k, m, p, n in
              [(1, 1, 1, 1), (2, 5, 3, 7), (3, 6, 64, 16), (2, 7, 9, 8), (2, 13, 31, 17), (1, 12, 2, 15),
               (4, 32, 64, 64), (2, 33, 200, 10), (3, 64, 55, 1), (2, 19, 0, 9), (2, 1437, 64, 33)]]
    for k, m, p, n in shapes:
        left, right = torch.randn(k, m, p, generator=g), torch.randn(k, p, n, generator=g)
        bias = torch.randn(k, n, generator=g)
        # transposed views, read in place, as the backward pass passes them
        left_t = left.transpose(1, 2).contiguous().transpose(1, 2)
        right_t = right.transpose(1, 2).contiguous().transpose(1, 2)
        results = {}
        for name in PATHS:
            on_path(name)
            results[name] = [products.product(left, right, bias), products.product(left, right),
                             products.product(left_t, right_t, bias)]
        for a, b in zip(results["avx2"], results["loop"]):
            assert torch.equal(a, b), (k, m, p, n)
        assert torch.equal(results["avx2"][0], results["avx2"][2])
        exact = left.double() @ right.double() + bias.double().unsqueeze(1)
        assert torch.allclose(results["avx2"][0].double(), exact, rtol=1e-5, atol=1e-5 * max(p, 1))


@pytest.mark.parametrize("name", PATHS)
def test_an_empty_inner_dimension_gives_the_bias_exactly(on_path, name):
    on_path(name)
    g = torch.Generator().manual_seed(0)
    k, m, n = 2, 19, 9
    left, right, bias = torch.randn(k, m, 0, generator=g), torch.randn(k, 0, n, generator=g), torch.randn(k, n, generator=g)
    assert torch.equal(products.product(left, right, bias), bias.unsqueeze(1).expand(k, m, n))


def test_a_members_product_depends_on_its_own_slices_only():
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(5, 32, 64, generator=g), torch.randn(5, 64, 64, generator=g), torch.randn(5, 64, generator=g)
    stacked = products.product(x, w, b)
    for k in range(5):
        assert torch.equal(stacked[k], products.product(x[k:k + 1], w[k:k + 1], b[k:k + 1])[0])


def test_affine_gradients_are_the_products_of_the_backward_pass():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 10, 7, generator=g, requires_grad=True)
    w = torch.randn(3, 7, 5, generator=g, requires_grad=True)
    b = torch.randn(3, 5, generator=g, requires_grad=True)
    up = torch.randn(3, 10, 5, generator=g)
    (products.affine(x, w, b) * up).sum().backward()
    with torch.no_grad():
        assert torch.equal(x.grad, products.product(up, w.transpose(1, 2)))
        assert torch.equal(w.grad, products.product(x.transpose(1, 2), up))
        assert torch.equal(b.grad, up.sum(1))
    # and they are the gradients: against float64 autograd of the same layer
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ((torch.baddbmm(b64.unsqueeze(1), x64, w64)) * up.double()).sum().backward()
    for ours, exact in ((x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        assert torch.allclose(ours.double(), exact, rtol=1e-5, atol=1e-5)


def test_affine_without_bias_and_without_grad():
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(2, 4, 3, generator=g), torch.randn(2, 3, 6, generator=g, requires_grad=True)
    out = products.affine(x, w)
    out.sum().backward()
    assert x.grad is None and w.grad.shape == w.shape
    with torch.no_grad():
        assert not products.affine(x, w).requires_grad
        assert torch.equal(products.affine(x, w), out)


def test_bad_input_is_refused_with_what_is_allowed():
    x, w = torch.ones(2, 3, 4), torch.ones(2, 4, 5)
    with pytest.raises(TypeError, match="left: a 3-d float32 CPU tensor is needed, not a 3-d torch.float64"):
        products.product(x.double(), w)
    with pytest.raises(ValueError, match=r"right: shape \(2, 3, 5\) does not continue left's \(2, 3, 4\)"):
        products.product(x, torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match=r"bias: shape \(2, 4\), expected \(2, 5\)"):
        products.product(x, w, torch.ones(2, 4))
    with pytest.raises(ValueError, match="path 'sse': allowed 'loop' or 'avx2'"):
        products.set_path("sse")


def test_a_train_job_ends_on_the_same_bits_on_either_path(on_path, signal_npz):
    """What makes the study's numbers the same on any CPU: a whole job (forward, backward,
    evaluation) computed by the vector kernel or by the plain loop ends on the same bits."""
    if "avx2" not in PATHS:
        pytest.skip("this CPU has no AVX2 and FMA")
    states = {}
    for name in PATHS:
        on_path(name)
        cfg = compose_job(["experiment=dropout", f"data.path={signal_npz}", "members.strengths=[0.0,0.3]",
                           "members.seeds=[0,1]", "logger.enabled=false", "trainer.max_epochs=4"])
        members = member_grid(cfg)
        module = build_module(cfg, load_tensors(load_npz(signal_npz), [m["seed"] for m in members]), members)
        instantiate(cfg.trainer).fit(module)
        states[name] = (module.net.state_dict(), module.history[-1]["val_loss"])
    (avx2, val_avx2), (loop, val_loop) = states["avx2"], states["loop"]
    assert torch.equal(val_avx2, val_loop)
    for name in avx2:
        assert torch.equal(avx2[name], loop[name]), name


def test_a_train_job_calls_no_mkl_product(signal_npz):
    """The README's claim: the study's arithmetic does not depend on MKL's branch, because a
    train job never calls it (MKL_VERBOSE=1 prints every MKL call; torch's own bmm, the
    control, does call it)."""
    import os
    import subprocess
    import sys

    job = ("from hydra.utils import instantiate; from regstudy.data import load_npz; "
           "from regstudy.job import build_module, load_tensors, member_grid; "
           "from regstudy.stages.train import compose_job; "
           f"cfg = compose_job(['experiment=dropout', 'data.path={signal_npz}', 'members.strengths=[0.0,0.3]', "
           "'members.seeds=[0]', 'logger.enabled=false', 'trainer.max_epochs=2']); "
           "members = member_grid(cfg); "
           "m = build_module(cfg, load_tensors(load_npz(cfg.data.path), [0] * len(members)), members); "
           "instantiate(cfg.trainer).fit(m); m.evaluate(('train', 'val', 'test'))")

    def mkl_calls(code: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", f"import regstudy, torch; {code}"], capture_output=True, text=True,
                             env={**os.environ, "MKL_VERBOSE": "1"}, check=True).stdout
        return [line for line in out.splitlines() if line.startswith("MKL_VERBOSE") and "(" in line]

    if not any("SGEMM" in line for line in mkl_calls("x = torch.randn(4, 64, 64); torch.bmm(x, x)")):
        pytest.skip("torch here has no MKL to call")
    assert mkl_calls(job) == []


SLOPES = [0.01, 0.0, 0.3]


@pytest.mark.parametrize("name", PATHS)
def test_the_fused_leaky_relu_is_torchs_to_the_bit(on_path, name):
    on_path(name)
    g = torch.Generator().manual_seed(4)
    for k, m, p, n in [(1, 1, 1, 1), (2, 7, 9, 8), (2, 13, 31, 17), (3, 64, 55, 1), (2, 37, 64, 64)]:
        left, right = torch.randn(k, m, p, generator=g), torch.randn(k, p, n, generator=g)
        bias = torch.randn(k, n, generator=g)
        # NaN, infinities, a zero of either sign, and values whose scaled copy underflows
        bias[0, : min(n, 5)] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, -1e-44])[: min(n, 5)]
        for slope in SLOPES + [-0.5]:
            fused = products.product(left, right, bias, negative_slope=slope)
            plain = torch.nn.functional.leaky_relu(products.product(left, right, bias), slope)
            assert torch.equal(fused.view(torch.int32), plain.view(torch.int32)), (k, m, p, n, slope)


@pytest.mark.parametrize("slope", SLOPES)
def test_the_fused_layers_gradients_are_torchs_to_the_bit(slope):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 10, 7, generator=g, requires_grad=True)
    w = torch.randn(3, 7, 5, generator=g, requires_grad=True)
    b = torch.randn(3, 5, generator=g, requires_grad=True)
    up = torch.randn(3, 10, 5, generator=g)
    grads = []
    for fused in (True, False):
        out = (products.affine(x, w, b, negative_slope=slope) if fused
               else torch.nn.functional.leaky_relu(products.affine(x, w, b), slope))
        (out * up).sum().backward()
        grads.append([out.detach(), *(t.grad.clone() for t in (x, w, b))])
        x.grad = w.grad = b.grad = None
    for a, c in zip(*grads):
        assert torch.equal(a, c)


def test_a_negative_slope_is_fused_only_without_autograd():
    x, w = torch.randn(2, 4, 3), torch.randn(2, 3, 6, requires_grad=True)
    with pytest.raises(ValueError, match=r"negative_slope=-0.2: the fused gradient needs a slope >= 0"):
        products.affine(x, w, negative_slope=-0.2)
    with torch.no_grad():
        assert torch.equal(products.affine(x, w, negative_slope=-0.2),
                           torch.nn.functional.leaky_relu(products.affine(x, w), -0.2))
