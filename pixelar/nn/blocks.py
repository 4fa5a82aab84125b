"""Residual blocks and the output head of PixelRNN / PixelCNN (van den Oord et al. 2016,
section 3.3 and figure 5).

Each block also states its part of the packed weights of the cached sampler
(``pixelar.ops.pixel_network_sample_step``, whose docstring is the contract):
``sampling_kind`` ("conv", "row" or "diagonal", the op's ``layer``) and
``sampling_weights()``, its tensors in the op's order, detached and contiguous."""

import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .diagonal_lstm import DiagonalBiLSTM
from .masked_conv import MaskedConv2d, conv1x1_sampling_weights
from .row_lstm import RowLSTM


class LSTMResidualBlock(nn.Module):
    """2h features in; a Row LSTM or Diagonal BiLSTM of h units; a 1x1 masked (B)
    convolution back to 2h; added to the input.
    x: (B, 2h, R, W), image: (B, C, R, W) floats (read by the Diagonal BiLSTM's
    right-to-left direction) -> (B, 2h, R, W)"""

    def __init__(self, layer, hidden, num_colors=1):
        super().__init__()
        if layer == "diagonal":
            self.lstm = DiagonalBiLSTM(2 * hidden, hidden, num_colors, context_channels=num_colors)
        elif layer == "row":
            self.lstm = RowLSTM(2 * hidden, hidden, num_colors)
        else:
            raise ValueError(f"layer must be 'row' or 'diagonal', got {layer!r}")
        self.output = MaskedConv2d(hidden, 2 * hidden, 1, "B", num_colors)

    @property
    def sampling_kind(self) -> str:
        """ "row" (Row LSTM) or "diagonal" (Diagonal BiLSTM): the op's ``layer``."""
        return self.lstm.sampling_kind

    def features(self, x, image):
        """The recurrent layer's hidden state: (B, 2h, R, W) -> (B, h, R, W)."""
        return self.lstm(x, image) if isinstance(self.lstm, DiagonalBiLSTM) else self.lstm(x)

    def forward(self, x, image):
        return x + self.output(self.features(x, image))

    def sampling_weights(self) -> list:
        """This block's tensors in the packed sampling layout; F = 2h, hd = h:
        "row":      is_w (2, F, 4hd), is_b (4hd,), ss_w (3, hd, 4hd)  (RowLSTM.sampling_weights),
                    out_w (hd, F), out_b (F,)
        "diagonal": l2r_w (F, 4hd), l2r_b, l2r_ss (2, hd, 4hd), r2l_w (F + C, 4hd), r2l_b,
                    r2l_ss (2, hd, 4hd)  (DiagonalBiLSTM.sampling_weights),
                    out_w (hd, F), out_b (F,)
        """
        return self.lstm.sampling_weights() + conv1x1_sampling_weights(self.output)


class ConvResidualBlock(nn.Module):
    """PixelCNN block: ReLU, 1x1 (2h -> h), ReLU, 3x3 mask B (h -> h), ReLU, 1x1 (h -> 2h),
    added to the input.  x: (B, 2h, R, W) -> (B, 2h, R, W)

    The forward is one op, ``pixelar.ops.conv_residual_block`` (its reference is the
    composite of convolutions; the C++ kernel runs the block row by row in cache)."""

    sampling_kind = "conv"

    def __init__(self, hidden, num_colors=1):
        super().__init__()
        self.reduce = MaskedConv2d(2 * hidden, hidden, 1, "B", num_colors)
        self.conv = MaskedConv2d(hidden, hidden, 3, "B", num_colors)
        self.expand = MaskedConv2d(hidden, 2 * hidden, 1, "B", num_colors)

    def forward(self, x, image=None):
        return ops.conv_residual_block(x, *self.fused_weights())

    def fused_weights(self) -> tuple:
        """The block's parameters in the layout of ``pixelar.ops.conv_residual_block``, masks
        applied (differentiable); F = 2h: w_reduce (F, h), b_reduce (h,), w_conv (5, h, h)
        the open taps of the masked 3x3 kernel [tap, c_in, c_out], b_conv (h,),
        w_expand (h, F), b_expand (F,)."""
        # Views only (flatten, slice, permute, t): their backward is cheap, where select and
        # reshape-of-a-permute add a zero fill and a copy per weight to every step.
        taps = self.conv.masked_weight().flatten(2)[:, :, :5].permute(2, 1, 0)
        return (
            self.reduce.masked_weight().flatten(1).t(),
            self.reduce.bias,
            taps,
            self.conv.bias,
            self.expand.masked_weight().flatten(1).t(),
            self.expand.bias,
        )

    def sampling_weights(self) -> list:
        """This block's tensors in the packed sampling layout ("conv"); F = 2h:
        red_w (F, h), red_b (h,), conv_w (2, 3, h, h) rows 0..1 (the centre row) of the
        masked 3x3 kernel [ky, kx, c_in, c_out], conv_b (h,), exp_w (h, F), exp_b (F,)
        """
        return (
            conv1x1_sampling_weights(self.reduce)
            + self.conv.sampling_weights()
            + conv1x1_sampling_weights(self.expand)
        )


class OutputHead(nn.Module):
    """Two ReLU + 1x1 mask-B convolutions: (B, features, R, W) -> (B, C * out_per_channel, R, W),
    the outputs of channel ch being features ch*out_per_channel ... (ch+1)*out_per_channel-1."""

    def __init__(self, in_features, head_hidden, num_colors, out_per_channel):
        super().__init__()
        self.hidden = MaskedConv2d(in_features, head_hidden, 1, "B", num_colors)
        self.out = MaskedConv2d(head_hidden, num_colors * out_per_channel, 1, "B", num_colors)

    def forward(self, x):
        return self.out(F.relu(self.hidden(F.relu(x))))

    def sampling_weights(self) -> list:
        """The head's tensors in the packed sampling layout; F = in_features,
        q = head_hidden, C * O = num_colors * out_per_channel:
        head_w1 (F, q), head_b1 (q,), head_w2 (q, C * O), head_b2 (C * O,)
        """
        return conv1x1_sampling_weights(self.hidden) + conv1x1_sampling_weights(self.out)
