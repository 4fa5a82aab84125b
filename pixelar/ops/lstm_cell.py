"""The LSTM cell used by every recurrent op, in plain PyTorch (mirrors
csrc/include/pixelar/lstm_math.h).

Gate pre-activations come as 4H channels in the order [i, f, o, g].
"""

import torch


def lstm_cell_ref(pre: torch.Tensor, c_prev: torch.Tensor, dim: int = 1):
    """pre: (..., 4H, ...) gate pre-activations along ``dim``; c_prev: same shape with H.

    Returns (h, c): c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g), h = sigmoid(o) * tanh(c).
    """
    i, f, o, g = pre.chunk(4, dim)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c
