"""NADE (Larochelle & Murray 2011) for binary images."""
import math

import torch
import torch.nn as nn

from .. import ops
from .base import AutoregressiveModel
from .draw import draw_bernoulli
from .raster import from_sequence, to_sequence


class NADE(AutoregressiveModel):
    """p(x_d = 1 | x_<d) = sigmoid(b_d + V_d . sigmoid(c + W[:, :d] x_<d)), binary images,
    computed with the incremental update a_{d+1} = a_d + W[:, d] x_d (``ops.nade_forward``).

    Parameters: W (hidden, D), c (hidden,), V (D, 1, hidden), b (D, 1).
    forward(x: (B, C, H, W)) -> (B, C, H, W) Bernoulli logits.
    """

    bernoulli = True

    def __init__(self, image_shape=(1, 28, 28), hidden=500):
        super().__init__(image_shape, 2)
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        self._config = dict(image_shape=list(self.image_shape), hidden=hidden)
        D = self.num_dims
        self.hidden = hidden
        self.W = nn.Parameter(torch.randn(hidden, D) / math.sqrt(D))
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(D, 1, hidden) / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(D, 1))

    def forward(self, x):
        seq = to_sequence(self.to_input(x))
        logits = ops.nade_forward(seq, self.W, self.c, self.V, self.b)[..., 0]
        return from_sequence(logits, self.image_shape)

    def features(self, x):
        """Hidden representation of whole images: sigmoid(c + W x), (B, C, H, W) -> (B, hidden)."""
        x = self.check_images(x)
        return torch.sigmoid(self.c + to_sequence(self.to_input(x)) @ self.W.T)

    def _sample_fast(self, u, cond, progress=False):
        """Incremental sampler: a_{d+1} = a_d + W[:, d] x_d, O(D * hidden) per image."""
        us = to_sequence(u)
        cs = None if cond is None else to_sequence(cond)
        n, D = us.shape
        a = self.c.expand(n, -1).clone()
        x = torch.zeros(n, D, dtype=torch.long, device=u.device)
        for d in range(D):
            logit = torch.sigmoid(a) @ self.V[d, 0] + self.b[d, 0]
            value = draw_bernoulli(logit, us[:, d])
            if cs is not None:
                value = torch.where(cs[:, d] >= 0, cs[:, d], value)
            x[:, d] = value
            a = a + value.to(a.dtype).unsqueeze(1) * self.W[:, d]
        return from_sequence(x, self.image_shape)
