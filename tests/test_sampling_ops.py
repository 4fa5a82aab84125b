"""The sampling ops (pixel_network_sample_step, nade_sample, rnade_sample) against their
PyTorch references, from arbitrary states and over ranges that start mid-row and cross row
ends; input checks; schema / fake-kernel checks (torch.library.opcheck)."""
import pytest
import torch

import pixelar
from conftest import cpp_built, report_diff
from model_zoo import pixel_step_inputs

pytestmark = pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")

MODELS = ["pixelcnn", "pixelrnn_row", "pixelrnn_diagonal"]


step_inputs = pixel_step_inputs  # tests/model_zoo.py


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("image_shape,levels", [((1, 3, 5), 2), ((3, 3, 4), 4)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("start,stop", [(0, 1), (3, 4), (4, 5), (6, 12)])
def test_step_op_matches_reference_step(name, image_shape, levels, dtype, start, stop):
    layer, weights, state, x, u, cond = step_inputs(name, image_shape, levels, dtype)
    x_ref, state_ref = x.clone(), [s.clone() for s in state]
    pixelar.ops.pixel_network_sample_step(x, state, u, cond, weights, layer, levels,
                                          start, stop)
    pixelar.ops.pixel_network_sample_step_ref(x_ref, state_ref, u, cond, weights, layer,
                                              levels, start, stop)
    assert torch.equal(x, x_ref)
    tol = (dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64
           else dict(rtol=1e-4, atol=1e-5))
    for i, (s, s_ref) in enumerate(zip(state, state_ref)):
        report_diff(f"{name} state[{i}]", s, s_ref)
        torch.testing.assert_close(s, s_ref, **tol)


def test_step_op_writes_only_its_pixels():
    layer, weights, state, x, u, _ = step_inputs("pixelrnn_row", (1, 3, 5), 2, torch.float64)
    x[:] = 7  # an out-of-range marker: the step must overwrite exactly pixels 5..9
    pixelar.ops.pixel_network_sample_step(x, state, u, None, weights, layer, 2, 5, 10)
    flat = x.flatten(2)
    assert (flat[:, :, 5:10] < 2).all()
    assert (flat[:, :, :5] == 7).all() and (flat[:, :, 10:] == 7).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nade_sample_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    n, D, Hd = 11, 13, 9  # n not a multiple of the kernel's tile of 8
    W, c = (torch.randn(Hd, D, generator=g, dtype=dtype),
            torch.randn(Hd, generator=g, dtype=dtype))
    V, b = (torch.randn(D, 1, Hd, generator=g, dtype=dtype),
            torch.randn(D, 1, generator=g, dtype=dtype))
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    cond = torch.randint(0, 2, (n, D), generator=g)
    cond[torch.rand(n, D, generator=g) < 0.7] = -1
    for cnd in (None, cond):
        out = pixelar.ops.nade_sample(u, cnd, W, c, V, b)
        ref = pixelar.ops.nade_sample_ref(u, cnd, W, c, V, b)
        assert out.dtype == torch.int64 and torch.equal(out, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rnade_sample_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    n, D, Hd, K = 10, 6, 7, 3
    W, c = (torch.randn(Hd, D, generator=g, dtype=dtype),
            torch.randn(Hd, generator=g, dtype=dtype))
    V, b = (torch.randn(D, 3 * K, Hd, generator=g, dtype=dtype),
            torch.randn(D, 3 * K, generator=g, dtype=dtype))
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    out = pixelar.ops.rnade_sample(u, z, W, c, V, b, -7.0, 7.0)
    ref = pixelar.ops.rnade_sample_ref(u, z, W, c, V, b, -7.0, 7.0)
    report_diff("rnade_sample", out, ref)
    tol = (dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64
           else dict(rtol=1e-4, atol=1e-4))
    torch.testing.assert_close(out, ref, **tol)


def test_bad_inputs_raise_value_error():
    layer, weights, state, x, u, cond = step_inputs("pixelcnn", (1, 3, 5), 2, torch.float64)
    step = pixelar.ops.pixel_network_sample_step
    with pytest.raises(ValueError, match="layer"):
        step(x, state, u, None, weights, "lstm", 2, 0, 1)
    with pytest.raises(ValueError, match="u must be float64"):
        step(x, state, u.float(), None, weights, layer, 2, 0, 1)
    with pytest.raises(ValueError, match="stop"):
        step(x, state, u, None, weights, layer, 2, 0, 16)
    with pytest.raises(ValueError, match=r"state\[0\]"):
        step(x, [state[0][:, :, :1]], u, None, weights, layer, 2, 0, 1)
    with pytest.raises(ValueError, match="cond"):
        step(x, state, u, cond.float(), weights, layer, 2, 0, 1)
    W = torch.zeros(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="V"):
        pixelar.ops.nade_sample(torch.rand(2, 5, dtype=torch.float64), None, W, W[:, 0],
                                torch.zeros(5, 2, 4, dtype=torch.float64),
                                torch.zeros(5, 2, dtype=torch.float64))
    # RNADE with no mixture component (V: (D, 0, Hd)): an error, from the wrapper and from
    # the raw op (which once read past its buffers)
    u = torch.rand(2, 5, dtype=torch.float64)
    rnade_args = (u, torch.randn_like(u), W, W[:, 0], torch.zeros(5, 0, 4, dtype=torch.float64),
                  torch.zeros(5, 0, dtype=torch.float64), -5.0, 5.0)
    with pytest.raises(ValueError, match="K >= 1"):
        pixelar.ops.rnade_sample(*rnade_args)
    with pytest.raises(RuntimeError, match="K >= 1"):
        torch.ops.pixelar.rnade_sample(*rnade_args)


def test_opcheck():
    layer, weights, state, x, u, cond = step_inputs("pixelrnn_diagonal", (1, 2, 3), 2,
                                                    torch.float64)
    torch.library.opcheck(torch.ops.pixelar.pixel_network_sample_step,
                          (x, state, u, cond, weights, layer, 2, 0, 6))
    g = torch.Generator().manual_seed(0)
    W, c = torch.randn(4, 5, generator=g), torch.randn(4, generator=g)
    V, b = torch.randn(5, 1, 4, generator=g), torch.randn(5, 1, generator=g)
    u = torch.rand(3, 5, generator=g, dtype=torch.float64)
    torch.library.opcheck(torch.ops.pixelar.nade_sample, (u, None, W, c, V, b))
    V3, b3 = torch.randn(5, 6, 4, generator=g), torch.randn(5, 6, generator=g)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64)
    torch.library.opcheck(torch.ops.pixelar.rnade_sample, (u, z, W, c, V3, b3, -7.0, 7.0))


# ---- CUDA kernels against the CPU kernels (GPU only) -----------------------------------
# Same inputs on both devices. The draws use the same helpers (pixelar/sampling_math.h,
# float64 inverse CDF) and the models' values differ only by the rounding of differently
# ordered sums, so float64 samples are equal; in float32 a value can differ only where a
# uniform falls within float rounding of a threshold (rare: a small fraction is allowed),
# and the caches are compared where the images agree.

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def require_cuda_kernel(op):
    if not pixelar._extension.has_kernel(op, "CUDA"):
        pytest.skip(f"pixelar was built without CUDA kernels (no CUDA kernel for {op})")


def assert_samples_agree(out, ref, dtype, what):
    assert out.dtype == ref.dtype and out.shape == ref.shape
    differ = (out.cpu() != ref).sum().item()
    if dtype == torch.float64:
        assert differ == 0, f"{what}: {differ} of {ref.numel()} values differ"
    else:
        assert differ <= max(1, ref.numel() // 50), f"{what}: {differ} of {ref.numel()} differ"
    return differ == 0


@needs_cuda
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("image_shape,levels", [((1, 3, 5), 2), ((3, 3, 4), 4)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_cond", [False, True])
@pytest.mark.parametrize("start,stop", [(0, 1), (4, 5), (6, 12), (0, None)])
def test_cuda_step_op_matches_cpu_op(name, image_shape, levels, dtype, with_cond, start, stop):
    require_cuda_kernel("pixel_network_sample_step")
    layer, weights, state, x, u, cond = step_inputs(name, image_shape, levels, dtype, batch=5)
    cond = cond if with_cond else None
    stop = image_shape[1] * image_shape[2] if stop is None else stop
    dev = torch.device("cuda")
    xg, ug = x.to(dev), u.to(dev)
    state_g, weights_g = [s.to(dev) for s in state], [w.to(dev) for w in weights]
    cond_g = None if cond is None else cond.to(dev)
    with pixelar.ops.backend("cpp"):
        pixelar.ops.pixel_network_sample_step(x, state, u, cond, weights, layer, levels,
                                              start, stop)
    with pixelar.ops.backend("auto"):  # a CUDA tensor: the CUDA kernel
        pixelar.ops.pixel_network_sample_step(xg, state_g, ug, cond_g, weights_g, layer,
                                              levels, start, stop)
    torch.cuda.synchronize()
    if not assert_samples_agree(xg, x, dtype, f"{name} x"):
        return  # float32, a draw at a threshold: the caches legitimately differ after it
    tol = (dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64
           else dict(rtol=1e-4, atol=1e-5))
    for i, (s, s_ref) in enumerate(zip(state_g, state)):
        report_diff(f"{name} state[{i}] cuda vs cpu", s.cpu(), s_ref)
        torch.testing.assert_close(s.cpu(), s_ref, **tol)


def nade_inputs(dtype, n, D, Hd, O, seed=0):
    g = torch.Generator().manual_seed(seed)
    W, c = (torch.randn(Hd, D, generator=g, dtype=dtype),
            torch.randn(Hd, generator=g, dtype=dtype))
    V, b = (torch.randn(D, O, Hd, generator=g, dtype=dtype) / Hd ** 0.5,
            torch.randn(D, O, generator=g, dtype=dtype))
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    cond = torch.randint(0, 2, (n, D), generator=g)
    cond[torch.rand(n, D, generator=g) < 0.7] = -1
    return W, c, V, b, u, z, cond


# (n, D, Hd): odd small sizes; Hd above the kernel's 512 threads (two units per thread)
NADE_SIZES = [(11, 13, 9), (37, 50, 600)]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,D,Hd", NADE_SIZES)
@pytest.mark.parametrize("with_cond", [False, True])
def test_cuda_nade_sample_matches_cpu_op(dtype, n, D, Hd, with_cond):
    require_cuda_kernel("nade_sample")
    W, c, V, b, u, _, cond = nade_inputs(dtype, n, D, Hd, 1)
    cond = cond if with_cond else None
    with pixelar.ops.backend("cpp"):
        ref = pixelar.ops.nade_sample(u, cond, W, c, V, b)
    args = [None if t is None else t.cuda() for t in (u, cond, W, c, V, b)]
    with pixelar.ops.backend("auto"):
        out = pixelar.ops.nade_sample(*args)
    assert out.is_cuda
    assert_samples_agree(out, ref, dtype, "nade_sample")
    if cond is not None:
        given = cond >= 0
        assert torch.equal(out.cpu()[given], cond[given])


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,D,Hd,K", [(10, 6, 7, 3), (33, 20, 600, 5)])
def test_cuda_rnade_sample_matches_cpu_op(dtype, n, D, Hd, K):
    require_cuda_kernel("rnade_sample")
    W, c, V, b, u, z, _ = nade_inputs(dtype, n, D, Hd, 3 * K)
    with pixelar.ops.backend("cpp"):
        ref = pixelar.ops.rnade_sample(u, z, W, c, V, b, -7.0, 7.0)
    with pixelar.ops.backend("auto"):
        out = pixelar.ops.rnade_sample(*(t.cuda() for t in (u, z, W, c, V, b)), -7.0, 7.0)
    assert out.is_cuda and out.dtype == dtype
    report_diff("rnade_sample cuda vs cpu", out.cpu(), ref)
    if dtype == torch.float64:
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-10, atol=1e-10)
    else:  # a component choice at a threshold changes that value: allow a few
        close = torch.isclose(out.cpu(), ref, rtol=1e-4, atol=1e-4)
        assert (~close).sum().item() <= max(1, ref.numel() // 50)


@needs_cuda
def test_cuda_kernels_check_devices_and_dtypes():
    require_cuda_kernel("nade_sample")
    require_cuda_kernel("pixel_network_sample_step")
    W, c, V, b, u, z, _ = nade_inputs(torch.float32, 3, 5, 4, 1)
    ug, Wg, cg, Vg, bg = (t.cuda() for t in (u, W, c, V, b))
    with pytest.raises(RuntimeError, match="W must be a CUDA tensor"):
        torch.ops.pixelar.nade_sample(ug, None, W, cg, Vg, bg)
    with pytest.raises(RuntimeError, match="u must be Double"):
        torch.ops.pixelar.nade_sample(ug.float(), None, Wg, cg, Vg, bg)
    with pytest.raises(RuntimeError, match="c must have the dtype|c must be Float"):
        torch.ops.pixelar.nade_sample(ug, None, Wg, cg.double(), Vg, bg)
    with pytest.raises(RuntimeError, match=r"V must be \(D, 3K, Hd\)"):
        torch.ops.pixelar.rnade_sample(ug, z.cuda(), Wg, cg, Vg, bg, -7.0, 7.0)
    layer, weights, state, x, u, _ = step_inputs("pixelcnn", (1, 3, 5), 2, torch.float64)
    step = torch.ops.pixelar.pixel_network_sample_step
    wg, sg = [w.cuda() for w in weights], [s.cuda() for s in state]
    with pytest.raises(RuntimeError, match="u must be a CUDA tensor"):
        step(x.cuda(), sg, u, None, wg, layer, 2, 0, 1)
    with pytest.raises(RuntimeError, match=r"state\[0\] must have shape"):
        step(x.cuda(), [sg[0][:, :1]], u.cuda(), None, wg, layer, 2, 0, 1)
    with pytest.raises(RuntimeError, match="stop"):
        step(x.cuda(), sg, u.cuda(), None, wg, layer, 2, 0, 16)
