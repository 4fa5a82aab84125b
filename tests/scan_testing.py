"""The tests shared by the two LSTM scan ops, pixelar.ops.diagonal_lstm_scan and
pixelar.ops.row_lstm_scan: their test modules subclass ScanOpTests with the op's name, inputs
and an independent per-position loop, and add the op's own cases.

Shapes: x_gates (B, 4H, R, N) and h, c (B, H, R, N), where N = S = R + W - 1 skewed columns
(diagonal scan) or W columns (row scan); w_ss (4H, H, taps). Test cases are (B, H, R, W).
"""

import pytest
import torch

import pixelar
from pixelar._extension import has_kernel

from conftest import TOL, report_diff

DTYPES = [torch.float64, torch.float32]


class ScanOpTests:
    """Reference vs loop, C++ kernel vs reference (forward and gradients, odd shapes,
    non-contiguous inputs, fp32/fp64), thread-count independence, gradcheck, opcheck, bad
    inputs, torch.compile. A subclass sets:

        NAME         the op's name in torch.ops.pixelar and pixelar.ops
        SHAPES       (B, H, R, W) cases for the kernel; the first four for the loop too
        EMPTY_SHAPES (B, H, R, W) cases with nothing to compute that the op accepts
        THREAD_TOL   None: results equal with one and two threads; else assert_close kwargs
        EXTRA_ARGS   the op's arguments after (x, w), in every call (default none)

    The raw op returns (h, c) and possibly more tensors saved for its backward, which takes
    (grad_h, grad_c, x, w, h, c, *saved, *EXTRA_ARGS).

    and defines, as static methods:

        sample_inputs(B, H, R, W, dtype=torch.float64, requires_grad=False) -> (x, w)
        loop_scan(x, w) -> (h, c)                an independent per-position transcription
        non_contiguous_inputs(dtype) -> (xs, w)  views of x_gates, and a w_ss view
        bad_wrapper_inputs(x, w), bad_op_inputs(x, w), bad_backward_inputs(x, w, h, c)
            -> [(args, message)], the calls that must raise ValueError (pixelar.ops) or
            RuntimeError (the raw op, its backward) with a message matching `message`
    """

    NAME = None
    SHAPES = []
    EMPTY_SHAPES = [(0, 2, 3, 4), (2, 3, 0, 4), (2, 3, 4, 0)]  # B, R, W = 0
    THREAD_TOL = None
    EXTRA_ARGS = ()

    def pytest_generate_tests(self, metafunc):
        """`shape` runs over SHAPES, `loop_shape` over the first four."""
        if "shape" in metafunc.fixturenames:
            metafunc.parametrize("shape", self.SHAPES)
        if "loop_shape" in metafunc.fixturenames:
            metafunc.parametrize("loop_shape", self.SHAPES[:4])
        if "empty_shape" in metafunc.fixturenames:
            metafunc.parametrize("empty_shape", self.EMPTY_SHAPES)

    def wrapper(self, x, w):
        """The op through pixelar.ops (backend chosen by the caller)."""
        return getattr(pixelar.ops, self.NAME)(x, w, *self.EXTRA_ARGS)

    def reference(self, x, w):
        return getattr(pixelar.ops, self.NAME + "_ref")(x, w, *self.EXTRA_ARGS)

    def op(self):
        """torch.ops.pixelar.<NAME>; skips the test where pixelar._C has no CPU kernel."""
        if not has_kernel(self.NAME, "CPU"):
            pytest.skip(f"pixelar._C has no CPU {self.NAME}")
        return getattr(torch.ops.pixelar, self.NAME)

    def backward_op(self):
        self.op()
        return getattr(torch.ops.pixelar, self.NAME + "_backward")

    def raw(self, x, w):
        """The raw op: (h, c, saved), saved = what else it returns (for its backward)."""
        out = self.op()(x, w, *self.EXTRA_ARGS)
        return out[0], out[1], tuple(out[2:])

    def compare(self, x, w, dtype, raw_op):
        """Forward and gradients of the kernel (through the op) vs the fp64 reference."""
        x = x.detach().requires_grad_()
        w = w.detach().requires_grad_()
        if raw_op:
            h, c, _ = self.raw(x, w)
        else:
            with pixelar.ops.backend("cpp"):
                h, c = self.wrapper(x, w)
        x64 = x.detach().double().requires_grad_()
        w64 = w.detach().double().requires_grad_()
        h_ref, c_ref = self.reference(x64, w64)
        gh, gc = torch.randn_like(h_ref), torch.randn_like(c_ref)
        # (an empty map need not use w: its gradient is then zero)
        grads = torch.autograd.grad(
            (h * gh.to(dtype)).sum() + (c * gc.to(dtype)).sum(),
            (x, w),
            allow_unused=True,
            materialize_grads=True,
        )
        grads_ref = torch.autograd.grad(
            (h_ref * gh).sum() + (c_ref * gc).sum(),
            (x64, w64),
            allow_unused=True,
            materialize_grads=True,
        )
        for name, out, ref in [
            ("h", h, h_ref),
            ("c", c, c_ref),
            ("grad_x", grads[0], grads_ref[0]),
            ("grad_w", grads[1], grads_ref[1]),
        ]:
            report_diff(name, out, ref)
            assert out.dtype == dtype
            torch.testing.assert_close(out.double(), ref, **TOL[dtype])

    def test_reference_matches_position_loop(self, loop_shape):
        x, w = self.sample_inputs(*loop_shape)
        h, c = self.reference(x, w)
        h_loop, c_loop = self.loop_scan(x, w)
        report_diff("h", h, h_loop)
        report_diff("c", c, c_loop)
        torch.testing.assert_close(h, h_loop, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c, c_loop, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_cpp_matches_reference(self, shape, dtype):
        self.op()
        x, w = self.sample_inputs(*shape, dtype=dtype)
        self.compare(x, w, dtype, raw_op=False)

    def test_empty_maps_match_reference(self, empty_shape):
        # B, R or W = 0: empty h, c and zero gradients, from the kernel and the reference
        self.op()
        x, w = self.sample_inputs(*empty_shape)
        self.compare(x, w, torch.float64, raw_op=True)
        self.compare(x, w, torch.float64, raw_op=False)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_cpp_non_contiguous_inputs(self, dtype):
        self.op()
        xs, w = self.non_contiguous_inputs(dtype)
        assert not any(x.is_contiguous() for x in xs) and not w.is_contiguous()
        for x in xs:
            self.compare(x, w, dtype, raw_op=True)
            self.compare(x, w, dtype, raw_op=False)

    def test_same_result_with_one_and_two_threads(self):
        back = self.backward_op()
        x, w = self.sample_inputs(5, 4, 6, 7, dtype=torch.float32)
        extra = self.EXTRA_ARGS
        h, c, saved = self.raw(x, w)
        gh, gc = torch.randn_like(h), torch.randn_like(c)
        grads = back(gh, gc, x, w, h, c, *saved, *extra)
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            h1, c1, saved1 = self.raw(x, w)
            grads1 = back(gh, gc, x, w, h, c, *saved, *extra)
        finally:
            torch.set_num_threads(previous)
        for a, b in zip((h, c) + saved + tuple(grads), (h1, c1) + saved1 + tuple(grads1)):
            if self.THREAD_TOL is None:
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(a, b, **self.THREAD_TOL)

    def test_gradcheck_fp64(self):
        self.op()
        x, w = self.sample_inputs(2, 2, 3, 4, requires_grad=True)
        with pixelar.ops.backend("cpp"):
            assert torch.autograd.gradcheck(self.wrapper, (x, w))

    def test_opcheck(self):
        op, back = self.op(), self.backward_op()
        extra = self.EXTRA_ARGS
        x, w = self.sample_inputs(2, 3, 4, 5, requires_grad=True)
        torch.library.opcheck(op, (x, w, *extra))
        x, w = self.sample_inputs(1, 2, 3, 2)
        h, c, saved = self.raw(x, w)
        gh, gc = torch.randn_like(h), torch.randn_like(c)
        torch.library.opcheck(back, (gh, gc, x, w, h, c, *saved, *extra))

    def test_wrapper_rejects_bad_inputs(self):
        x, w = self.sample_inputs(2, 3, 4, 5)
        for args, message in self.bad_wrapper_inputs(x, w):
            with pytest.raises(ValueError, match=message):
                self.wrapper(*args)

    def test_raw_op_rejects_bad_inputs(self):
        op, back = self.op(), self.backward_op()
        x, w = self.sample_inputs(2, 3, 4, 5)
        extra = self.EXTRA_ARGS
        for args, message in self.bad_op_inputs(x, w):
            with pytest.raises(RuntimeError, match=message):
                op(*args, *extra)
        h, c, saved = self.raw(x, w)
        for args, message in self.bad_backward_inputs(x, w, h, c, *saved):
            with pytest.raises(RuntimeError, match=message):
                back(*args, *extra)

    def test_torch_compile_fullgraph(self):
        op = self.op()
        x, w = self.sample_inputs(2, 2, 3, 4, dtype=torch.float32, requires_grad=True)

        def f(x, w):
            h, c = op(x, w, *self.EXTRA_ARGS)[:2]
            return (h * h).sum() + c.sum()

        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        out = compiled(x, w)
        grads = torch.autograd.grad(out, (x, w))
        out_ref = f(x, w)
        grads_ref = torch.autograd.grad(out_ref, (x, w))
        torch.testing.assert_close(out, out_ref)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref)
