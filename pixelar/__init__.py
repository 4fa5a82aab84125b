"""pixelar: autoregressive image models (PixelRNN, PixelCNN, NADE, ...) for PyTorch, with
C++/CUDA/Triton kernels and cached O(pixels) sampling."""

import math

import torch

from . import (
    _extension,  # noqa: F401  (loads pixelar._C and its op schemas)
    ops,  # noqa: F401
)

__version__ = "0.1.0"


def bits_per_dim(log_prob: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Convert log-probabilities in nats per image to bits per dimension.

    log_prob: (B,) or scalar, nats  ->  same shape, -log_prob / (num_dims * ln 2)
    """
    if num_dims <= 0:
        raise ValueError(f"bits_per_dim: num_dims must be positive, got {num_dims}")
    return -log_prob / (num_dims * math.log(2.0))


from . import models, nn  # noqa: E402,F401
