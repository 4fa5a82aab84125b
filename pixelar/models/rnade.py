"""RNADE (Uria, Murray & Larochelle 2013): NADE for real-valued vectors, with a mixture of
Gaussians per dimension."""

import math

import torch
import torch.nn as nn

from .. import ops
from ..ops.draw import check_finite_logits, draw_categorical
from .base import check_model_size, check_positive_int, check_sample_size
from .nade import stored_transposed

LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0


class RNADE(nn.Module):
    """p(x) = prod_d sum_k pi_dk N(x_d; mu_dk, sigma_dk), with (pi, mu, sigma) of dimension d
    read off the NADE hidden state h_d = sigmoid(c + W[:, :d] x_<d) (sigmoid units, computed
    by the incremental update of ``ops.nade_forward``).

    Parameters: W (hidden, D) (stored transposed, as NADE's), c (hidden,),
    V (D, 3 components, hidden), b (D, 3 components).
    forward(x: (B, D) float) -> (logit_pi, mu, log_sigma), each (B, D, components).
    """

    def __init__(self, num_inputs=2, hidden=50, components=5):
        super().__init__()
        for name, v in (("num_inputs", num_inputs), ("hidden", hidden), ("components", components)):
            check_positive_int(name, v)
        D, K = num_inputs, components
        check_model_size(
            "RNADE",
            4 * (hidden * D + hidden + 3 * K * D * (hidden + 1)),
            f"num_inputs={num_inputs}, hidden={hidden}, components={components}",
        )
        self._config = dict(num_inputs=num_inputs, hidden=hidden, components=components)
        self.num_inputs, self.hidden, self.components = num_inputs, hidden, components
        D, K = num_inputs, components
        self.W = nn.Parameter(stored_transposed(torch.randn(hidden, D) / math.sqrt(D)))
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(D, 3 * K, hidden) / math.sqrt(hidden))
        # spread the initial means so the components differ
        b = torch.zeros(D, 3 * K)
        b[:, K : 2 * K] = torch.linspace(-1.5, 1.5, K)
        self.b = nn.Parameter(b)

    @property
    def num_dims(self):
        return self.num_inputs

    def config(self):
        return dict(self._config)

    def check_inputs(self, x, name="x"):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(
                f"{name} must be a float tensor of shape (B, {self.num_inputs}), got "
                f"{getattr(x, 'dtype', type(x).__name__)}"
            )
        if x.dim() != 2 or x.shape[1] != self.num_inputs:
            raise ValueError(f"{name} must have shape (B, {self.num_inputs}), got {tuple(x.shape)}")
        if x.device.type == "meta":
            raise ValueError(
                f"{name} is on the meta device (shapes without values); give "
                f"vectors on the model's device"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} must be finite, got NaN or inf values")
        return x.to(self.W.dtype)

    def _split(self, out):
        K = self.components
        return (
            out[..., :K],
            out[..., K : 2 * K],
            out[..., 2 * K :].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX),
        )

    def forward(self, x):
        x = self.check_inputs(x)
        return self._split(ops.nade_forward(x, self.W, self.c, self.V, self.b))

    def log_prob(self, x):
        """Exact log-density of x: (B, D) -> (B,) nats."""
        x = self.check_inputs(x)
        logit_pi, mu, log_sigma = self(x)
        z = (x.unsqueeze(-1) - mu) / log_sigma.exp()
        log_normal = -0.5 * z * z - log_sigma - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(torch.log_softmax(logit_pi, -1) + log_normal, dim=-1).sum(-1)

    @torch.no_grad()
    def sample(self, n, *, fast=True, generator=None):
        """Draw n vectors: (n, D). All randomness is drawn first, in this order: uniforms
        (n, D) float64 choosing the component, then normals (n, D) float64; fast and naive
        sampling with generators seeded alike return identical samples."""
        check_positive_int("n", n)
        check_sample_size(n, self.num_inputs)
        if not isinstance(fast, bool):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        D, dev, dtype = self.num_inputs, self.W.device, self.W.dtype
        u = torch.rand(n, D, generator=generator, device=dev, dtype=torch.float64)
        z = torch.randn(n, D, generator=generator, device=dev, dtype=torch.float64)
        if fast:
            # the whole D-step loop in one op call
            return ops.rnade_sample(
                u,
                z,
                self.W.detach(),
                self.c.detach(),
                self.V.detach(),
                self.b.detach(),
                LOG_SCALE_MIN,
                LOG_SCALE_MAX,
            )
        x = torch.zeros(n, D, device=dev, dtype=dtype)
        for d in range(D):
            out = ops.nade_forward(x, self.W, self.c, self.V, self.b)[:, d]
            check_finite_logits(out, False, d)  # logit_pi, mu and log_sigma
            logit_pi, mu, log_sigma = self._split(out)
            k = draw_categorical(logit_pi, u[:, d]).unsqueeze(1)
            value = (
                mu.gather(1, k)[:, 0].double()
                + log_sigma.gather(1, k)[:, 0].double().exp() * z[:, d]
            )
            x[:, d] = value.to(dtype)
        return x
