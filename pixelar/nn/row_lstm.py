"""Row LSTM layer (van den Oord et al. 2016, section 3.1)."""

import math

import torch
import torch.nn as nn

from .. import ops
from .masked_conv import MaskedConv2d, channel_groups, packed

# The input-to-state kernel width that the cached sampler (pixel_network_sample_step) reads.
SAMPLING_KERNEL_SIZE = 3


class RowLSTM(nn.Module):
    """Row LSTM: a masked 1 x k input-to-state convolution along the row (mask B), then the
    row-by-row recurrence with a 1 x 3 state-to-state convolution over the row above.

    x: (B, in_channels, R, W) -> h: (B, hidden, R, W). The state at (r, c) sees a triangle
    of rows above plus the pixels (r, c - k//2 .. c) of its own row.
    """

    sampling_kind = "row"

    def __init__(self, in_channels, hidden, num_colors=1, kernel_size=3):
        super().__init__()
        self.hidden = hidden
        gate_groups = channel_groups(hidden, num_colors).repeat(4)
        self.input_to_state = MaskedConv2d(
            in_channels,
            4 * hidden,
            (1, kernel_size),
            "B",
            in_groups=channel_groups(in_channels, num_colors),
            out_groups=gate_groups,
        )
        bound = 1.0 / math.sqrt(3 * hidden)
        self.w_ss = nn.Parameter(torch.empty(4 * hidden, hidden, 3).uniform_(-bound, bound))

    def forward(self, x):
        h, _ = ops.row_lstm_scan(self.input_to_state(x), self.w_ss)
        return h

    def sampling_weights(self) -> list:
        """This layer's part of a "row" block in the packed layout of the cached sampler
        (``pixelar.ops.pixel_network_sample_step``), detached and contiguous; F =
        in_channels, hd = hidden, gates in the order [i, f, o, g]:

            is_w (2, F, 4hd)   columns c-1 and c of the masked 1x3 input-to-state kernel
            is_b (4hd,)
            ss_w (3, hd, 4hd)  state-to-state weights of the row above, columns c-1, c, c+1

        Raises ValueError if the input-to-state kernel is not 1 x 3 (the width the op reads).
        """
        width = self.input_to_state.kernel_size[1]
        if width != SAMPLING_KERNEL_SIZE:
            raise ValueError(
                f"RowLSTM.sampling_weights: the cached sampler (pixel_network_sample_step) "
                f"supports an input-to-state kernel of width {SAMPLING_KERNEL_SIZE}, this "
                f"layer's is 1 x {width}; sample with fast=False"
            )
        is_w = self.input_to_state.causal_rows()[0, :2]  # (1, 3, F, 4hd): row 0, columns 0-1
        return packed(is_w, self.input_to_state.bias, self.w_ss.permute(2, 1, 0))
