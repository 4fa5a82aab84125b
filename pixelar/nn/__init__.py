"""Layers of pixelar's models: masked convolutions, Row LSTM, Diagonal (Bi)LSTM, residual
blocks and the output head."""

from .blocks import ConvResidualBlock, LSTMResidualBlock, OutputHead
from .diagonal_lstm import DiagonalBiLSTM, DiagonalLSTM, shift_down
from .masked_conv import MaskedConv2d, causal_mask, channel_groups
from .row_lstm import RowLSTM

__all__ = [
    "MaskedConv2d",
    "causal_mask",
    "channel_groups",
    "RowLSTM",
    "DiagonalLSTM",
    "DiagonalBiLSTM",
    "shift_down",
    "LSTMResidualBlock",
    "ConvResidualBlock",
    "OutputHead",
]
