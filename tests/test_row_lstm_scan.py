"""pixelar.ops.row_lstm_scan: reference vs a per-position loop, C++ kernel vs reference
(forward and gradients, odd shapes, non-contiguous inputs, fp32/fp64), gradcheck, opcheck,
bad inputs, torch.compile (the shared cases: scan_testing.ScanOpTests)."""

import torch

from scan_testing import ScanOpTests


class TestRowLSTMScan(ScanOpTests):
    NAME = "row_lstm_scan"
    # (B, H, R, W): odd, non-square, batch 1, H = 3, one row, one column, a wider hidden size.
    SHAPES = [(2, 3, 5, 7), (1, 2, 7, 3), (3, 4, 1, 6), (2, 3, 6, 1), (2, 32, 5, 9)]
    # The elementwise passes split work by thread; the matrix products are torch's BLAS,
    # whose blocking may depend on the thread count: equal up to rounding.
    THREAD_TOL = dict(rtol=1e-5, atol=1e-6)

    @staticmethod
    def sample_inputs(B, H, R, W, dtype=torch.float64, requires_grad=False):
        """x_gates (B, 4H, R, W); w_ss (4H, H, 3)."""
        x = torch.randn(B, 4 * H, R, W, dtype=dtype)
        w = (0.5 / H**0.5) * torch.randn(4 * H, H, 3, dtype=dtype)
        return x.requires_grad_(requires_grad), w.requires_grad_(requires_grad)

    @staticmethod
    def loop_scan(x, w):
        """Independent transcription: every position (r, col) in turn; the state input is an
        explicit matrix-vector product per tap k of the row above, columns col - 1, col,
        col + 1."""
        B, G, R, W = x.shape
        H = G // 4
        h = x.new_zeros(B, H, R, W)
        c = x.new_zeros(B, H, R, W)
        for r in range(R):
            for col in range(W):
                pre = x[:, :, r, col].clone()
                if r > 0:
                    for k in range(3):
                        cc = col + k - 1
                        if 0 <= cc < W:
                            pre = pre + h[:, :, r - 1, cc] @ w[:, :, k].T
                c_up = c[:, :, r - 1, col] if r > 0 else x.new_zeros(B, H)
                i, f, o, g = pre[:, :H], pre[:, H : 2 * H], pre[:, 2 * H : 3 * H], pre[:, 3 * H :]
                c[:, :, r, col] = torch.sigmoid(f) * c_up + torch.sigmoid(i) * torch.tanh(g)
                h[:, :, r, col] = torch.sigmoid(o) * torch.tanh(c[:, :, r, col])
        return h, c

    @staticmethod
    def non_contiguous_inputs(dtype):
        B, H, R, W = 3, 3, 5, 4
        x_t = torch.randn(B, 4 * H, W, R, dtype=dtype).transpose(2, 3)  # column-major rows
        x_s = torch.randn(B, 8 * H, R, W + 3, dtype=dtype)[:, ::2, :, 1 : 1 + W]
        w = (0.3 * torch.randn(3, H, 4 * H, dtype=dtype)).permute(2, 1, 0)
        return (x_t, x_s), w

    @staticmethod
    def bad_wrapper_inputs(x, w):
        return [
            ((x[0], w), "x_gates"),
            ((x, w[:, :, :2]), "w_ss"),
            ((x[:, :10], w), "4H channels"),
            ((x.int(), w), "floating-point"),
            ((x, w.float()), "dtype"),
        ]

    @staticmethod
    def bad_op_inputs(x, w):
        return [
            ((x[0], w), "4-D"),
            ((x, w[:, :, :2]), "w_ss must have shape"),
            ((x, w[:, :2]), "w_ss must have shape"),
            ((x[:, :10], w), "4H channels"),
            ((x.int(), w.int()), "float32 or float64"),
            ((x, w.float()), "dtype"),
        ]

    @staticmethod
    def bad_backward_inputs(x, w, h, c):
        return [
            ((h, c[:1], x, w, h, c), "grad_c must have shape"),
            ((h, c, x, w, h[0], c), "h must be a 4-D"),
        ]
