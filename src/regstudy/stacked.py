"""A stack of K independent MLPs that train as one model.

Every parameter carries a leading member axis ``K``; a layer's forward pass is one
batched matrix product over all members, computed by the stack's compute path
(:mod:`regstudy.compute`: torch's ``baddbmm``, or the exact path's C kernels). Members share no
parameter, statistic or random number: member ``k``'s output depends only on its own
slice of every tensor, so member ``k`` of a stack trains exactly as the same member
would alone.

Layer order: ``Linear -> normalization (optional) -> activation -> dropout`` for each
hidden layer, then ``Linear -> output activation``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .compute import ExactOps, TorchOps, ops_for
from .kernels import VECTOR_FLOATS

BN_MOMENTUM = 0.1  # PyTorch's BatchNorm1d default
NORM_EPS = 1e-5


def _identity(h: Tensor) -> Tensor:
    return h


# name -> (the activation making a new tensor, the same kernel writing over its input)
_ACTIVATIONS = {
    "identity": (_identity, _identity),
    "relu": (F.relu, torch.relu_),
    "tanh": (torch.tanh, torch.tanh_),
    "sigmoid": (torch.sigmoid, torch.sigmoid_),
    "gelu": (F.gelu, F.gelu),  # no in-place GELU: a new tensor either way
    "elu": (F.elu, F.elu_),
}


def activation_fn(name: str, negative_slope: float = 0.01, inplace: bool = False):
    """The elementwise activation called ``name`` (see ``config.ACTIVATIONS``); with
    ``inplace``, the same kernel writing over its input."""
    if name == "leaky_relu":
        leaky = F.leaky_relu_ if inplace else F.leaky_relu
        return lambda h: leaky(h, negative_slope)
    return _ACTIVATIONS[name][inplace]


def inverted_dropout(h: Tensor, u: Tensor, p: Tensor) -> Tensor:
    """Inverted dropout with member-wise rate ``p`` (shape ``(K,)``).

    A unit is kept where its uniform draw ``u >= p`` (probability ``1 - p``) and scaled
    by ``1 / (1 - p)``, so ``E[output] = h``. At ``p = 1`` every unit is dropped and the
    output is exactly zero (the scale is defined as 0 there instead of ``1/0``).
    """
    p = p.view(-1, *([1] * (h.dim() - 1)))
    scale = torch.where(p < 1, 1.0 / (1.0 - p).clamp_min(1e-12), torch.zeros_like(p))
    # h * (keep * scale), keep = 1.0 or 0.0: the bits of (h * keep) * scale, since a
    # product with 1 or 0 is exact, forward and backward. The in-place comparison keeps
    # float and ATen's vectorized loop; a bool mask took 3x as long with its casts.
    return h * u.clone().ge_(p).mul_(scale)


class StackedMLP(nn.Module):
    """K MLPs ``d_in -> hidden... -> d_out`` with kernels of shape ``(K, fan_in, fan_out)``.

    ``ops``: the compute path (:mod:`regstudy.compute`); by default ``compute=auto`` on the CPU.
    """

    def __init__(self, n_members: int, d_in: int, hidden: list[int], d_out: int,
                 activation: str = "leaky_relu", negative_slope: float = 0.01,
                 output_activation: str = "identity", norm: str = "none",
                 ops: type[TorchOps] | type[ExactOps] | None = None):
        super().__init__()
        self.n_members, self.norm = n_members, norm
        self.ops = ops or ops_for("auto", "cpu")
        sizes = [d_in, *hidden, d_out]
        self.kernels = nn.ParameterList(
            nn.Parameter(torch.empty(n_members, a, b)) for a, b in zip(sizes[:-1], sizes[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(n_members, b)) for b in sizes[1:])
        self.act = activation_fn(activation, negative_slope)
        self.out_act = activation_fn(output_activation, negative_slope)
        # Without autograd (evaluation), in place: the same values, and at evaluation's
        # sizes (K x all examples x units) one pass over memory less (up to 30% faster).
        self.act_ = activation_fn(activation, negative_slope, inplace=True)
        self.out_act_ = activation_fn(output_activation, negative_slope, inplace=True)
        # A leaky ReLU right after the product is computed with it (the same bits, one pass
        # over memory less): by the product's own kernel on the exact path
        # (regstudy.products), in place on the torch path (regstudy.compute).
        fused = activation == "leaky_relu" and norm == "none" and negative_slope >= 0
        self.fused_slope = float(negative_slope) if fused else None
        self.hidden = list(hidden)
        # Batch norm subtracts the batch mean, so a bias before it has no effect and no
        # gradient but rounding noise, which Adam would amplify into a random walk:
        # those biases are fixed at zero (batch norm's own shift plays their part).
        self.bias_free = [norm == "batch"] * len(hidden) + [False]
        for b, free in zip(self.biases, self.bias_free):
            b.requires_grad_(not free)
        if norm != "none":
            self.norm_weight = nn.ParameterList(nn.Parameter(torch.ones(n_members, h)) for h in hidden)
            self.norm_bias = nn.ParameterList(nn.Parameter(torch.zeros(n_members, h)) for h in hidden)
        if norm == "batch":
            for i, h in enumerate(hidden):
                self.register_buffer(f"running_mean_{i}", torch.zeros(n_members, h))
                self.register_buffer(f"running_var_{i}", torch.ones(n_members, h))

    @property
    def n_layers(self) -> int:
        return len(self.kernels)

    @property
    def n_dropout_units(self) -> int:
        """Uniform draws one example needs for the dropout masks of all hidden layers."""
        return sum(self.hidden)

    def reset_parameters(self, generators: list[torch.Generator], scheme: str, scale: float,
                         bias: str, perturb_ulps: int = 0) -> None:
        """Draw each member's parameters from its own generator, layer by layer.

        ``uniform``: U(-scale, scale); ``normal``: N(0, scale^2); ``xavier_uniform``:
        U(-b, b) with ``b = sqrt(6 / (fan_in + fan_out))``; ``kaiming_uniform``:
        ``b = sqrt(6 / fan_in)``. Biases follow the kernels' law (``same``) or are zero;
        biases before batch norm are always zero. Then every kernel and bias entry moves
        ``perturb_ulps`` units in the last place up (:meth:`perturb_`; 0: the draw's bits).
        """
        with torch.no_grad():
            for k, g in enumerate(generators):
                for w, b, free in zip(self.kernels, self.biases, self.bias_free):
                    fan_in, fan_out = w.shape[1:]
                    for t in (w[k], b[k]) if bias == "same" else (w[k],):
                        if scheme == "normal":
                            nn.init.normal_(t, 0.0, scale, generator=g)
                        else:
                            bound = {"uniform": scale,
                                     "xavier_uniform": math.sqrt(6.0 / (fan_in + fan_out)),
                                     "kaiming_uniform": math.sqrt(6.0 / fan_in)}[scheme]
                            nn.init.uniform_(t, -bound, bound, generator=g)
                    if bias == "zeros" or free:  # drawn anyway: same kernels with or without norm
                        b[k].zero_()
        self.perturb_(perturb_ulps)

    @torch.no_grad()
    def perturb_(self, ulps: int) -> None:
        """Move every kernel and bias entry of every member ``ulps`` units in the last place
        up (``torch.nextafter`` towards +inf, ``ulps`` times): a change far below any
        regularizer's, to check that results do not hang on rounding. The biases before
        batch norm stay 0 (fixed: they have no effect but noise, see ``bias_free``)."""
        up = torch.tensor(math.inf)
        for t in [*self.kernels, *(b for b, free in zip(self.biases, self.bias_free) if not free)]:
            for _ in range(ulps):
                torch.nextafter(t, up, out=t)

    def _normalize(self, h: Tensor, i: int) -> Tensor:
        """Batch norm (statistics over each member's batch) or layer norm (over units).

        Batch norm runs PyTorch's own kernel with one channel per (member, unit): the
        ``(K, B, H)`` activations are viewed as a batch of B examples of ``K*H``
        channels, so each member keeps its own statistics and running averages.
        """
        gamma, beta = self.norm_weight[i], self.norm_bias[i]
        if self.norm == "layer":
            h = F.layer_norm(h, h.shape[-1:], eps=NORM_EPS)
            return h * gamma.unsqueeze(1) + beta.unsqueeze(1)
        k, b, units = h.shape
        if self.training and b == 1:  # no batch statistics from one example: h - mean = 0
            return beta.unsqueeze(1).repeat(1, b, 1)  # a copy: the activation may write over it
        mean, var = getattr(self, f"running_mean_{i}"), getattr(self, f"running_var_{i}")
        # The kernel runs along the channels in vectors, and rounds a last partial vector
        # otherwise: a width that is not whole vectors is padded with channels of its own
        # (zeros, never read back), so that a member is computed the same in any stack.
        pad = -units % VECTOR_FLOATS
        if pad:
            h, gamma, beta = F.pad(h, (0, pad)), F.pad(gamma, (0, pad), value=1.0), F.pad(beta, (0, pad))
            padded_mean, padded_var = F.pad(mean, (0, pad)), F.pad(var, (0, pad), value=1.0)
        else:
            padded_mean, padded_var = mean, var
        width = units + pad
        flat = h.transpose(0, 1).reshape(b, k * width)
        out = F.batch_norm(flat, padded_mean.view(-1), padded_var.view(-1), gamma.reshape(-1),
                           beta.reshape(-1), self.training, BN_MOMENTUM, NORM_EPS)
        if pad and self.training:  # the running averages the kernel updated in the copies
            mean.copy_(padded_mean[:, :units])
            var.copy_(padded_var[:, :units])
        return out.view(b, k, width)[..., :units].transpose(0, 1)

    def forward(self, x: Tensor, dropout_u: Tensor | None = None, dropout_p: Tensor | None = None,
                return_hidden: bool = False):
        """``x``: ``(K, B, d_in)``; ``dropout_u``: ``(K, B, n_dropout_units)`` uniforms or None.

        Returns the output ``(K, B, d_out)`` and, with ``return_hidden``, the list of the
        hidden layers' activations (after activation, before dropout).
        """
        hidden_out, offset = [], 0
        # Every h below is a new tensor, so writing over it is safe; with autograd the
        # activations' backward needs their inputs (elu's formula would change its bits).
        act, out_act = (self.act, self.out_act) if torch.is_grad_enabled() else (self.act_, self.out_act_)
        for i in range(self.n_layers - 1):
            h = self.ops.affine(x, self.kernels[i], None if self.bias_free[i] else self.biases[i], self.fused_slope)
            if self.norm != "none":
                h = self._normalize(h, i)
            if self.fused_slope is None:
                h = act(h)
            if return_hidden:
                hidden_out.append(h)
            if dropout_u is not None:
                width = h.shape[-1]
                h = inverted_dropout(h, dropout_u[..., offset:offset + width], dropout_p)
                offset += width
            x = h
        out = out_act(self.ops.affine(x, self.kernels[-1], self.biases[-1]))
        return (out, hidden_out) if return_hidden else out

    @torch.no_grad()
    def select(self, members: list[int]) -> "StackedMLP":
        """A new stack of the given members (copies of their parameters and buffers)."""
        sub = StackedMLP.__new__(StackedMLP)
        nn.Module.__init__(sub)
        sub.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k not in ("_parameters", "_buffers", "_modules")})
        sub.n_members = len(members)
        index = torch.tensor(members)
        for name in ("kernels", "biases", "norm_weight", "norm_bias"):
            if hasattr(self, name):
                setattr(sub, name, nn.ParameterList(nn.Parameter(t[index].clone(), requires_grad=t.requires_grad)
                                                    for t in getattr(self, name)))
        for name, buf in self.named_buffers():
            sub.register_buffer(name, buf[index].clone())
        return sub

    def normalized_layers(self) -> list[bool]:
        """Whether each layer's kernel is followed by normalization (output layer: never)."""
        return [self.norm != "none"] * (self.n_layers - 1) + [False]
