"""Value checks of the op wrappers, which their references share: uniforms in [0, 1), a
condition below ``levels`` (negative: sample), finite normals and RNADE clamp bounds,
the Diagonal LSTM scan's S >= R; each backend refuses the same inputs with the same
message (ValueError naming the argument)."""

import pytest
import torch

import pixelar
from pixelar.ops import (
    diagonal_lstm_scan,
    diagonal_lstm_scan_ref,
    nade_sample,
    nade_sample_ref,
    pixel_network_sample_step,
    pixel_network_sample_step_ref,
    rnade_sample,
    rnade_sample_ref,
)

from conftest import cpp_built

NAN = float("nan")


def _backends():
    return ["reference"] + (["cpp"] if cpp_built() else [])


def _nade_args(n=3, D=5, Hd=4, O=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(n, D, generator=g, dtype=torch.float64),
        torch.randn(Hd, D, generator=g),
        torch.randn(Hd, generator=g),
        torch.randn(D, O, Hd, generator=g),
        torch.randn(D, O, generator=g),
    )


def _messages(calls):
    """The ValueError message of each call (each must raise one)."""
    out = []
    for call in calls:
        with pytest.raises(ValueError) as err:
            call()
        out.append(str(err.value))
    return out


def _every_way(op, ref, args):
    """Call op under each backend and the reference directly: their messages."""
    calls = []
    for name in _backends():

        def call(name=name):
            with pixelar.ops.backend(name):
                op(*args())

        calls.append(call)
    calls.append(lambda: ref(*args()))
    return _messages(calls)


@pytest.mark.parametrize(
    "cond_value,words", [(7, ["cond", "< 2", "[-1, 7]"]), (99, ["cond", "< 2", "99]"])]
)
def test_nade_sample_refuses_a_condition_out_of_range(cond_value, words):
    """W7: a cond of 7 or 99 was copied into binary images."""

    def args():
        u, W, c, V, b = _nade_args()
        cond = torch.full(u.shape, -1, dtype=torch.long)
        cond[1, 2] = cond_value
        return u, cond, W, c, V, b

    messages = _every_way(nade_sample, nade_sample_ref, args)
    assert len(set(messages)) == 1, messages
    for w in words:
        assert w in messages[0], (w, messages[0])


@pytest.mark.parametrize("bad", [NAN, 5.0, -0.5, 1.0])
def test_nade_sample_refuses_uniforms_outside_0_1(bad):
    """W7: uniforms of NaN or 5.0 were accepted."""

    def args():
        u, W, c, V, b = _nade_args()
        u[2, 3] = bad
        return u, None, W, c, V, b

    messages = _every_way(nade_sample, nade_sample_ref, args)
    assert len(set(messages)) == 1 and "u must hold uniforms in [0, 1)" in messages[0], messages


def _rnade_args(lo=-7.0, hi=7.0, u_bad=None, z_bad=None):
    def args():
        u, W, c, V, b = _nade_args(O=6)
        z = torch.randn(u.shape, dtype=torch.float64)
        if u_bad is not None:
            u[0, 0] = u_bad
        if z_bad is not None:
            z[1, 1] = z_bad
        return u, z, W, c, V, b, lo, hi

    return args


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(lo=NAN, hi=-100.0), ["log_scale_min", "nan"]),
        (dict(lo=-7.0, hi=float("inf")), ["log_scale_max", "inf"]),
        (dict(lo=3.0, hi=-3.0), ["log_scale_min <= log_scale_max", "3.0 > -3.0"]),
        (dict(lo=True, hi=7.0), ["log_scale_min", "True"]),
        (dict(u_bad=NAN), ["u must hold uniforms in [0, 1)"]),
        (dict(z_bad=float("inf")), ["z must be finite"]),
    ],
)
def test_rnade_sample_refuses_bad_bounds_and_noise(kwargs, words):
    """W7: RNADE clamp bounds of (nan, -100) were accepted."""
    messages = _every_way(rnade_sample, rnade_sample_ref, _rnade_args(**kwargs))
    assert len(set(messages)) == 1, messages
    for w in words:
        assert w in messages[0], (w, messages[0])


def _step_args(cond_value=None, u_bad=None, levels=3):
    torch.manual_seed(0)
    model = pixelar.models.PixelCNN((1, 3, 4), levels, num_layers=1, hidden=2, head_hidden=4)
    layer, weights = model.sampling_kind, model.sampling_weights()

    def args():
        x = torch.zeros(2, 1, 3, 4, dtype=torch.long)
        state = pixelar.ops.pixel_network_sample_state(layer, weights, 2, (1, 3, 4))
        u = torch.rand(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        cond = None
        if cond_value is not None:
            cond = torch.full(x.shape, -1, dtype=torch.long)
            cond[0, 0, 1, 1] = cond_value
        if u_bad is not None:
            u[1, 0, 2, 3] = u_bad
        return x, state, u, cond, weights, layer, levels, 0, 12

    return args


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(cond_value=3), ["cond values must be < 3 (negative: sample)", "[-1, 3]"]),
        (dict(cond_value=99), ["cond values must be < 3", "99]"]),
        (dict(u_bad=NAN), ["u must hold uniforms in [0, 1)", "NaN"]),
        (dict(u_bad=5.0), ["u must hold uniforms in [0, 1)", "5.0]"]),
    ],
)
def test_step_op_refuses_bad_condition_and_uniforms(kwargs, words):
    """W7: pixel_network_sample_step copied a cond of 7 or 99 into the images."""
    messages = _every_way(
        pixel_network_sample_step, pixel_network_sample_step_ref, _step_args(**kwargs)
    )
    assert len(set(messages)) == 1, messages
    for w in words:
        assert w in messages[0], (w, messages[0])


def test_diagonal_scan_reference_refuses_s_below_r_like_the_op():
    """W7: the reference returned zeros where the C++ op raises (S < R: no image column)."""
    x = torch.randn(2, 8, 5, 3)  # R = 5 rows, S = 3 < R skewed columns
    w = torch.randn(8, 2, 2)
    messages = _every_way(diagonal_lstm_scan, diagonal_lstm_scan_ref, lambda: (x, w))
    assert len(set(messages)) == 1, messages
    assert "S = R + W - 1 >= R columns (W >= 1), got R = 5, S = 3" in messages[0]
    if cpp_built():  # the C++ op itself says the same (as a RuntimeError)
        with pytest.raises(RuntimeError) as err:
            torch.ops.pixelar.diagonal_lstm_scan(x, w)
        assert messages[0] in str(err.value).replace("pixelar::", "")


@pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")
def test_kernels_called_directly_refuse_the_same_values():
    """torch.ops.pixelar.* (no Python wrapper) refuse the same values with the same words
    (csrc/include/pixelar/checks.h)."""

    def same_words(call, wrapped):
        with pytest.raises(ValueError) as direct:
            call()
        with pytest.raises(ValueError) as python:
            wrapped()
        head = str(python.value).split(", got")[0]
        assert "pixelar::" + head in str(direct.value), (str(direct.value), head)

    u, W, c, V, b = _nade_args()
    cond = torch.full(u.shape, -1, dtype=torch.long)
    cond[0, 0] = 7
    same_words(
        lambda: torch.ops.pixelar.nade_sample(u, cond, W, c, V, b),
        lambda: nade_sample(u, cond, W, c, V, b),
    )
    for bad in (5.0, NAN, -0.5, 1.0, float("-inf")):  # one reduction over u (checks.h)
        u_bad = u.clone()
        u_bad[1, 1] = bad
        same_words(
            lambda: torch.ops.pixelar.nade_sample(u_bad, None, W, c, V, b),
            lambda: nade_sample(u_bad, None, W, c, V, b),
        )
    rnade_cases = [dict(lo=NAN, hi=-100.0), dict(lo=3.0, hi=-3.0)]
    rnade_cases += [dict(z_bad=v) for v in (NAN, float("inf"), float("-inf"))]
    for kwargs in rnade_cases:
        args = _rnade_args(**kwargs)()
        same_words(lambda: torch.ops.pixelar.rnade_sample(*args), lambda: rnade_sample(*args))
    for kwargs in (dict(cond_value=99), dict(u_bad=NAN)):
        args = _step_args(**kwargs)()
        same_words(
            lambda: torch.ops.pixelar.pixel_network_sample_step(*args),
            lambda: pixel_network_sample_step(*args),
        )
