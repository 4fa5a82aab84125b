"""pixelar.ops.conv_residual_block (PixelCNN's residual block as one op): the C++ kernel
against the PyTorch reference (forward, the saved ReLU outputs, every gradient) on odd,
non-square and non-contiguous inputs in fp32 and fp64, gradcheck in fp64, opcheck, input
errors, torch.compile, and the block module against its composite of masked convolutions.
Tolerances: conftest.TOL (fp64 rtol 1e-9, fp32 rtol 3e-4 / atol 1e-4).
(The CUDA kernel: tests/test_cuda_emulation.py.)"""

import pytest
import torch
import torch.nn.functional as F

import pixelar
from pixelar.nn.blocks import ConvResidualBlock
from pixelar.ops.conv_residual_block import conv_residual_block_ref

from conftest import TOL, cpp_built

pytestmark = pytest.mark.skipif(not cpp_built(), reason="C++ extension not built")

# (B, F, h, R, W): odd and non-square, one pixel, one row / column, the paper's size, h not
# a multiple of the vector width, F < h
SHAPES = [
    (2, 6, 3, 5, 7),
    (1, 4, 2, 1, 1),
    (3, 5, 9, 1, 6),
    (2, 7, 5, 6, 1),
    (2, 32, 16, 9, 11),
    (1, 20, 12, 4, 3),
]


def inputs(B, F_, h, R, W, dtype, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F_, R, W, generator=g, dtype=dtype)
    weights = [
        torch.randn(F_, h, generator=g, dtype=dtype) / F_**0.5,
        torch.randn(h, generator=g, dtype=dtype) * 0.5,
        torch.randn(5, h, h, generator=g, dtype=dtype) / (5 * h) ** 0.5,
        torch.randn(h, generator=g, dtype=dtype) * 0.5,
        torch.randn(h, F_, generator=g, dtype=dtype) / h**0.5,
        torch.randn(F_, generator=g, dtype=dtype) * 0.5,
    ]
    return [t.requires_grad_(requires_grad) for t in [x] + weights]


def run(backend, args, grad_out):
    with pixelar.ops.backend(backend):
        out = pixelar.ops.conv_residual_block(*args)
    grads = torch.autograd.grad(out, args, grad_out)
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpp_matches_reference(shape, dtype):
    args = inputs(*shape, dtype, requires_grad=True)
    grad_out = torch.randn(shape[0], shape[1], shape[3], shape[4], dtype=dtype)
    out, grads = run("cpp", args, grad_out)
    ref, grads_ref = run("reference", args, grad_out)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    for name, g, g_ref in zip(("x", "wr", "br", "wc", "bc", "we", "be"), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **TOL[dtype], msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saved_relu_outputs(dtype):
    x, wr, br, wc, bc, we, be = inputs(2, 6, 5, 4, 7, dtype)
    out, r2, r3 = torch.ops.pixelar.conv_residual_block(x, wr, br, wc, bc, we, be)
    from pixelar.ops.conv_residual_block import conv3x3_kernel

    r2_ref = F.relu(F.conv2d(F.relu(x), wr.t()[:, :, None, None], br))
    r3_ref = F.relu(F.conv2d(r2_ref, conv3x3_kernel(wc), bc, padding=1))
    for t, ref in ((r2, r2_ref), (r3, r3_ref)):
        assert t.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(t, ref, **TOL[dtype])


def test_non_contiguous_inputs():
    dtype = torch.float64
    x, wr, br, wc, bc, we, be = inputs(2, 6, 4, 5, 3, dtype)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # (B, F, R, W) with W-major rows
    wr_nc = wr.t().contiguous().t()
    wc_nc = wc.transpose(1, 2).contiguous().transpose(1, 2)
    we_nc = we.t().contiguous().t()
    br_nc = torch.stack([br, br], 1)[:, 0]
    assert not (x_nc.is_contiguous() or wr_nc.is_contiguous() or wc_nc.is_contiguous())
    args = [t.requires_grad_() for t in (x_nc, wr_nc, br_nc, wc_nc, bc, we_nc, be)]
    grad_out = torch.randn(8, 2, 6, 5, dtype=dtype).permute(1, 2, 3, 0)[..., :3]
    out, grads = run("cpp", args, grad_out)
    ref, grads_ref = run("reference", args, grad_out)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **TOL[dtype])


def test_gradcheck_and_opcheck():
    args = inputs(2, 4, 3, 3, 4, torch.float64, requires_grad=True)
    with pixelar.ops.backend("cpp"):
        assert torch.autograd.gradcheck(pixelar.ops.conv_residual_block, args)
    torch.library.opcheck(torch.ops.pixelar.conv_residual_block.default, args)
    out, r2, r3 = torch.ops.pixelar.conv_residual_block(*args)
    x, wr, _, wc, _, we, _ = (t.detach() for t in args)
    grad = torch.randn_like(out)
    torch.library.opcheck(
        torch.ops.pixelar.conv_residual_block_backward.default,
        (grad, x, wr, wc, we, r2.detach(), r3.detach()),
    )


@pytest.mark.parametrize("where", ["w_reduce", "w_conv"])
def test_nan_weights_propagate_as_in_the_reference(where):
    """A NaN is not swallowed by a ReLU (relu(NaN) = NaN, as torch.relu): the same outputs
    are NaN as in the reference."""
    args = inputs(1, 6, 3, 4, 5, torch.float64)
    index = {"w_reduce": (1, (2, 0)), "w_conv": (3, (1, 0, 2))}[where]
    args[index[0]][index[1]] = float("nan")
    with pixelar.ops.backend("cpp"):
        out = pixelar.ops.conv_residual_block(*args)
    ref = conv_residual_block_ref(*args)
    assert ref.isnan().any()
    torch.testing.assert_close(out, ref, equal_nan=True, **TOL[torch.float64])


def test_nan_input_reaches_exactly_the_pixels_that_read_it():
    """A NaN at pixel (r, c) of x makes out NaN at (r, c) and where the 3x3's open taps read
    it: (r, c + 1) and (r + 1, c - 1 .. c + 1). (The reference's dense conv2d also multiplies
    the closed taps' zeros by it, 0 * NaN = NaN, and so spreads it to pixels that do not
    depend on (r, c); the kernel computes the open taps only.)"""
    args = inputs(1, 6, 3, 4, 5, torch.float64)
    args[0][0, 1, 1, 2] = float("nan")
    with pixelar.ops.backend("cpp"):
        out = pixelar.ops.conv_residual_block(*args)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    for r, c in ((1, 2), (1, 3), (2, 1), (2, 2), (2, 3)):
        expected[r, c] = True
    assert torch.equal(out[0].isnan().any(0), expected)
    finite = ~expected.expand_as(out[0])
    ref = conv_residual_block_ref(*args)
    torch.testing.assert_close(out[0][finite & ~ref[0].isnan()], ref[0][finite & ~ref[0].isnan()])


def test_empty_batch_and_image():
    for shape in ((0, 4, 2, 3, 3), (2, 4, 2, 0, 3)):
        args = inputs(*shape, torch.float64, requires_grad=True)
        out, grads = run("cpp", args, torch.ones(shape[0], shape[1], shape[3], shape[4]).double())
        ref, grads_ref = run("reference", args, torch.ones_like(out))
        assert out.shape == ref.shape
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, **TOL[torch.float64])


def test_rejects_bad_inputs():
    x, wr, br, wc, bc, we, be = inputs(2, 6, 3, 4, 5, torch.float32)
    op = pixelar.ops.conv_residual_block
    cases = [
        ((x[0], wr, br, wc, bc, we, be), "x must have 4 dimensions"),
        ((x, wr[:5], br, wc, bc, we, be), "w_reduce"),
        ((x, wr, br[:2], wc, bc, we, be), "b_reduce"),
        ((x, wr, br, wc[:4], bc, we, be), "w_conv"),
        ((x, wr, br, wc, bc, we.t(), be), "w_expand"),
        ((x, wr, br, wc, bc, we, be[:1]), "b_expand"),
        ((x, wr.double(), br, wc, bc, we, be), "dtype"),
        ((x.long(), wr, br, wc, bc, we, be), "x must be a floating-point"),
    ]
    for args, message in cases:
        with pytest.raises((ValueError, RuntimeError), match=message):
            op(*args)
    raw = torch.ops.pixelar.conv_residual_block
    with pytest.raises(RuntimeError, match="w_conv must have shape"):
        raw(x, wr, br, wc[:4], bc, we, be)
    with pytest.raises(RuntimeError, match="b_expand must have shape"):
        raw(x, wr, br, wc, bc, we, be[:2])


def test_torch_compile_fullgraph():
    args = inputs(2, 6, 3, 4, 5, torch.float32, requires_grad=True)

    def f(*a):
        return (pixelar.ops.conv_residual_block(*a) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(*args)
    grads = torch.autograd.grad(out, args)
    out_ref = f(*args)
    grads_ref = torch.autograd.grad(out_ref, args)
    torch.testing.assert_close(out, out_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("colors", [1, 3])
def test_block_is_its_masked_convolutions(colors):
    """ConvResidualBlock (the op) equals the block written with its MaskedConv2d layers, with
    the colour-group masks of a 3-channel image too, and so do the gradients."""
    torch.manual_seed(0)
    block = ConvResidualBlock(6, colors).double()
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64)

    def composite(x):
        y = block.reduce(F.relu(x))
        y = block.conv(F.relu(y))
        return x + block.expand(F.relu(y))

    params = list(block.parameters())
    out = block(x)
    ref = composite(x)
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, params, g)
    grads_ref = torch.autograd.grad(ref, params, g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_reference_backend_runs_the_composite():
    args = inputs(1, 4, 2, 3, 3, torch.float64)
    with pixelar.ops.backend("reference"):
        out = pixelar.ops.conv_residual_block(*args)
    torch.testing.assert_close(out, conv_residual_block_ref(*args), rtol=0, atol=0)
