"""pixelar's Triton kernels, one module per op (each beside its reference in pixelar.ops):

    diagonal_lstm_scan.py  diagonal_lstm_scan_triton   forward + backward
    row_lstm_scan.py       row_lstm_scan_triton        forward + backward
    nade_forward.py        nade_forward_triton         forward + backward
                           nade_sample_triton          binary NADE sampling loop
    _common.py             LSTM cell math (mirror of csrc/include/pixelar/lstm_math.h)
    compile_check.py       python -m pixelar.kernels.compile_check: compile every kernel
                           for sm_80 / sm_90 without a GPU

The names below are imported on first use, so ``import pixelar`` never imports triton.
Run on CPU tensors with TRITON_INTERPRET=1 set before these modules are imported.
"""
import importlib

_EXPORTS = {
    "diagonal_lstm_scan_triton": "diagonal_lstm_scan",
    "row_lstm_scan_triton": "row_lstm_scan",
    "nade_forward_triton": "nade_forward",
    "nade_sample_triton": "nade_forward",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
