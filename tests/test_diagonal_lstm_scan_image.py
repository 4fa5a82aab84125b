"""pixelar.ops.diagonal_lstm_scan_image (the Diagonal LSTM on the image layout, both
directions): reference vs a per-pixel loop in image coordinates, C++ kernel vs reference
(forward and gradients, odd shapes, non-contiguous and channels-last inputs, fp32/fp64),
gradcheck, opcheck, bad inputs, torch.compile (scan_testing.ScanOpTests, once per
direction); the kernel's channels-last outputs; and the layer's use of the op."""

import pytest
import test_diagonal_lstm_scan as skewed
import torch

import pixelar

from conftest import TOL
from scan_testing import ScanOpTests


class ImageScanTests(ScanOpTests):
    NAME = "diagonal_lstm_scan_image"
    # (B, H, R, W): odd, non-square, batch 1, H = 3, one row or column, the paper's H = 16.
    SHAPES = [(2, 3, 5, 7), (1, 2, 7, 3), (3, 4, 1, 6), (2, 5, 6, 1), (1, 16, 11, 9)]
    THREAD_TOL = None  # work split by batch element, summed in a fixed order: equal results

    @staticmethod
    def sample_inputs(B, H, R, W, dtype=torch.float64, requires_grad=False):
        """x_gates (B, 4H, R, W); w_ss (4H, H, 2)."""
        x = torch.randn(B, 4 * H, R, W, dtype=dtype)
        w = 0.5 * torch.randn(4 * H, H, 2, dtype=dtype)
        return x.requires_grad_(requires_grad), w.requires_grad_(requires_grad)

    def loop_scan(self, x, w):
        """Independent transcription in image coordinates: every pixel in scan order (rows
        top to bottom; columns left to right, or right to left when reverse), reading the h
        above it (w[..., 0]) and the previous h and c of its row (w[..., 1])."""
        B, G, R, W = x.shape
        H = G // 4
        (reverse,) = self.EXTRA_ARGS
        step = 1 if reverse else -1  # where the previous pixel of the row is
        h = x.new_zeros(B, H, R, W)
        c = x.new_zeros(B, H, R, W)
        columns = range(W - 1, -1, -1) if reverse else range(W)
        for r in range(R):
            for col in columns:
                prev = col + step
                zero = x.new_zeros(B, H)
                h_above = h[:, :, r - 1, col] if r > 0 else zero
                h_prev = h[:, :, r, prev] if 0 <= prev < W else zero
                c_prev = c[:, :, r, prev] if 0 <= prev < W else zero
                pre = x[:, :, r, col] + h_above @ w[:, :, 0].T + h_prev @ w[:, :, 1].T
                i, f, o, g = pre[:, :H], pre[:, H : 2 * H], pre[:, 2 * H : 3 * H], pre[:, 3 * H :]
                c[:, :, r, col] = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
                h[:, :, r, col] = torch.sigmoid(o) * torch.tanh(c[:, :, r, col])
        return h, c

    @staticmethod
    def non_contiguous_inputs(dtype):
        B, H, R, W = 3, 3, 5, 4
        # x: a transposed view (batch and channel swapped), a slice of a wider map, and
        # channels-last memory (what the layer passes).
        x_t = torch.randn(4 * H, B, R, W, dtype=dtype).transpose(0, 1)
        x_s = torch.randn(B, 4 * H, R, W + 5, dtype=dtype)[..., 2 : 2 + W]
        x_cl = torch.randn(B, R, W, 4 * H, dtype=dtype).permute(0, 3, 1, 2)
        w = (0.5 * torch.randn(H, 2, 4 * H, dtype=dtype)).permute(2, 0, 1)
        return (x_t, x_s, x_cl), w

    # The skewed op's bad inputs: the same checks and messages (less its S >= R one).
    bad_wrapper_inputs = staticmethod(skewed.TestDiagonalLSTMScan.bad_wrapper_inputs)

    @staticmethod
    def bad_op_inputs(x, w):
        cases = skewed.TestDiagonalLSTMScan.bad_op_inputs(x, w)
        return [case for case in cases if "S = R" not in case[1]]

    @staticmethod
    def bad_backward_inputs(x, w, h, c, gates):
        return [
            ((h[:, :, :2], c, x, w, h, c, gates), "grad_h must have shape"),
            ((h, c, x, w, h, c.float(), gates), "c must have the dtype"),
            ((h, c, x, w, h, c, gates[:, :4]), "gates must have shape"),
        ]

    def test_reference_is_the_skewed_scan(self):
        """The reference is the skewed-map op between skew and unskew (mirrored when
        reverse): checked against the skewed op's own reference on the same numbers."""
        x, w = self.sample_inputs(2, 3, 4, 5)
        (reverse,) = self.EXTRA_ARGS
        xs = x.flip(-1) if reverse else x
        h_sk, c_sk = pixelar.ops.diagonal_lstm_scan_ref(pixelar.ops.skew(xs), w)
        h, c = (pixelar.ops.unskew(t, 5) for t in (h_sk, c_sk))
        if reverse:
            h, c = h.flip(-1), c.flip(-1)
        h_ref, c_ref = self.reference(x, w)
        assert torch.equal(h, h_ref) and torch.equal(c, c_ref)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_outputs_channels_last(self, dtype):
        x, w = self.sample_inputs(2, 3, 4, 5, dtype=dtype, requires_grad=True)
        h, c, (gates,) = self.raw(x, w)
        for t in (h, c, gates):
            assert t.is_contiguous(memory_format=torch.channels_last)
        (grad_x,) = torch.autograd.grad(h.sum() + c.sum(), x)
        assert grad_x.is_contiguous(memory_format=torch.channels_last)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_saved_gates_are_the_activated_gates(self, dtype):
        """The raw op's third output: [sigmoid i, sigmoid f, sigmoid o, tanh g] of every
        pixel's pre-activations (recomputed here from the reference's h), not
        differentiable."""
        x, w = self.sample_inputs(2, 3, 4, 5, dtype=dtype, requires_grad=True)
        (reverse,) = self.EXTRA_ARGS
        _, _, (gates,) = self.raw(x, w)
        assert not gates.requires_grad
        with torch.no_grad():
            h, _ = self.reference(x.double(), w.double())
            above = torch.nn.functional.pad(h, (0, 0, 1, 0))[:, :, :-1]
            prev = torch.nn.functional.pad(h, (0, 1) if reverse else (1, 0))
            prev = prev[..., 1:] if reverse else prev[..., :-1]
            pre = (
                x.double()
                + torch.einsum("gk,bkrw->bgrw", w[:, :, 0].double(), above)
                + torch.einsum("gk,bkrw->bgrw", w[:, :, 1].double(), prev)
            )
            expected = torch.cat([pre[:, :9].sigmoid(), pre[:, 9:].tanh()], 1)
        torch.testing.assert_close(gates.double(), expected, **TOL[dtype])

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_bias_is_added_to_x_gates(self, dtype):
        """bias (4H,): the kernel adds it as it reads x_gates; forward and gradients (bias
        included) match the reference, channels-last and not, H whole vectors and not."""
        (reverse,) = self.EXTRA_ARGS
        for B, H, R, W in [(2, 3, 4, 5), (2, 8, 5, 3)]:
            x = torch.randn(B, R, W, 4 * H, dtype=dtype).permute(0, 3, 1, 2)
            for xs in (x, x.contiguous()):
                xs = xs.detach().requires_grad_()
                w = (0.5 * torch.randn(4 * H, H, 2, dtype=dtype)).requires_grad_()
                b = torch.randn(4 * H, dtype=dtype, requires_grad=True)
                with pixelar.ops.backend("cpp"):
                    h, c = pixelar.ops.diagonal_lstm_scan_image(xs, w, reverse, bias=b)
                x64, w64, b64 = (t.detach().double().requires_grad_() for t in (xs, w, b))
                h_ref, c_ref = pixelar.ops.diagonal_lstm_scan_image_ref(x64, w64, reverse, b64)
                gh, gc = torch.randn_like(h_ref), torch.randn_like(c_ref)
                loss = (h * gh.to(dtype)).sum() + (c * gc.to(dtype)).sum()
                grads = torch.autograd.grad(loss, (xs, w, b))
                loss_ref = (h_ref * gh).sum() + (c_ref * gc).sum()
                grads_ref = torch.autograd.grad(loss_ref, (x64, w64, b64))
                for out, ref in zip((h, c) + grads, (h_ref, c_ref) + grads_ref):
                    torch.testing.assert_close(out.double(), ref, **TOL[dtype])

    def test_bias_gradcheck_and_opcheck(self):
        self.op()
        (reverse,) = self.EXTRA_ARGS
        x, w = self.sample_inputs(2, 2, 3, 4, requires_grad=True)
        b = torch.randn(8, dtype=torch.float64, requires_grad=True)

        def f(x, w, b):
            return pixelar.ops.diagonal_lstm_scan_image(x, w, reverse, bias=b)

        with pixelar.ops.backend("cpp"):
            assert torch.autograd.gradcheck(f, (x, w, b))
        torch.library.opcheck(self.op(), (x, w, reverse, b))

    def test_rejects_bad_bias(self):
        (reverse,) = self.EXTRA_ARGS
        x, w = self.sample_inputs(1, 2, 3, 4)
        with pytest.raises(ValueError, match="bias"):
            pixelar.ops.diagonal_lstm_scan_image(x, w, reverse, bias=torch.zeros(7).double())
        with pytest.raises(ValueError, match="bias"):
            pixelar.ops.diagonal_lstm_scan_image(x, w, reverse, bias=torch.zeros(8))
        with pytest.raises(RuntimeError, match="bias must have shape"):
            self.op()(x, w, reverse, torch.zeros(7).double())

    def test_rejects_non_bool_reverse(self):
        x, w = self.sample_inputs(1, 2, 3, 4)
        with pytest.raises(ValueError, match="reverse must be a bool"):
            pixelar.ops.diagonal_lstm_scan_image(x, w, 1)

    @pytest.mark.parametrize(
        "B,H,R,W,dtype",
        [
            (16, 16, 28, 28, torch.float32),  # the training configuration
            (2, 8, 5, 6, torch.float32),
            (2, 4, 5, 6, torch.float64),
            (3, 8, 3, 7, torch.float64),
        ],
    )
    def test_channels_last_in_place_path(self, B, H, R, W, dtype):
        """Channels-last x_gates with H a whole number of vectors (8 floats, 4 doubles):
        the kernels read and write the tensors in place, without their scratch copies."""
        self.op()
        x = torch.randn(B, R, W, 4 * H, dtype=dtype).permute(0, 3, 1, 2)
        w = 0.3 * torch.randn(4 * H, H, 2, dtype=dtype)
        self.compare(x, w, dtype, raw_op=True)
        self.compare(x, w, dtype, raw_op=False)


class TestImageScanLeftToRight(ImageScanTests):
    EXTRA_ARGS = (False,)


class TestImageScanRightToLeft(ImageScanTests):
    EXTRA_ARGS = (True,)


def test_layer_runs_the_op_on_channels_last_gates():
    """DiagonalBiLSTM hands the op channels-last gates (its 1x1 convolutions as matrix
    products), left to right and right to left, and matches the reference backend."""
    from pixelar.nn import DiagonalBiLSTM

    torch.manual_seed(0)
    layer = DiagonalBiLSTM(4, 3, context_channels=1)
    x = torch.randn(2, 5, 6, 4).permute(0, 3, 1, 2)  # channels-last
    image = torch.randn(2, 5, 6, 1).permute(0, 3, 1, 2)
    seen = []
    real = pixelar.ops.diagonal_lstm_scan_image

    def spy(x_gates, w_ss, reverse, bias=None):
        channels_last = x_gates.is_contiguous(memory_format=torch.channels_last)
        seen.append((channels_last, reverse, bias is not None))
        return real(x_gates, w_ss, reverse, bias=bias)

    pixelar.ops.diagonal_lstm_scan_image = spy
    try:
        out = layer(x, image)
    finally:
        pixelar.ops.diagonal_lstm_scan_image = real
    # the 1x1 convolutions' biases go to the op (added as the kernel reads the gates)
    assert seen == [(True, False, True), (True, True, True)]
    with pixelar.ops.backend("reference"):
        ref = layer(x.contiguous(), image.contiguous())
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    grads = torch.autograd.grad(out.square().sum(), list(layer.parameters()))
    with pixelar.ops.backend("reference"):
        ref_out = layer(x.contiguous(), image.contiguous())
        grads_ref = torch.autograd.grad(ref_out.square().sum(), list(layer.parameters()))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **TOL[torch.float32])
