"""Row LSTM layer (van den Oord et al. 2016, section 3.1)."""
import math

import torch
import torch.nn as nn

from .. import ops
from .masked_conv import MaskedConv2d, channel_groups


class RowLSTM(nn.Module):
    """Row LSTM: a masked 1 x k input-to-state convolution along the row (mask B), then the
    row-by-row recurrence with a 1 x 3 state-to-state convolution over the row above.

    x: (B, in_channels, R, W) -> h: (B, hidden, R, W). The state at (r, c) sees a triangle
    of rows above plus the pixels (r, c - k//2 .. c) of its own row.
    """

    def __init__(self, in_channels, hidden, num_colors=1, kernel_size=3):
        super().__init__()
        self.hidden = hidden
        gate_groups = channel_groups(hidden, num_colors).repeat(4)
        self.input_to_state = MaskedConv2d(in_channels, 4 * hidden, (1, kernel_size), "B",
                                           in_groups=channel_groups(in_channels, num_colors),
                                           out_groups=gate_groups)
        bound = 1.0 / math.sqrt(3 * hidden)
        self.w_ss = nn.Parameter(torch.empty(4 * hidden, hidden, 3).uniform_(-bound, bound))

    def forward(self, x):
        h, _ = ops.row_lstm_scan(self.input_to_state(x), self.w_ss)
        return h
