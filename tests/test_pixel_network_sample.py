"""The op pixel_network_sample_step (pixelar/ops/pixel_network_sample.py) against its
PyTorch reference, from arbitrary states and over ranges that start mid-row and cross row
ends; input checks; schema / fake-kernel checks (torch.library.opcheck); the CUDA kernel
against the CPU kernel (GPU only)."""

import pytest
import torch

import pixelar

from conftest import cpp_built, report_diff
from model_zoo import pixel_step_inputs
from sampling_testing import assert_samples_agree, needs_cuda, require_cuda_kernel

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
    pixelar.ops.pixel_network_sample_step(x, state, u, cond, weights, layer, levels, start, stop)
    pixelar.ops.pixel_network_sample_step_ref(
        x_ref, state_ref, u, cond, weights, layer, levels, start, stop
    )
    assert torch.equal(x, x_ref)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
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


def test_opcheck():
    layer, weights, state, x, u, cond = step_inputs(
        "pixelrnn_diagonal", (1, 2, 3), 2, torch.float64
    )
    torch.library.opcheck(
        torch.ops.pixelar.pixel_network_sample_step, (x, state, u, cond, weights, layer, 2, 0, 6)
    )


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
        pixelar.ops.pixel_network_sample_step(
            x, state, u, cond, weights, layer, levels, start, stop
        )
    with pixelar.ops.backend("auto"):  # a CUDA tensor: the CUDA kernel
        pixelar.ops.pixel_network_sample_step(
            xg, state_g, ug, cond_g, weights_g, layer, levels, start, stop
        )
    torch.cuda.synchronize()
    if not assert_samples_agree(xg, x, dtype, f"{name} x"):
        return  # float32, a draw at a threshold: the caches legitimately differ after it
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for i, (s, s_ref) in enumerate(zip(state_g, state)):
        report_diff(f"{name} state[{i}] cuda vs cpu", s.cpu(), s_ref)
        torch.testing.assert_close(s.cpu(), s_ref, **tol)


@needs_cuda
def test_cuda_kernel_checks_devices_and_dtypes():
    require_cuda_kernel("pixel_network_sample_step")
    layer, weights, state, x, u, _ = step_inputs("pixelcnn", (1, 3, 5), 2, torch.float64)
    step = torch.ops.pixelar.pixel_network_sample_step
    wg, sg = [w.cuda() for w in weights], [s.cuda() for s in state]
    with pytest.raises(RuntimeError, match="u must be a CUDA tensor"):
        step(x.cuda(), sg, u, None, wg, layer, 2, 0, 1)
    with pytest.raises(RuntimeError, match=r"state\[0\] must have shape"):
        step(x.cuda(), [sg[0][:, :1]], u.cuda(), None, wg, layer, 2, 0, 1)
    with pytest.raises(RuntimeError, match="stop"):
        step(x.cuda(), sg, u.cuda(), None, wg, layer, 2, 0, 16)
