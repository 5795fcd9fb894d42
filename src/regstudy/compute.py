"""Where and how a job computes: its device, and the operations of its compute path.

Two paths behind one interface (:class:`TorchOps`, :class:`ExactOps`), chosen by the
``compute`` setting (:func:`regstudy.kernels.resolve_compute`):

- ``torch``: torch's own batched operations, ``out[k] = bias[k] + x[k] @ w[k]`` as one
  ``baddbmm``, reductions as ``amax``/``amin`` and comparisons; runs on any CPU, on CUDA
  and on Apple's MPS, with torch's native (unpinned) kernels. Its last bits depend on the
  CPU or GPU (and on the stack's size), as torch's do.
- ``exact``: regstudy's C kernels (:mod:`regstudy.products`, :mod:`regstudy.reductions`),
  x86 with AVX2 and FMA: each output element one chain of fused multiply-adds in a fixed
  order, the same bits for a member in any stack, on any such CPU.

The device comes from ``trainer.accelerator`` (:func:`resolve_accelerator`): ``cpu``,
``gpu`` (CUDA, else MPS; an error before training where neither is found) or ``auto``.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor
from torch.nn import functional as F

from .errors import ConfigError
from .kernels import ACCELERATORS, resolve_compute


def gpu_device() -> str | None:
    """``"cuda"`` or ``"mps"`` where torch can use one here, else None. The check does not
    initialise CUDA (NVML's count), so the process may still fork safely."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else None


def resolve_accelerator(accelerator: str) -> str:
    """The device type a job trains on (``cpu``, ``cuda`` or ``mps``) for
    ``trainer.accelerator``: ``cpu``; ``gpu`` (a ConfigError where there is none); ``auto``
    (a GPU where there is one, else the CPU)."""
    if accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", accelerator, f"one of {ACCELERATORS}")
    if accelerator == "cpu":
        return "cpu"
    device = gpu_device()
    if device is None and accelerator == "gpu":
        raise ConfigError("trainer.accelerator", accelerator,
                          "cpu or auto: torch finds no CUDA or MPS device here "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})")
    return device or "cpu"


def kernel_rms(w: Tensor) -> Tensor:
    """Per member of a stacked kernel ``w`` ``(K, fan_in, fan_out)``, its root mean square
    ``rms(W) = sqrt(mean w^2) = ||W|| / sqrt(fan_in * fan_out)``, ``(K,)``, in the units
    of the weights; 1 for a kernel of zeros (so that dividing by it leaves zeros)."""
    rms = torch.linalg.vector_norm(w.detach().flatten(1), dim=1) / math.sqrt(w[0].numel())
    return torch.where(rms == 0, 1.0, rms)


def per_rms(w: Tensor) -> Tensor:
    """``w / rms(W)`` per member of a stacked kernel ``w`` ``(K, fan_in, fan_out)``, a new
    tensor (:func:`kernel_rms`; a kernel of zeros stays zeros)."""
    return w.detach() / kernel_rms(w).view(-1, 1, 1)


class TorchOps:
    """The torch path: torch's own operations, on any device."""

    name = "torch"

    @staticmethod
    def affine(x: Tensor, w: Tensor, bias: Tensor | None = None, negative_slope: float | None = None) -> Tensor:
        """``bias[k] + x[k] @ w[k]`` per member (``x`` ``(K, M, P)``, ``w`` ``(K, P, N)``,
        ``bias`` ``(K, N)`` or None), then leaky ReLU with ``negative_slope``."""
        out = torch.bmm(x, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w)
        # in place: the product's backward does not read its output, the activation's
        # reads only the sign, which a slope >= 0 keeps (one pass over memory less)
        return out if negative_slope is None else F.leaky_relu_(out, negative_slope)

    @staticmethod
    def column_extrema(h: Tensor) -> tuple[Tensor, Tensor]:
        """``(h.amax(1), h.amin(1))`` of ``h`` ``(K, n, units)``."""
        return h.amax(1), h.amin(1)

    @staticmethod
    def kernel_counts(w: Tensor, small: float) -> Tensor:
        """Per member of ``w`` ``(K, fan_in, fan_out)``, an int64 ``(K, 3)``: entries with
        ``|w| < small``, entries equal to 0, and columns that are all 0."""
        magnitude = w.detach().abs().view(len(w), -1)
        return TorchOps._counts(magnitude, w, torch.full((len(w), 1), float(small), device=w.device))

    @staticmethod
    def zero_counts(w: Tensor, threshold: float) -> Tensor:
        """:meth:`kernel_counts` with the first count relative to each member's
        :func:`kernel_rms`: entries with ``|w| < threshold * rms(W)`` (on this path the
        bound is multiplied out, not ``w`` divided by it: one pass over memory less; the
        two differ only where ``|w| / rms(W)`` rounds onto the threshold)."""
        magnitude = w.detach().abs().view(len(w), -1)
        return TorchOps._counts(magnitude, w, (threshold * kernel_rms(w)).unsqueeze(1))

    @staticmethod
    def _counts(magnitude: Tensor, w: Tensor, bound: Tensor) -> Tensor:
        """The three counts of :meth:`kernel_counts` from ``magnitude = |w|`` ``(K, size)``
        (overwritten) and a per-member ``bound`` ``(K, 1)``."""
        columns = magnitude.view_as(w).amax(1)  # a column is all 0 where its largest |w| is 0 (NaN: not)
        removed = (columns == 0).sum(1, dtype=torch.int32)
        if bool((magnitude.amin(1) > 0).all()):  # no member has a 0 (NaN: not > 0): no pass that writes
            zeros = torch.zeros(len(w), dtype=torch.int32, device=w.device)
        else:
            zeros = (magnitude == 0).sum(1, dtype=torch.int32)
        # compared in place (1.0 or 0.0) and summed as floats, exact below 2^24 entries:
        # a third faster than a new boolean tensor and an integer sum
        below = magnitude.lt_(bound).sum(1).int()
        return torch.stack([below, zeros, removed], 1).long()


class ExactOps:
    """The exact path: regstudy's C kernels (CPU float32 tensors only)."""

    name = "exact"

    @staticmethod
    def affine(x: Tensor, w: Tensor, bias: Tensor | None = None, negative_slope: float | None = None) -> Tensor:
        from .products import affine
        return affine(x, w, bias, negative_slope)

    @staticmethod
    def column_extrema(h: Tensor) -> tuple[Tensor, Tensor]:
        from .reductions import column_extrema
        return column_extrema(h)

    @staticmethod
    def kernel_counts(w: Tensor, small: float) -> Tensor:
        from .reductions import kernel_counts
        return kernel_counts(w, small)

    @staticmethod
    def zero_counts(w: Tensor, threshold: float) -> Tensor:
        """:meth:`TorchOps.zero_counts`, with ``w / rms(W)`` counted against ``threshold``
        (float32: the same bits on any such CPU)."""
        from .reductions import kernel_counts
        near = kernel_counts(per_rms(w), threshold)[:, :1]
        return torch.cat([near, kernel_counts(w, 0.0)[:, 1:]], 1)


PATHS = {"torch": TorchOps, "exact": ExactOps}


def ops_for(compute: str = "auto", device: str = "cpu") -> type[TorchOps] | type[ExactOps]:
    """The operations of ``compute`` (``auto``, ``torch``, ``exact``) on ``device``."""
    return PATHS[resolve_compute(compute, device)]
