"""regstudy: how regularization shapes neural networks, one reproducible study."""

from .kernels import pin as _pin_kernels

_pin_kernels()  # before anything imports torch: the same kernels, so the same bits, on any x86 CPU

__version__ = "0.1.0"
