"""pixelar.ops.diagonal_lstm_scan: reference vs a per-position loop, C++ kernel vs reference
(forward and gradients, odd shapes, non-contiguous inputs, fp32/fp64), gradcheck, opcheck,
bad inputs, torch.compile (the shared cases: scan_testing.ScanOpTests), and the skew's
padding."""

import pytest
import torch

from scan_testing import ScanOpTests


def outside_mask(R, S):
    """(R, S) True at the skew's padding: skewed column j of row r is outside the image."""
    W = S - R + 1
    j = torch.arange(S).view(1, S)
    r = torch.arange(R).view(R, 1)
    return (j - r < 0) | (j - r >= W)


class TestDiagonalLSTMScan(ScanOpTests):
    NAME = "diagonal_lstm_scan"
    # (B, H, R, W): odd, non-square, batch 1, H = 3, one row or column, the paper's H = 16.
    SHAPES = [(2, 3, 5, 7), (1, 2, 7, 3), (3, 4, 1, 6), (2, 5, 6, 1), (1, 16, 11, 9)]
    EMPTY_SHAPES = [(0, 2, 3, 4), (2, 3, 0, 4)]  # W = 0 is no skewed map: an error
    THREAD_TOL = None  # work split by batch element, summed in a fixed order: equal results

    @staticmethod
    def sample_inputs(B, H, R, W, dtype=torch.float64, requires_grad=False):
        """x_gates (B, 4H, R, S), S = R + W - 1; w_ss (4H, H, 2)."""
        S = R + W - 1
        x = torch.randn(B, 4 * H, R, S, dtype=dtype)
        w = 0.5 * torch.randn(4 * H, H, 2, dtype=dtype)
        return x.requires_grad_(requires_grad), w.requires_grad_(requires_grad)

    @staticmethod
    def loop_scan(x, w):
        """Independent transcription: every skewed position (r, j) in turn, with explicit
        matrix-vector products for the row above (w[..., 0]) and the same row (w[..., 1])."""
        B, G, R, S = x.shape
        H = G // 4
        W = S - R + 1
        h = x.new_zeros(B, H, R, S)
        c = x.new_zeros(B, H, R, S)
        for j in range(S):
            for r in range(R):
                if not 0 <= j - r < W:
                    continue  # skew padding: stays zero
                h_above = h[:, :, r - 1, j - 1] if r > 0 and j > 0 else x.new_zeros(B, H)
                h_left = h[:, :, r, j - 1] if j > 0 else x.new_zeros(B, H)
                c_left = c[:, :, r, j - 1] if j > 0 else x.new_zeros(B, H)
                pre = x[:, :, r, j] + h_above @ w[:, :, 0].T + h_left @ w[:, :, 1].T
                i, f, o, g = pre[:, :H], pre[:, H : 2 * H], pre[:, 2 * H : 3 * H], pre[:, 3 * H :]
                c[:, :, r, j] = torch.sigmoid(f) * c_left + torch.sigmoid(i) * torch.tanh(g)
                h[:, :, r, j] = torch.sigmoid(o) * torch.tanh(c[:, :, r, j])
        return h, c

    @staticmethod
    def non_contiguous_inputs(dtype):
        B, H, R, W = 3, 3, 5, 4
        S = R + W - 1
        # x: a transposed view (batch and channel swapped) and a slice of a wider map.
        x_t = torch.randn(4 * H, B, R, S, dtype=dtype).transpose(0, 1)
        x_s = torch.randn(B, 4 * H, R, S + 5, dtype=dtype)[..., 2 : 2 + S]
        w = (0.5 * torch.randn(H, 2, 4 * H, dtype=dtype)).permute(2, 0, 1)
        return (x_t, x_s), w

    @staticmethod
    def bad_wrapper_inputs(x, w):
        return [
            ((x[0], w), "x_gates"),
            ((x, w[:, :, :1]), "w_ss"),
            ((x[:, :11], w), "4H channels"),
            ((x.long(), w), "floating-point"),
            ((x, w.float()), "dtype"),
        ]

    @staticmethod
    def bad_op_inputs(x, w):
        return [
            ((x[0], w), "4-D"),
            ((x, w[:, :, :1]), r"w_ss must have shape"),
            ((x[:, :11], w), "4H channels"),
            ((x.long(), w.long()), "float32 or float64"),
            ((x, w.float()), "dtype"),
            ((x[:, :, :, :3], w), "S = R \\+ W - 1"),  # S < R: no image column
        ]

    @staticmethod
    def bad_backward_inputs(x, w, h, c):
        return [
            ((h[:, :, :2], c, x, w, h, c), "grad_h must have shape"),
            ((h, c, x, w, h, c.float()), "c must have the dtype"),
        ]

    def test_outside_image_zero_and_no_gradient(self):
        op = self.op()
        x, w = self.sample_inputs(2, 3, 4, 6, requires_grad=True)
        h, c = op(x, w)
        mask = outside_mask(4, 9)
        assert (h[:, :, mask] == 0).all() and (c[:, :, mask] == 0).all()
        (grad_x,) = torch.autograd.grad(h.sum() + c.sum(), x)
        assert (grad_x[:, :, mask] == 0).all()
        # Changing x in the padding changes nothing.
        x2 = x.detach().clone()
        x2[:, :, mask] = 1e3
        h2, c2 = op(x2, w.detach())
        assert torch.equal(h2, h.detach()) and torch.equal(c2, c.detach())

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_column_major_layout(self, dtype):
        """x_gates in (B, S, 4H, R) memory order (each column's rows contiguous, the
        kernel's fastest), read in place: matches the reference, grad_x comes back in
        the same layout (the fake kernel's empty_like), and opcheck agrees."""
        B, H, R, W = 2, 3, 6, 5
        S = R + W - 1
        x = torch.randn(B, S, 4 * H, R, dtype=dtype).permute(0, 2, 3, 1)
        w = 0.5 * torch.randn(4 * H, H, 2, dtype=dtype)
        self.compare(x, w, dtype, raw_op=False)
        xg = x.detach().requires_grad_()
        h, c = self.op()(xg, w)
        (grad_x,) = torch.autograd.grad(h.sum() + c.sum(), xg)
        assert grad_x.stride() == x.stride()
        torch.library.opcheck(self.op(), (x, w))
