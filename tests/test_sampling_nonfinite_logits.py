"""One rule for non-finite logits in every sampler: a draw that would read a NaN or infinite
logit raises ValueError(NONFINITE_MESSAGE) naming the smallest such dimension (raster
order), with the same text from the fast samplers (C++ kernels, cached Python samplers),
the naive samplers and the op references; dimensions given by the condition are not drawn
and not checked."""

import pytest
import torch

import pixelar
from pixelar.models import FVSBN, NADE, RNADE, IndependentPixels, MarkovPixels, PixelCNN, PixelRNN
from pixelar.ops.draw import NONFINITE_MESSAGE

from conftest import cpp_built

NAN, INF = float("nan"), float("inf")


def _errors(model, n=3, condition=None):
    """The ValueError messages of fast and naive sampling (both must raise)."""
    messages = []
    for fast in (True, False):
        g = torch.Generator().manual_seed(0)
        kwargs = {} if condition is None else dict(condition=condition)
        with pytest.raises(ValueError) as err:
            model.sample(n, fast=fast, generator=g, **kwargs)
        messages.append(str(err.value))
    return messages


def _pixel_network(kind, levels, dtype=torch.float64):
    torch.manual_seed(0)
    shape = (3, 3, 4) if levels > 2 else (1, 3, 4)
    if kind == "cnn":
        model = PixelCNN(shape, levels, num_layers=1, hidden=4, head_hidden=8)
    else:
        model = PixelRNN(shape, levels, layer=kind, num_layers=1, hidden=3, head_hidden=8)
    return model.to(dtype)


@pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")
@pytest.mark.parametrize("kind", ["cnn", "row", "diagonal"])
@pytest.mark.parametrize("levels", [2, 5])
@pytest.mark.parametrize("bad", [NAN, INF])
def test_pixel_networks_raise_the_same_error_fast_and_naive(kind, levels, bad):
    """W3: a NaN or +inf logit (fp64, 5 levels) gave all 4s from the fast sampler and all 0s
    from the naive one."""
    model = _pixel_network(kind, levels)
    with torch.no_grad():
        model.head.out.bias[0] = bad  # channel 0 of every pixel
    fast, naive = _errors(model)
    assert fast == naive == NONFINITE_MESSAGE.format(d=0)


@pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")
@pytest.mark.parametrize("kind", ["cnn", "row", "diagonal"])
def test_pixel_networks_skip_what_the_condition_gives(kind):
    """Channel 0 of every pixel has a NaN logit; the condition gives the whole first row and
    channel 0 of pixel (1, 0): the first drawn bad dimension is channel 0 of pixel (1, 1)."""
    model = _pixel_network(kind, 5)
    C, H, W = model.image_shape
    with torch.no_grad():
        model.head.out.bias[0] = NAN
    cond = torch.full((3, C, H, W), -1, dtype=torch.long)
    cond[:, :, 0] = 2
    cond[:, 0, 1, 0] = 1
    fast, naive = _errors(model, condition=cond)
    assert fast == naive == NONFINITE_MESSAGE.format(d=(1 * W + 1) * C + 0)
    # with every channel-0 value given, nothing bad is drawn
    cond = torch.full((3, C, H, W), -1, dtype=torch.long)
    cond[:, 0] = 3
    for fast in (True, False):
        x = model.sample(3, fast=fast, condition=cond)
        assert (x[:, 0] == 3).all()


def _nade(n_dims=12):
    torch.manual_seed(0)
    return NADE((1, 3, n_dims // 3), hidden=5)


@pytest.mark.parametrize(
    "make,poison,dim",
    [
        (_nade, lambda m: m.b.__setitem__((4, 0), INF), 4),
        (_nade, lambda m: m.V.__setitem__((6, 0, 2), NAN), 6),
        (lambda: FVSBN((1, 3, 4)), lambda m: m.bias.__setitem__(5, NAN), 5),
        (
            lambda: MarkovPixels((1, 3, 4), levels=3, order=1),
            lambda m: m.table.__setitem__(m.offsets[7].item(), INF),
            7,
        ),
        (
            lambda: MarkovPixels((1, 3, 4), levels=2, order=2),
            lambda m: m.table.__setitem__(m.offsets[3].item(), NAN),
            3,
        ),
        (
            lambda: IndependentPixels((2, 3, 4), levels=4),
            lambda m: m.logits.__setitem__((1, 2, 1, 0), NAN),
            (2 * 4 + 1) * 2 + 1,
        ),
        (
            lambda: IndependentPixels((1, 3, 4), levels=2),
            lambda m: m.logits.__setitem__((0, 1, 3), -INF),
            7,
        ),
    ],
)
def test_models_raise_the_same_error_fast_and_naive(make, poison, dim):
    model = make()
    if isinstance(model, NADE) and not cpp_built():
        pytest.skip("NADE's fast sampler runs the C++ op")
    with torch.no_grad():
        poison(model)
    fast, naive = _errors(model, n=4)
    assert fast == naive == NONFINITE_MESSAGE.format(d=dim)


@pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")
def test_rnade_raises_the_same_error_fast_and_naive():
    torch.manual_seed(0)
    model = RNADE(num_inputs=4, hidden=5, components=2)
    with torch.no_grad():
        model.b[2, 5] = NAN  # a log_sigma of dimension 2
    messages = []
    for fast in (True, False):
        with pytest.raises(ValueError) as err:
            model.sample(5, fast=fast)
        messages.append(str(err.value))
    assert messages[0] == messages[1] == NONFINITE_MESSAGE.format(d=2)


@pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nade_kernel_reports_the_smallest_bad_dimension_over_all_tiles(dtype):
    """Images in several tiles of 8 (and threads) meet NaN at different dimensions: the
    kernel reports the smallest, as the reference does."""
    n, D, Hd = 21, 10, 6
    g = torch.Generator().manual_seed(0)
    W, c = torch.randn(Hd, D, generator=g, dtype=dtype), torch.randn(Hd, generator=g, dtype=dtype)
    V, b = (
        torch.randn(D, 1, Hd, generator=g, dtype=dtype),
        torch.randn(D, 1, generator=g, dtype=dtype),
    )
    b[2, 0], b[7, 0] = NAN, NAN
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    cond = torch.full((n, D), -1, dtype=torch.long)
    cond[:17, 2] = 1  # only images 17..20 (the third tile) draw dimension 2
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        messages = []
        for name in ("cpp", "reference"):
            with pixelar.ops.backend(name), pytest.raises(ValueError) as err:
                pixelar.ops.nade_sample(u, cond, W, c, V, b)
            messages.append(str(err.value))
    finally:
        torch.set_num_threads(threads)
    assert messages[0] == messages[1] == NONFINITE_MESSAGE.format(d=2)
    cond[:, 2] = 0
    for name in ("cpp", "reference"):
        with pixelar.ops.backend(name), pytest.raises(ValueError, match="dimension 7 "):
            pixelar.ops.nade_sample(u, cond, W, c, V, b)


@pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")
def test_step_op_over_a_range_names_the_raster_dimension():
    """pixel_network_sample_step from pixel 5 on (mid-row) reports dimension 5 * C."""
    model = _pixel_network("row", 4)
    with torch.no_grad():
        model.head.out.bias[:] = INF
    layer, weights = model.sampling_kind, model.sampling_weights()
    C, H, W = model.image_shape
    messages = []
    for name in ("cpp", "reference"):
        x = torch.zeros(2, C, H, W, dtype=torch.long)
        state = pixelar.ops.pixel_network_sample_state(layer, weights, 2, (C, H, W))
        u = torch.rand(x.shape, dtype=torch.float64)
        with pixelar.ops.backend(name), pytest.raises(ValueError) as err:
            pixelar.ops.pixel_network_sample_step(x, state, u, None, weights, layer, 4, 5, 9)
        messages.append(str(err.value))
    assert messages[0] == messages[1] == NONFINITE_MESSAGE.format(d=5 * C)
