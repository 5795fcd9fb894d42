"""regstudy: how regularization shapes neural networks, one reproducible study.

Importing it changes nothing in the process: the exact path's pin of torch's kernels is
asked for by the entry points, before they import torch (:func:`regstudy.kernels.pin_for`).
"""

__version__ = "0.1.0"
