"""pixelar.ops.row_lstm_scan: reference vs a per-position loop, C++ kernel vs reference
(forward and gradients, odd shapes, non-contiguous inputs, fp32/fp64), gradcheck, opcheck,
bad inputs, torch.compile (the shared cases: scan_testing.ScanOpTests); the CPU kernel's
batch slices (one per thread) at several thread counts, and its backward on inputs of any
strides."""

import pytest
import torch

from conftest import TOL, report_diff
from scan_testing import ScanOpTests


class TestRowLSTMScan(ScanOpTests):
    NAME = "row_lstm_scan"
    # (B, H, R, W): odd, non-square, batch 1, H = 3, one row, one column, a wider hidden size,
    # and rows of 26 batch-columns per slice (the float row products' 24-column blocks, 8-
    # column vectors and scalar tail; 3H = 15 rows, not a multiple of their 4-row blocks).
    SHAPES = [(2, 3, 5, 7), (1, 2, 7, 3), (3, 4, 1, 6), (2, 3, 6, 1), (2, 32, 5, 9), (4, 5, 3, 13)]
    # The elementwise passes split work by thread; the slices (and so the row products'
    # sizes) depend on the thread count: equal up to rounding.
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

    @pytest.mark.parametrize("B,threads", [(5, 2), (5, 3), (5, 4), (2, 3), (1, 3), (7, 1)])
    def test_batch_slices_match_reference(self, B, threads):
        """The CPU kernel runs one scan per batch slice and thread (min(B, threads) slices,
        of uneven sizes here): forward and both gradients vs the fp64 reference."""
        op, back = self.op(), self.backward_op()
        x, w = self.sample_inputs(B, 3, 5, 6, dtype=torch.float64)
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            h, c = op(x, w)
            gh, gc = torch.randn_like(h), torch.randn_like(c)
            grad_x, grad_w = back(gh, gc, x, w, h, c)
        finally:
            torch.set_num_threads(previous)
        x_ref, w_ref = x.clone().requires_grad_(), w.clone().requires_grad_()
        h_ref, c_ref = self.reference(x_ref, w_ref)
        grads_ref = torch.autograd.grad((h_ref * gh).sum() + (c_ref * gc).sum(), (x_ref, w_ref))
        for name, out, ref in [
            ("h", h, h_ref),
            ("c", c, c_ref),
            ("grad_x", grad_x, grads_ref[0]),
            ("grad_w", grad_w, grads_ref[1]),
        ]:
            report_diff(name, out, ref)
            torch.testing.assert_close(out, ref.detach(), **TOL[torch.float64])

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_backward_op_reads_any_strides(self, dtype):
        """The raw backward with every input a strided view (channels-last x, a transposed
        grad_h, a broadcast grad_c of stride 0, sliced h and c) gives what it gives on
        contiguous copies, and grad_x in x's layout."""
        op, back = self.op(), self.backward_op()
        B, H, R, W = 3, 4, 5, 6
        x, w = self.sample_inputs(B, H, R, W, dtype=dtype)
        h, c = op(x, w)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        gh = torch.randn(B, H, W, R, dtype=dtype).transpose(2, 3)
        gc = torch.randn(1, H, 1, 1, dtype=dtype).expand(B, H, R, W)
        h_s = torch.cat([h, torch.randn_like(h)], dim=1)[:, :H]
        c_s = torch.cat([torch.randn_like(c), c], dim=3)[..., W:]
        args = (gh, gc, x_cl, w, h_s, c_s)
        assert not any(t.is_contiguous() for t in args if t is not w)
        grad_x, grad_w = back(*args)
        grad_x_ref, grad_w_ref = back(*(t.contiguous() for t in args))
        assert grad_x.stride() == torch.empty_like(x_cl).stride()
        assert torch.equal(grad_x, grad_x_ref)
        assert torch.equal(grad_w, grad_w_ref)
