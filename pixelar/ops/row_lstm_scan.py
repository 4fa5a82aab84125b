"""Row LSTM scan (van den Oord et al. 2016, section 3.1), its reference and dispatch.

The layer computes the input-to-state part (a masked 1 x k convolution along the row) for
the whole map first; this op runs the recurrence row by row. The state-to-state part is a
1 x 3 convolution over the previous row's hidden state (zero-padded at both ends):
    pre[:, :, r, c] = x_gates[:, :, r, c] + sum_k w_ss[:, :, k] @ h[:, :, r-1, c+k-1]
    i, f, o, g = pre split in four blocks of H
    c[r, c] = sigmoid(f) * c[r-1, c] + sigmoid(i) * tanh(g)
    h[r, c] = sigmoid(o) * tanh(c[r, c])
with h[-1] = c[-1] = 0.
"""

import torch
import torch.nn.functional as F

from ._backend import dispatch, lazy, register
from ._lstm_scan_registration import check_lstm_scan_inputs, register_lstm_scan
from .lstm_cell import lstm_cell_ref

OP = "row_lstm_scan"


def row_lstm_scan_ref(x_gates: torch.Tensor, w_ss: torch.Tensor):
    """Pure-PyTorch reference (the specification; autograd by construction).

    x_gates: (B, 4H, R, W)  input-to-state pre-activations [i, f, o, g]
    w_ss:    (4H, H, 3)     state-to-state kernel over columns c-1, c, c+1 of the row above
    Returns h, c: (B, H, R, W). Raises ValueError for inputs the op refuses.
    """
    check_lstm_scan_inputs(OP, x_gates, w_ss, kernel_width=3)
    B, G, R, W = x_gates.shape
    H = G // 4
    if R == 0 or W == 0:  # an empty map: empty states (conv1d refuses a zero-width row)
        empty = x_gates[:, :H] * 0
        return empty, empty.clone()
    h_prev = x_gates.new_zeros(B, H, W)
    c_prev = x_gates.new_zeros(B, H, W)
    hs, cs = [], []
    for r in range(R):
        pre = x_gates[:, :, r, :] + F.conv1d(h_prev, w_ss, padding=1)
        h_prev, c_prev = lstm_cell_ref(pre, c_prev, dim=1)
        hs.append(h_prev)
        cs.append(c_prev)
    return torch.stack(hs, dim=2), torch.stack(cs, dim=2)


def row_lstm_scan(x_gates: torch.Tensor, w_ss: torch.Tensor):
    """Row LSTM scan, on the backend in force (see pixelar.ops).

    x_gates: (B, 4H, R, W)  gate pre-activations [i, f, o, g] from the input-to-state conv
    w_ss:    (4H, H, 3)     state-to-state 1 x 3 kernel over the previous row
    Returns (h, c), each (B, H, R, W). Differentiable in both inputs.
    """
    check_lstm_scan_inputs(OP, x_gates, w_ss, kernel_width=3)
    return dispatch(OP, x_gates.device)(x_gates, w_ss)


def _compiled(x_gates, w_ss):
    return torch.ops.pixelar.row_lstm_scan(x_gates.contiguous(), w_ss.contiguous())


register(
    OP,
    reference=row_lstm_scan_ref,
    cpp=_compiled,
    cuda=_compiled,
    triton=lazy("pixelar.kernels.row_lstm_scan", "row_lstm_scan_triton"),
)
register_lstm_scan(OP)
