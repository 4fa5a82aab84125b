"""Diagonal LSTM scan (van den Oord et al. 2016, section 3.2), its reference and dispatch.

The layer computes the input-to-state part (a 1x1 convolution) for the whole map first and
skews it; this op runs the recurrence column by column over the skewed map. In image terms
position (r, c) sees the states at (r - 1, c) and (r, c - 1); in the skewed map both are in
the previous column, rows r - 1 and r, which is the paper's 2x1 column convolution.

For skewed column j and row r (image column c = j - r, valid when 0 <= c < W):
    pre    = (x_gates[:, :, r, j] + w_ss[:, :, 0] @ h[:, :, r-1, j-1]
              + w_ss[:, :, 1] @ h[:, :, r, j-1])
    i, f, o, g = pre split in four blocks of H
    c[r, j] = sigmoid(f) * c[r, j-1] + sigmoid(i) * tanh(g)
    h[r, j] = sigmoid(o) * tanh(c[r, j])
States outside the image (the skew's padding, and r - 1 < 0, j - 1 < 0) are zero, so the
result at a pixel never depends on the padding.
"""

import torch

from ._backend import dispatch, lazy, register
from ._lstm_scan_registration import check_lstm_scan_inputs, register_lstm_scan
from .lstm_cell import lstm_cell_ref

OP = "diagonal_lstm_scan"


def check_inputs(x_gates, w_ss):
    """The op's checks (wrapper and reference alike; the C++ op's check_inputs says the
    same): shapes, dtypes, and a skewed map of S = R + W - 1 >= R columns."""
    check_lstm_scan_inputs(OP, x_gates, w_ss, kernel_width=2)
    R, S = x_gates.shape[2:]
    if S < R:
        raise ValueError(
            f"{OP}: x_gates must be a skewed map with S = R + W - 1 >= R columns "
            f"(W >= 1), got R = {R}, S = {S}"
        )


def diagonal_lstm_scan_ref(x_gates: torch.Tensor, w_ss: torch.Tensor):
    """Pure-PyTorch reference (the specification; autograd by construction).

    x_gates: (B, 4H, R, S)  input-to-state pre-activations on the skewed map, S = R + W - 1
    w_ss:    (4H, H, 2)     state-to-state column kernel: [..., 0] row above, [..., 1] same row
    Returns h, c: (B, H, R, S), zero outside the image.
    Raises ValueError for inputs the op refuses (S < R among them), with its messages.
    """
    check_inputs(x_gates, w_ss)
    B, G, R, S = x_gates.shape
    H = G // 4
    W = S - R + 1
    rows = torch.arange(R, device=x_gates.device)
    h_prev = x_gates.new_zeros(B, H, R)
    c_prev = x_gates.new_zeros(B, H, R)
    hs, cs = [], []
    for j in range(S):
        h_above = torch.cat([h_prev.new_zeros(B, H, 1), h_prev[:, :, :-1]], dim=2)
        pre = (
            x_gates[:, :, :, j]
            + torch.einsum("gk,bkr->bgr", w_ss[:, :, 0], h_above)
            + torch.einsum("gk,bkr->bgr", w_ss[:, :, 1], h_prev)
        )
        h, c = lstm_cell_ref(pre, c_prev, dim=1)
        inside = ((j - rows >= 0) & (j - rows < W)).view(1, 1, R)
        h = torch.where(inside, h, torch.zeros_like(h))
        c = torch.where(inside, c, torch.zeros_like(c))
        hs.append(h)
        cs.append(c)
        h_prev, c_prev = h, c
    return torch.stack(hs, dim=-1), torch.stack(cs, dim=-1)


def diagonal_lstm_scan(x_gates: torch.Tensor, w_ss: torch.Tensor):
    """Diagonal LSTM scan over a skewed map, on the backend in force (see pixelar.ops).

    x_gates: (B, 4H, R, S)  gate pre-activations [i, f, o, g], S = R + W - 1 (skewed width)
    w_ss:    (4H, H, 2)     state-to-state kernel: [..., 0] row above, [..., 1] same row
    Returns (h, c), each (B, H, R, S), zero outside the image. Differentiable in both inputs.
    """
    check_inputs(x_gates, w_ss)
    return dispatch(OP, x_gates.device)(x_gates, w_ss)


def _cpp(x_gates, w_ss):
    # The CPU kernel reads x_gates in place, whatever its strides (fastest when each skewed
    # column's rows are contiguous: (B, S, 4H, R) memory order, see DiagonalLSTM.forward).
    return torch.ops.pixelar.diagonal_lstm_scan(x_gates, w_ss.contiguous())


def _cuda(x_gates, w_ss):
    return torch.ops.pixelar.diagonal_lstm_scan(x_gates.contiguous(), w_ss.contiguous())


register(
    OP,
    reference=diagonal_lstm_scan_ref,
    cpp=_cpp,
    cuda=_cuda,
    triton=lazy("pixelar.kernels.diagonal_lstm_scan", "diagonal_lstm_scan_triton"),
)
register_lstm_scan(OP)
