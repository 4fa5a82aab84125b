"""Conversions between images (B, C, H, W) and sequences (B, D) in pixelar's order:
raster order over (row, column), then channel inside a pixel."""

import torch


def to_sequence(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W, *rest) -> (B, H*W*C, *rest): dimension i = (r * W + c) * C + ch."""
    B, C, H, W = x.shape[:4]
    return x.movedim(1, 3).reshape(B, H * W * C, *x.shape[4:])


def from_sequence(s: torch.Tensor, image_shape) -> torch.Tensor:
    """(B, H*W*C, *rest) -> (B, C, H, W, *rest); inverse of :func:`to_sequence`."""
    C, H, W = image_shape
    return s.reshape(s.shape[0], H, W, C, *s.shape[2:]).movedim(3, 1)
