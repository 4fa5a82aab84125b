"""Markov pixels: p(x_i | the `order` previous dimensions), as lookup tables."""

import torch
import torch.nn as nn

from ..ops.draw import check_finite_logits, draw
from .base import AutoregressiveModel, is_int
from .raster import from_sequence, to_sequence

MAX_PARAMETERS = 50_000_000


class MarkovPixels(AutoregressiveModel):
    """p(x) = prod_i p(x_i | x_{i-k}, ..., x_{i-1}), k = ``order``, in raster order.

    Dimension i has a table with one categorical per context of its min(i, k) previous
    values: levels^min(i, k) * (levels - 1) free logits (level 0 fixed at logit 0). Binary
    images with order 1 thus have exactly 1 + 2 (n - 1) = 2n - 1 parameters.
    forward(x: (B, C, H, W)) -> (B, C, H, W) logits (binary) or (B, C, H, W, levels).
    """

    def __init__(self, image_shape=(1, 28, 28), levels=2, order=1):
        super().__init__(image_shape, levels)
        if not is_int(order) or order < 0:
            raise ValueError(f"order must be an int >= 0, got {order!r}")
        self._config = dict(image_shape=list(self.image_shape), levels=levels, order=order)
        self.order = order
        n, L = self.num_dims, levels
        contexts = [L ** min(i, order) for i in range(n)]
        total = sum(contexts) * (L - 1)
        if total > MAX_PARAMETERS:
            raise ValueError(
                f"MarkovPixels: order={order} with levels={levels} needs {total} "
                f"parameters (limit {MAX_PARAMETERS}); lower the order"
            )
        offsets = torch.tensor([0] + contexts[:-1]).cumsum(0) * (L - 1)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Parameter(torch.zeros(total))

    def context_index(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: (B, n) int64 -> (B, n): index of each dimension's context in its table,
        sum_j seq[i - j] * L^(j-1) over j = 1..min(i, order)."""
        B, n = seq.shape
        ctx = torch.zeros_like(seq)
        for j in range(1, self.order + 1):
            if j >= n + 1:
                break
            shifted = torch.nn.functional.pad(seq, (j, 0))[:, :n]  # seq[i - j], 0 for i < j
            ctx = ctx + shifted * self.levels ** (j - 1)
        return ctx

    def forward(self, x):
        """x: (B, C, H, W) integers in [0, levels) -> logits (see the class docstring)."""
        seq = to_sequence(self.check_images(x))
        L = self.levels
        idx = self.offsets + self.context_index(seq) * (L - 1)  # (B, n)
        if self.bernoulli:
            return from_sequence(self.table[idx], self.image_shape)
        free = self.table[idx.unsqueeze(-1) + torch.arange(L - 1, device=idx.device)]
        full = torch.cat([free.new_zeros(*free.shape[:-1], 1), free], dim=-1)
        return from_sequence(full, self.image_shape)

    def _sample_fast(self, u, cond, progress=False):
        """One table lookup per dimension (no forward pass over the whole image): the logits
        of dimension i are read at the context of the ``order`` values just drawn.
        u: (n, C, H, W) float64 uniforms -> (n, C, H, W) int64."""
        us = to_sequence(u)
        cs = None if cond is None else to_sequence(cond)
        n, D = us.shape
        L = self.levels
        x = torch.zeros(n, D, dtype=torch.long, device=u.device)
        free = torch.arange(L - 1, device=u.device)
        for i in range(D):
            ctx = torch.zeros(n, dtype=torch.long, device=u.device)
            for j in range(1, min(i, self.order) + 1):
                ctx = ctx + x[:, i - j] * L ** (j - 1)
            idx = self.offsets[i] + ctx * (L - 1)
            if self.bernoulli:
                logits = self.table[idx]
            else:
                logits = torch.cat(
                    [self.table.new_zeros(n, 1), self.table[idx[:, None] + free]], dim=1
                )
            check_finite_logits(logits, self.bernoulli, i, None if cs is None else cs[:, i] < 0)
            value = draw(logits, us[:, i], self.bernoulli)
            if cs is not None:
                value = torch.where(cs[:, i] >= 0, cs[:, i], value)
            x[:, i] = value
        return from_sequence(x, self.image_shape)
