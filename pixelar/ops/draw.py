"""Drawing discrete values from pre-drawn uniforms by inverse CDF, in float64.

Every sampler in pixelar (naive, cached, C++ and GPU kernels) uses exactly this rule
(csrc/include/pixelar/sampling_math.h mirrors it), so samplers that are fed the same uniforms
return the same values.

Non-finite logits: no value can be drawn from a NaN or infinite logit, so every sampler
raises ``ValueError(NONFINITE_MESSAGE.format(d=d))`` naming the smallest dimension d (raster
index (row * W + column) * C + channel) whose draw would read one; dimensions that the
condition gives are not drawn and not checked (the kernels share the rule through
csrc/include/pixelar/sampling_math.h: logit_finite, nonfinite_message).
"""

import torch

NONFINITE_MESSAGE = (
    "sampling: a logit is not finite (NaN or inf) at dimension {d} (raster "
    "order), so no value can be drawn; the model's parameters hold NaN or "
    "inf values"
)


def check_finite_logits(logits: torch.Tensor, bernoulli: bool, dims, drawn=None):
    """Raise ValueError (NONFINITE_MESSAGE) if a draw would read a non-finite logit.

    logits: (n, *S) Bernoulli logits, or (n, *S, L) categorical logits (bernoulli=False)
    dims: int (S empty), or (*S) int64 raster indices of the dimensions
    drawn: (n, *S) bool, False where the condition gives the value (None: all drawn)
    """
    bad = ~torch.isfinite(logits)
    if not bernoulli:
        bad = bad.any(dim=-1)
    if drawn is not None:
        bad = bad & drawn
    if not bool(bad.any()):
        return
    if isinstance(dims, int):
        d = dims
    else:
        dims = torch.as_tensor(dims, device=bad.device).expand_as(bad)
        d = int(dims[bad].min())
    raise ValueError(NONFINITE_MESSAGE.format(d=d))


def draw_bernoulli(logit: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """logit: (...) Bernoulli logit of value 1; u: (...) uniforms in [0, 1) -> (...) int64,
    1 where u < sigmoid(logit)."""
    return (u.double() < torch.sigmoid(logit.double())).long()


def draw_categorical(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """logits: (..., L); u: (...) -> (...) int64: the smallest k with u < cdf[k] (cdf the
    cumulative softmax), L - 1 if rounding leaves u above the last cdf value."""
    logits = logits.double()
    e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    target = u.double() * e.sum(dim=-1)
    cdf = torch.cumsum(e, dim=-1)[..., :-1]
    return (cdf <= target.unsqueeze(-1)).sum(dim=-1)


def draw(logits: torch.Tensor, u: torch.Tensor, bernoulli: bool) -> torch.Tensor:
    """Bernoulli draw from (...) logits, or categorical from (..., L) logits."""
    return draw_bernoulli(logits, u) if bernoulli else draw_categorical(logits, u)
