"""Cached samplers of NADE and RNADE: the whole D-step loop (draw, then the incremental
hidden update) in one op call (``pixelar.ops.nade_sample`` / ``rnade_sample``)."""
import torch

from .. import ops
from ..models.raster import from_sequence, to_sequence


@torch.no_grad()
def sample_nade(model, u, cond=None):
    """Binary NADE images from uniforms u: (n, C, H, W) float64 and an optional condition
    (n, C, H, W) int64 (negative: sample) -> (n, C, H, W) int64."""
    us = to_sequence(u)
    cs = None if cond is None else to_sequence(cond)
    x = ops.nade_sample(us, cs, model.W.detach(), model.c.detach(), model.V.detach(),
                        model.b.detach())
    return from_sequence(x, model.image_shape)


@torch.no_grad()
def sample_rnade(model, u, z):
    """RNADE vectors from uniforms u and normals z, both (n, D) float64 -> (n, D)."""
    from ..models.rnade import LOG_SCALE_MAX, LOG_SCALE_MIN
    return ops.rnade_sample(u, z, model.W.detach(), model.c.detach(), model.V.detach(),
                            model.b.detach(), LOG_SCALE_MIN, LOG_SCALE_MAX)
