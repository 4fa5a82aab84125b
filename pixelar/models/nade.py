"""NADE (Larochelle & Murray 2011) for binary images."""

import math

import torch
import torch.nn as nn

from .. import ops
from ..ops.nade_sample import nade_sample_prechecked
from .base import AutoregressiveModel, bernoulli_log_prob, check_positive_int
from .raster import from_sequence, to_sequence


def stored_transposed(w):
    """w: (Hd, D) -> the same values, stored transposed (its .t() contiguous). The NADE
    kernels walk W^T (D, Hd) row by row: with W stored so, neither the forward, the backward
    nor the sampler copies a transpose of it, and the backward's gradient of W^T is W's
    gradient as it is (in W's layout, as autograd wants it)."""
    return w.t().contiguous().t()


class NADE(AutoregressiveModel):
    """p(x_d = 1 | x_<d) = sigmoid(b_d + V_d . sigmoid(c + W[:, :d] x_<d)), binary images,
    computed with the incremental update a_{d+1} = a_d + W[:, d] x_d (``ops.nade_forward``).

    Parameters: W (hidden, D) (stored transposed: ``stored_transposed``), c (hidden,),
    V (D, 1, hidden), b (D, 1).
    forward(x: (B, C, H, W)) -> (B, C, H, W) Bernoulli logits.
    """

    def __init__(self, image_shape=(1, 28, 28), hidden=500):
        super().__init__(image_shape, 2)
        check_positive_int("hidden", hidden)
        self._config = dict(image_shape=list(self.image_shape), hidden=hidden)
        D = self.num_dims
        self.check_size(
            4 * (2 * hidden * D + hidden + D),
            f"hidden={hidden} with image_shape={self.image_shape}",
        )
        self.hidden = hidden
        self.W = nn.Parameter(stored_transposed(torch.randn(hidden, D) / math.sqrt(D)))
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(D, 1, hidden) / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(D, 1))

    def _sequence_logits(self, x):
        """x: (B, C, H, W) integers in {0, 1} -> the inputs and logits in the op's order:
        (B, D) floats, (B, D) Bernoulli logits."""
        seq = to_sequence(self.to_input(self.check_images(x)))
        return seq, ops.nade_forward(seq, self.W, self.c, self.V, self.b).squeeze(-1)

    def forward(self, x):
        """x: (B, C, H, W) integers in {0, 1} -> (B, C, H, W) Bernoulli logits."""
        return from_sequence(self._sequence_logits(x)[1], self.image_shape)

    def log_prob(self, x):
        """Exact log-probability of images x: (B, C, H, W) integers -> (B,) nats. The logits stay
        in the (B, D) order of the op (no round trip through the image layout)."""
        seq, logits = self._sequence_logits(x)
        return bernoulli_log_prob(logits, seq)

    def features(self, x):
        """Hidden representation of whole images: sigmoid(c + W x), (B, C, H, W) -> (B, hidden)."""
        x = self.check_images(x)
        return torch.sigmoid(self.c + to_sequence(self.to_input(x)) @ self.W.T)

    @torch.no_grad()
    def _sample_fast(self, u, cond, progress=False):
        """The whole D-step loop (draw, then a_{d+1} = a_d + W[:, d] x_d) in one op call
        (``ops.nade_sample``, less the wrapper's checks): O(D * hidden) per image.
        u: (n, C, H, W) float64 uniforms, cond: (n, C, H, W) int64 or None (negative:
        sample) -> (n, C, H, W) int64."""
        x = nade_sample_prechecked(  # the inputs are valid by construction (its docstring)
            to_sequence(u),
            None if cond is None else to_sequence(cond),
            self.W.detach(),
            self.c.detach(),
            self.V.detach(),
            self.b.detach(),
        )
        return from_sequence(x, self.image_shape)
