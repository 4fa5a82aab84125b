"""Skewing of feature maps for the Diagonal LSTM (van den Oord et al. 2016, section 3.2).

Row r is shifted right by r positions, so the diagonals of the image become the columns
of the skewed map and one column step processes a whole diagonal at once.
"""

import torch
import torch.nn.functional as F


def skew(x: torch.Tensor) -> torch.Tensor:
    """Shift row r of ``x`` right by r, zero-filling.

    x: (..., R, W)  ->  (..., R, R + W - 1)   (2W - 1 for a square map)
    Entry (r, c) moves to (r, r + c).
    """
    *lead, R, W = x.shape
    S = R + W - 1
    flat = F.pad(x, (0, R)).reshape(*lead, R * (W + R))  # row r starts at r * (S + 1)
    return flat[..., : R * S].reshape(*lead, R, S)


def unskew(y: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`skew`: y: (..., R, R + width - 1) -> (..., R, width),
    out[r, c] = y[r, r + c]."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"unskew: width must be a positive int, got {width!r}")
    *lead, R, S = y.shape
    if S != R + width - 1:
        raise ValueError(f"unskew: y must have R + width - 1 = {R + width - 1} columns, got {S}")
    flat = F.pad(y.reshape(*lead, R * S), (0, R)).reshape(*lead, R, S + 1)
    return flat[..., :width]


def skew_ref(x: torch.Tensor) -> torch.Tensor:
    """Plain loop transcription of :func:`skew` (the specification)."""
    *lead, R, W = x.shape
    out = x.new_zeros(*lead, R, R + W - 1)
    for r in range(R):
        out[..., r, r : r + W] = x[..., r, :]
    return out
