"""Fully visible sigmoid belief network: logistic autoregression over binary dimensions."""

import torch
import torch.nn as nn

from ..ops.draw import check_finite_logits, draw_bernoulli
from .base import AutoregressiveModel
from .raster import from_sequence, to_sequence


class FVSBN(AutoregressiveModel):
    """p(x_d = 1 | x_<d) = sigmoid(b_d + sum_{j<d} W[d, j] x_j), binary images.

    Parameters: b (D,) and the D(D-1)/2 strictly-lower-triangular entries of W.
    forward(x: (B, C, H, W)) -> (B, C, H, W) Bernoulli logits.
    """

    def __init__(self, image_shape=(1, 28, 28)):
        super().__init__(image_shape, 2)
        self._config = dict(image_shape=list(self.image_shape))
        D = self.num_dims
        # D(D-1)/2 weights (float32) and their row and column indices (int64)
        self.check_size(
            D * (D - 1) // 2 * (4 + 16) + 4 * D,
            f"image_shape={self.image_shape} (D = {D} dimensions)",
        )
        rows, cols = torch.tril_indices(D, D, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.weights = nn.Parameter(torch.zeros(rows.numel()))
        self.bias = nn.Parameter(torch.zeros(D))

    def weight_matrix(self) -> torch.Tensor:
        """(D, D) strictly lower-triangular W."""
        D = self.num_dims
        W = self.weights.new_zeros(D, D)
        return W.index_put((self.rows, self.cols), self.weights)

    def forward(self, x):
        """x: (B, C, H, W) integers in {0, 1} -> (B, C, H, W) Bernoulli logits."""
        seq = to_sequence(self.to_input(self.check_images(x)))
        return from_sequence(seq @ self.weight_matrix().T + self.bias, self.image_shape)

    def _sample_fast(self, u, cond, progress=False):
        """Each conditional computed once: logit_d = b_d + W[d, :d] x_:d. u: (n, C, H, W)."""
        W = self.weight_matrix()
        us = to_sequence(u)
        cs = None if cond is None else to_sequence(cond)
        x = torch.zeros_like(us, dtype=self.bias.dtype)
        for d in range(self.num_dims):
            logit = self.bias[d] + x[:, :d] @ W[d, :d]
            check_finite_logits(logit, True, d, None if cs is None else cs[:, d] < 0)
            value = draw_bernoulli(logit, us[:, d])
            if cs is not None:
                value = torch.where(cs[:, d] >= 0, cs[:, d], value)
            x[:, d] = value.to(x.dtype)
        return from_sequence(x.long(), self.image_shape)
