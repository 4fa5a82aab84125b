"""Non-finite inputs: every C++ op gives NaN exactly where its reference does, and the
reference's values elsewhere (fp32 uses the kernels' own polynomial exp / tanh, whose clamps
must not turn NaN into a number; +-inf must saturate as sigmoid and tanh do)."""

import pytest
import torch

import pixelar
from pixelar._extension import has_kernel
from pixelar.ops import (
    diagonal_lstm_scan,
    diagonal_lstm_scan_ref,
    nade_forward,
    nade_forward_ref,
    row_lstm_scan,
    row_lstm_scan_ref,
)

from conftest import TOL

DTYPES = [torch.float32, torch.float64]


def assert_same_nan_and_values(out, ref):
    assert torch.equal(out.isnan(), ref.isnan()), (
        f"NaN at {out.isnan().sum().item()} places, reference {ref.isnan().sum().item()}"
    )
    assert out.isnan().any(), "the NaN input reached no output: the test checks nothing"
    torch.testing.assert_close(out, ref.to(out.dtype), equal_nan=True, **TOL[out.dtype])


def scan_inputs(kind, dtype, B=2, H=3, R=4, W=5):
    S = R + W - 1 if kind == "diagonal" else W
    taps = 2 if kind == "diagonal" else 3
    x = torch.randn(B, 4 * H, R, S, dtype=dtype)
    w = torch.randn(4 * H, H, taps, dtype=dtype) / H
    return x, w


SCANS = {
    "diagonal": (diagonal_lstm_scan, diagonal_lstm_scan_ref),
    "row": (row_lstm_scan, row_lstm_scan_ref),
}


def run_scan(kind, x, w):
    """(C++ h, c), (reference h, c) of scan `kind` on x_gates x, weights w."""
    op, ref_fn = SCANS[kind]
    if not has_kernel(f"{kind}_lstm_scan", "CPU"):
        pytest.skip("pixelar._C not built")
    with pixelar.ops.backend("cpp"):
        out = op(x, w)
    return out, ref_fn(x, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(SCANS))
def test_scan_propagates_nan_like_the_reference(kind, dtype):
    x, w = scan_inputs(kind, dtype)
    x[1, 5, 1, 2] = float("nan")  # inside the image for both layouts (row 1, skewed col 2)
    (h, c), (h_ref, c_ref) = run_scan(kind, x, w)
    assert_same_nan_and_values(h, h_ref)
    assert_same_nan_and_values(c, c_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(SCANS))
def test_scan_saturates_infinite_gates_like_the_reference(kind, dtype):
    x, w = scan_inputs(kind, dtype)
    x[0, :, 2, 3] = torch.tensor([float("inf"), -float("inf")]).repeat(6).to(dtype)
    (h, c), (h_ref, c_ref) = run_scan(kind, x, w)
    assert not h_ref.isnan().any()
    torch.testing.assert_close(h, h_ref, **TOL[dtype])
    torch.testing.assert_close(c, c_ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["W", "c", "x"])
def test_nade_propagates_nan_like_the_reference(where, dtype):
    if not has_kernel("nade_forward", "CPU"):
        pytest.skip("pixelar._C not built")
    B, D, Hd = 3, 40, 20
    x = torch.randint(0, 2, (B, D)).to(dtype)
    x[:, 6] = 1
    W = torch.randn(Hd, D, dtype=dtype) / D**0.5
    c = torch.randn(Hd, dtype=dtype)
    V = torch.randn(D, 1, Hd, dtype=dtype) / Hd**0.5
    b = torch.randn(D, 1, dtype=dtype)
    {
        "W": lambda: W.__setitem__((4, 6), float("nan")),
        "c": lambda: c.__setitem__(7, float("nan")),
        "x": lambda: x.__setitem__((1, 6), float("nan")),
    }[where]()
    with pixelar.ops.backend("cpp"):
        out = nade_forward(x, W, c, V, b)
    assert_same_nan_and_values(out, nade_forward_ref(x, W, c, V, b))
