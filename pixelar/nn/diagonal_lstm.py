"""Diagonal LSTM and Diagonal BiLSTM layers (van den Oord et al. 2016, section 3.2)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .masked_conv import MaskedConv2d, channel_groups


class DiagonalLSTM(nn.Module):
    """One direction: 1x1 masked (B) input-to-state convolution, skew, the column scan with
    a 2x1 state-to-state kernel, unskew. The state at (r, c) sees (r-1, c) and (r, c-1), so
    its receptive field is every pixel (r', c') with r' <= r and c' <= c.

    x: (B, in_channels, R, W) -> h: (B, hidden, R, W)
    ``masked=False`` makes the input-to-state convolution a plain 1x1 (for the right-to-left
    direction, whose output is only used a row lower).
    """

    def __init__(self, in_channels, hidden, num_colors=1, masked=True):
        super().__init__()
        self.hidden = hidden
        if masked:
            self.input_to_state = MaskedConv2d(
                in_channels, 4 * hidden, 1, "B",
                in_groups=channel_groups(in_channels, num_colors),
                out_groups=channel_groups(hidden, num_colors).repeat(4))
        else:
            self.input_to_state = nn.Conv2d(in_channels, 4 * hidden, 1)
        bound = 1.0 / math.sqrt(2 * hidden)
        self.w_ss = nn.Parameter(torch.empty(4 * hidden, hidden, 2).uniform_(-bound, bound))

    def forward(self, x):
        width = x.shape[-1]
        x_gates = ops.skew(self.input_to_state(x))
        if x_gates.device.type == "cpu":
            # (B, S, 4H, R) in memory: the C++ scan then reads each skewed column's rows as
            # contiguous runs (one copy, in place of the one .contiguous() would make).
            x_gates = x_gates.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
        h, _ = ops.diagonal_lstm_scan(x_gates, self.w_ss)
        return ops.unskew(h, width)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Shift a map down by one row, zero-filling the top row: (..., R, W) -> (..., R, W)."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


class DiagonalBiLSTM(nn.Module):
    """Two Diagonal LSTMs: left-to-right on the map, right-to-left on the mirrored map. The
    right-to-left output is mirrored back and shifted down one row before the two are
    added, so (r, c) sees rows above it in full and never its own row's future.

    The right-to-left direction also reads ``context`` (the image itself), unmasked: its
    output is used only a row lower, where the whole row above is past. Without it, the
    last pixel of a row, which no mask-A feature of its own row contains, would be a blind
    spot for the start of the next row (the paper's layer, fed only the mask-A stack, has it).

    x: (B, in_channels, R, W), context: (B, context_channels, R, W) -> h: (B, hidden, R, W)
    """

    def __init__(self, in_channels, hidden, num_colors=1, context_channels=0):
        super().__init__()
        self.hidden = hidden
        self.left_to_right = DiagonalLSTM(in_channels, hidden, num_colors)
        self.right_to_left = DiagonalLSTM(in_channels + context_channels, hidden, masked=False)

    def forward(self, x, context=None):
        forward_h = self.left_to_right(x)
        rl_input = x if context is None else torch.cat([x, context], dim=1)
        backward_h = self.right_to_left(rl_input.flip(-1)).flip(-1)
        return forward_h + shift_down(backward_h)
