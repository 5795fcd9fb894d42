"""The exact path's matrix products (``compute=exact``), with the same bits on every CPU.

A layer of K members computes, for each member ``k``,

    out[k] = bias[k] + x[k] @ w[k]        x: (K, M, P), w: (K, P, N), bias: (K, N), out: (K, M, N)

optionally followed by the layer's leaky ReLU, ``out > 0 ? out : out * slope`` (torch's
formula, one rounding: the same bits as ``F.leaky_relu``, without a second pass over the
output), and its backward pass two more products (``dx = g @ w^T``, ``dw = x^T @ g``). All three
are computed by regstudy's own kernel (``_products.c``), which fixes the arithmetic of
every output element: start from the bias (or 0), then one fused multiply-add per term,
``acc = fma(x[i, p], w[p, j], acc)``, for ``p = 0, 1, ..., P - 1`` in that order. A
fused multiply-add rounds once (IEEE 754), so the result is defined by the inputs
alone: the AVX2 kernel and the plain loop (:func:`path`) give the same bits on any CPU.

MKL, which torch uses for ``bmm``, picks its kernels and their summation order by the CPU
it finds (see :mod:`regstudy.kernels`); pinned to its one cross-vendor branch
(``MKL_CBWR=COMPATIBLE``, SSE2 without FMA) it ran these products at 15-25 GFLOP/s,
against 75-95 for this kernel on the same AMD EPYC (``make bench``, the physical limit).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from . import _products
except ImportError:  # built only where the install found a C compiler: the torch path runs without it
    _products = None

__all__ = ["affine", "product", "path", "set_path"]


def path() -> str:
    """How products are computed here: ``"avx2"`` (AVX2 and FMA, 8 columns per
    instruction) or ``"loop"`` (one element at a time, for tests: the same bits), or
    ``"absent"`` where the C kernels are not built."""
    return _products.get_path() if _products is not None else "absent"


def set_path(name: str) -> None:
    """Compute products with ``"avx2"`` (where the CPU has AVX2 and FMA) or ``"loop"``."""
    _products.set_path(name)


def _check(name: str, t: Tensor, dim: int) -> None:
    if _products is None:
        raise RuntimeError("compute=exact: regstudy's C kernels (regstudy._products) are not built here; "
                           "use compute=torch (or auto)")
    if t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != dim:
        raise TypeError(f"{name}: a {dim}-d float32 CPU tensor is needed, not a {t.dim()}-d "
                        f"{t.dtype} tensor on {t.device}")


def product(left: Tensor, right: Tensor, bias: Tensor | None = None, negative_slope: float | None = None) -> Tensor:
    """``bias[k] + left[k] @ right[k]`` for every ``k``, as a new contiguous ``(K, M, N)``
    tensor: each element one chain of fused multiply-adds in ascending ``p``, then, with
    ``negative_slope``, ``F.leaky_relu(·, negative_slope)`` of it.

    ``left``: ``(K, M, P)`` and ``right``: ``(K, P, N)``, any strides (a transposed view is
    read as it is); ``bias``: ``(K, N)`` or None (zero). Float32 on the CPU. No autograd:
    :func:`affine` is the differentiable layer.
    """
    _check("left", left, 3)
    _check("right", right, 3)
    k, m, p = left.shape
    if tuple(right.shape[:2]) != (k, p):
        raise ValueError(f"right: shape {tuple(right.shape)} does not continue left's {tuple(left.shape)}")
    if bias is not None:
        _check("bias", bias, 2)
        if tuple(bias.shape) != (k, right.shape[2]):
            raise ValueError(f"bias: shape {tuple(bias.shape)}, expected {(k, right.shape[2])}")
    return _product(left, right, bias, negative_slope)


def _product(left: Tensor, right: Tensor, bias: Tensor | None, negative_slope: float | None = None) -> Tensor:
    """:func:`product` without its checks (the layer's own calls, a few per step)."""
    k, m, p = left.shape
    n = right.shape[2]
    out = torch.empty(k, m, n)
    if bias is not None and bias.stride(1) != 1:
        bias = bias.contiguous()
    ls, rs = left.stride(), right.stride()
    _products.products(k, m, n, p, left.data_ptr(), ls[0], ls[1], ls[2], right.data_ptr(), rs[0], rs[1], rs[2],
                       out.data_ptr(), m * n, n, 0 if bias is None else bias.data_ptr(),
                       0 if bias is None else bias.stride(0), negative_slope is not None,
                       0.0 if negative_slope is None else float(negative_slope))
    return out


class _Affine(torch.autograd.Function):
    """``bias + x @ w`` per member, optionally then leaky ReLU, with its gradients computed
    by the same kernel."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias: Tensor | None, negative_slope: float | None) -> Tensor:
        out = _product(x, w, bias, negative_slope)
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(x, w, out if negative_slope is not None else None)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w, out = ctx.saved_tensors
        need_x, need_w, need_bias, _ = ctx.needs_input_grad
        if ctx.negative_slope is not None:
            # torch's own leaky ReLU gradient, `a > 0 ? grad : grad * slope`, read from the
            # output: with a slope >= 0 the output is > 0 exactly where the input is.
            grad = torch.ops.aten.leaky_relu_backward(grad, out, ctx.negative_slope, False)
        grad_x = _product(grad, w.transpose(1, 2), None) if need_x else None
        grad_w = _product(x.transpose(1, 2), grad, None) if need_w else None
        grad_bias = grad.sum(1) if need_bias else None
        return grad_x, grad_w, grad_bias, None


def affine(x: Tensor, w: Tensor, bias: Tensor | None = None, negative_slope: float | None = None) -> Tensor:
    """A stacked linear layer: ``bias[k] + x[k] @ w[k]`` for every member ``k``, then,
    with ``negative_slope`` (``>= 0`` under autograd), leaky ReLU.

    ``x``: ``(K, M, P)``; ``w``: ``(K, P, N)``; ``bias``: ``(K, N)`` or None. Differentiable
    in all three; see :func:`product` for the arithmetic.
    """
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (bias is not None and bias.requires_grad)):
        if negative_slope is not None and negative_slope < 0:
            raise ValueError(f"negative_slope={negative_slope}: the fused gradient needs a slope >= 0")
        return _Affine.apply(x, w, bias, negative_slope)
    return product(x, w, bias, negative_slope)
