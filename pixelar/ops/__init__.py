"""pixelar's ops: each a wrapper that checks its inputs and runs the backend in force, with
its pure-PyTorch reference ``<op>_ref`` beside it.

Backends: ``set_backend(name)`` / ``with backend(name):`` where name is "auto",
"reference", "cpp", "cuda" or "triton"; a backend that cannot run an op on the tensor's
device raises ``BackendUnavailableError`` (a RuntimeError). The table of implementations
and the one "auto" rule: ``pixelar.ops._backend``.
"""

from ._backend import BACKENDS, BackendUnavailableError, backend, get_backend, set_backend
from .conv_residual_block import conv_residual_block, conv_residual_block_ref
from .diagonal_lstm_scan import diagonal_lstm_scan, diagonal_lstm_scan_ref
from .diagonal_lstm_scan_image import diagonal_lstm_scan_image, diagonal_lstm_scan_image_ref
from .lstm_cell import lstm_cell_ref
from .nade_forward import nade_forward, nade_forward_ref
from .nade_sample import nade_sample, nade_sample_ref, rnade_sample, rnade_sample_ref
from .pixel_network_sample import (
    pixel_network_sample_state,
    pixel_network_sample_step,
    pixel_network_sample_step_ref,
)
from .row_lstm_scan import row_lstm_scan, row_lstm_scan_ref
from .skew import skew, skew_ref, unskew

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "backend",
    "get_backend",
    "set_backend",
    "conv_residual_block",
    "conv_residual_block_ref",
    "diagonal_lstm_scan",
    "diagonal_lstm_scan_ref",
    "diagonal_lstm_scan_image",
    "diagonal_lstm_scan_image_ref",
    "row_lstm_scan",
    "row_lstm_scan_ref",
    "nade_forward",
    "nade_forward_ref",
    "lstm_cell_ref",
    "skew",
    "skew_ref",
    "unskew",
    "nade_sample",
    "nade_sample_ref",
    "rnade_sample",
    "rnade_sample_ref",
    "pixel_network_sample_state",
    "pixel_network_sample_step",
    "pixel_network_sample_step_ref",
]
