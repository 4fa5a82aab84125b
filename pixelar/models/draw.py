"""Drawing discrete values from pre-drawn uniforms by inverse CDF, in float64.

Every sampler in pixelar (naive, cached, C++ and GPU kernels) uses exactly this rule
(csrc/include/pixelar/lstm_math.h mirrors it), so samplers that are fed the same uniforms
return the same values.
"""
import torch


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
