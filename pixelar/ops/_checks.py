"""Input checks shared by the op wrappers: every failure is a ValueError that names the
argument, what was expected and what was given."""

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_float_tensor(op, name, t, ndim):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")


def check_like(op, name, t, ref_name, ref):
    if t.dtype != ref.dtype:
        raise ValueError(
            f"{op}: {name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}"
        )
    if t.device != ref.device:
        raise ValueError(
            f"{op}: {name} must be on the device of {ref_name} ({ref.device}), got {t.device}"
        )


def check_shape(op, name, t, expected):
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def _has_values(t):
    """False for tensors without data to check: meta tensors, and fake tensors while
    tracing (the value checks are data-dependent; the kernels check again)."""
    return t.numel() > 0 and t.device.type != "meta" and not torch.compiler.is_compiling()


def _range_str(t):
    """'[lo, hi]' of a non-empty tensor, NaN shown when present."""
    if t.is_floating_point() and bool(t.isnan().any()):
        return "values including NaN"
    return f"values in [{t.min().item()}, {t.max().item()}]"


def check_uniforms(op, name, u):
    """u holds uniforms: every value in [0, 1) (NaN refused)."""
    if not _has_values(u):
        return
    lo, hi = torch.aminmax(u)  # one pass, no temporaries; NaN gives NaN and fails both
    if not bool((lo >= 0) & (hi < 1)):
        raise ValueError(f"{op}: {name} must hold uniforms in [0, 1), got {_range_str(u)}")


def check_finite(op, name, t):
    if _has_values(t) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{op}: {name} must be finite, got NaN or inf values")


def check_condition(op, name, cond, levels):
    """cond: values < levels; negative entries mean 'sample this dimension'."""
    if _has_values(cond) and int(cond.max()) >= levels:
        raise ValueError(
            f"{op}: {name} values must be < {levels} (negative: sample), got {_range_str(cond)}"
        )


def check_real(op, name, value):
    """A finite real number (int or float, not bool) -> float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value
        or value in (float("inf"), float("-inf"))
    ):
        raise ValueError(f"{op}: {name} must be a finite number, got {value!r}")
    return float(value)
