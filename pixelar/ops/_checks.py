"""Input checks shared by the op wrappers: every failure is a ValueError that names the
argument, what was expected and what was given."""
import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_float_tensor(op, name, t, ndim):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape "
                         f"{tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")


def check_like(op, name, t, ref_name, ref):
    if t.dtype != ref.dtype:
        raise ValueError(f"{op}: {name} must have the dtype of {ref_name} ({ref.dtype}), "
                         f"got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} must be on the device of {ref_name} "
                         f"({ref.device}), got {t.device}")


def check_shape(op, name, t, expected):
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)}, got "
                         f"{tuple(t.shape)}")
