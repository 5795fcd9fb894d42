"""regstudy: how regularization shapes neural networks, one reproducible study."""

__version__ = "0.1.0"
