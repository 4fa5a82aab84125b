"""pixelar's Triton kernels, one module per op (each beside its reference in pixelar.ops):

    diagonal_lstm_scan.py  diagonal_lstm_scan_triton   forward + backward
    row_lstm_scan.py       row_lstm_scan_triton        forward + backward
    nade_forward.py        nade_forward_triton         forward + backward
    conv_residual_block.py conv_residual_block_triton  forward + backward
    _common.py             LSTM cell math (mirror of csrc/include/pixelar/lstm_math.h)
    compile_check.py       python -m pixelar.kernels.compile_check: compile every kernel
                           for sm_80 / sm_90 without a GPU

pixelar.ops imports these modules only when backend "triton" runs (its register calls name
them, pixelar.ops._backend.lazy), so ``import pixelar`` never imports triton. Run on CPU
tensors with TRITON_INTERPRET=1 set before these modules are imported.
"""
