"""Diagonal LSTM and Diagonal BiLSTM layers (van den Oord et al. 2016, section 3.2)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .masked_conv import (
    MaskedConv2d,
    channel_groups,
    conv1x1_sampling_weights,
    conv_weight,
    packed,
    pointwise,
    pointwise_ready,
)


class DiagonalLSTM(nn.Module):
    """One direction: 1x1 masked (B) input-to-state convolution, then the Diagonal LSTM
    recurrence with a 2x1 state-to-state kernel (pixelar.ops.diagonal_lstm_scan_image: the
    skewed map of the paper, walked in place). The state at (r, c) sees (r-1, c) and
    (r, c-1), so its receptive field is every pixel (r', c') with r' <= r and c' <= c;
    ``reverse=True`` scans right to left, (r, c) seeing (r-1, c) and (r, c+1).

    x: (B, in_channels, R, W) -> h: (B, hidden, R, W) (channels-last memory from the
    compiled kernels; a channels-last x makes the 1x1 convolution one matrix product).
    ``masked=False`` makes the input-to-state convolution a plain 1x1 (for the right-to-left
    direction, whose output is only used a row lower).
    """

    def __init__(self, in_channels, hidden, num_colors=1, masked=True, reverse=False):
        super().__init__()
        self.hidden = hidden
        self.reverse = reverse
        if masked:
            self.input_to_state = MaskedConv2d(
                in_channels,
                4 * hidden,
                1,
                "B",
                in_groups=channel_groups(in_channels, num_colors),
                out_groups=channel_groups(hidden, num_colors).repeat(4),
            )
        else:
            self.input_to_state = nn.Conv2d(in_channels, 4 * hidden, 1)
        bound = 1.0 / math.sqrt(2 * hidden)
        self.w_ss = nn.Parameter(torch.empty(4 * hidden, hidden, 2).uniform_(-bound, bound))

    def forward(self, x):
        conv = self.input_to_state
        if pointwise_ready(conv, x):  # one matrix product; the scan adds the bias as it reads
            gates, bias = pointwise(x, conv_weight(conv), None), conv.bias
        else:
            gates, bias = conv(x), None
        h, _ = ops.diagonal_lstm_scan_image(gates, self.w_ss, self.reverse, bias=bias)
        return h

    def sampling_weights(self) -> list:
        """This direction's part of a "diagonal" block in the packed layout of the cached
        sampler (``pixelar.ops.pixel_network_sample_step``), detached and contiguous;
        F = in_channels, hd = hidden, gates in the order [i, f, o, g]:

            is_w (F, 4hd)      the 1x1 input-to-state convolution (mask applied), input-major
            is_b (4hd,)
            ss_w (2, hd, 4hd)  state-to-state weights: [row above, previous column of the
                               scan] (left-to-right: the left neighbour; on the mirrored
                               map of the right-to-left direction: the right neighbour)
        """
        return conv1x1_sampling_weights(self.input_to_state) + packed(self.w_ss.permute(2, 1, 0))


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Shift a map down by one row, zero-filling the top row: (..., R, W) -> (..., R, W)."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


class DiagonalBiLSTM(nn.Module):
    """Two Diagonal LSTMs: left-to-right, and right-to-left (``reverse``). The right-to-left
    output is shifted down one row before the two are added, so (r, c) sees rows above it
    in full and never its own row's future.

    The right-to-left direction also reads ``context`` (the image itself), unmasked: its
    output is used only a row lower, where the whole row above is past. Without it, the
    last pixel of a row, which no mask-A feature of its own row contains, would be a blind
    spot for the start of the next row (the paper's layer, fed only the mask-A stack, has it).

    x: (B, in_channels, R, W), context: (B, context_channels, R, W) -> h: (B, hidden, R, W)
    """

    sampling_kind = "diagonal"

    def __init__(self, in_channels, hidden, num_colors=1, context_channels=0):
        super().__init__()
        self.hidden = hidden
        self.left_to_right = DiagonalLSTM(in_channels, hidden, num_colors)
        self.right_to_left = DiagonalLSTM(
            in_channels + context_channels, hidden, masked=False, reverse=True
        )

    def forward(self, x, context=None):
        forward_h = self.left_to_right(x)
        rl_input = x if context is None else torch.cat([x, context], dim=1)
        backward_h = self.right_to_left(rl_input)
        return forward_h + shift_down(backward_h)

    def sampling_weights(self) -> list:
        """This layer's part of a "diagonal" block in the packed layout of the cached
        sampler (``pixelar.ops.pixel_network_sample_step``), detached and contiguous;
        F = in_channels, C = context_channels, hd = hidden:

            l2r_w (F, 4hd), l2r_b (4hd,), l2r_ss (2, hd, 4hd)  [row above, left]
            r2l_w (F + C, 4hd), r2l_b (4hd,), r2l_ss (2, hd, 4hd)  [row above, right]

        (r2l_w's rows: the F layer inputs, then the C context (image) channels; see
        :meth:`DiagonalLSTM.sampling_weights`).
        """
        return self.left_to_right.sampling_weights() + self.right_to_left.sampling_weights()
