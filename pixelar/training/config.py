"""What defines a training run and what it builds: ``TrainConfig`` (every setting, stored
in each checkpoint), ``check_config`` (a setting no run can use is a ``TrainingError``
before any work), the model from its name (``resolve_model_class``, ``build_model``) and
the optimizer (``make_optimizer``)."""

import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from .. import data as datasets
from ..data.binarize import binarize_mode
from ..models import MODELS
from . import distributed

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
# Settings a resumed run may change; every other one comes from the checkpoint.
RESUME_OVERRIDES = (
    "epochs",
    "max_steps",
    "max_time",
    "checkpoint_every",
    "eval_batch_size",
    "device",
    "tensorboard",
)
ALIASES = {"independent": "IndependentPixels", "markov": "MarkovPixels"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in each checkpoint)."""

    model: str = "PixelRNN"  # a name of pixelar.models.MODELS (case-insensitive)
    model_args: dict = field(default_factory=dict)  # constructor kwargs besides shape/levels
    data: str = "digits28-binary"  # a name of pixelar.data.DATASETS
    data_dir: Optional[str] = None
    binarize: object = False  # False, "threshold" (True in older checkpoints)
    # or "dynamic" (a fresh Bernoulli draw each epoch)
    train_subset: Optional[int] = None  # use only the first n training images
    val_subset: Optional[int] = None  # use only the first n validation images
    epochs: int = 10
    max_steps: Optional[int] = None  # pause (checkpoint and return) after this many steps
    max_time: Optional[float] = None  # pause after this many seconds of this call (a
    # time budget per sitting; continue with resume)
    batch_size: int = 64  # global batch (split over the ranks)
    eval_batch_size: int = 256
    optimizer: str = "adam"  # "adam" or "rmsprop"
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip: Optional[float] = 1.0  # max gradient norm; None: no clipping
    patience: Optional[int] = 5  # early stopping after this many epochs without a
    # better validation bits/dim; None: never
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every n steps (0: each epoch only)
    device: str = "auto"  # "auto", "cpu", "cuda"
    tensorboard: bool = False  # also log the epoch scalars to OUT/tensorboard


class TrainingError(ValueError):
    """A training setting is wrong (unknown model, data the model cannot fit, ...)."""


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or inf; the last good checkpoint is kept."""


# field -> (smallest allowed value, None allowed); integers unless listed in _FLOATS
_LIMITS = {
    "train_subset": (1, True),
    "val_subset": (1, True),
    "epochs": (1, False),
    "max_steps": (1, True),
    "batch_size": (1, False),
    "eval_batch_size": (1, False),
    "lr": (0.0, False),
    "weight_decay": (0.0, False),
    "clip": (0.0, True),
    "patience": (0, True),
    "seed": (0, False),
    "checkpoint_every": (0, False),
    "max_time": (0.0, True),
}
_FLOATS = ("lr", "weight_decay", "clip", "max_time")


def check_config(config):
    """Raise TrainingError, naming the setting, for a value no run can use: counts below 1
    (epochs, batch sizes, subsets), negative or non-finite rates, unknown names."""
    for name, (low, optional) in _LIMITS.items():
        value = getattr(config, name)
        if value is None and optional:
            continue
        if name in _FLOATS:
            ok = type(value) in (int, float) and math.isfinite(value) and value >= low
            kind = "a finite number"
        else:
            ok = type(value) is int and value >= low
            kind = "an integer"
        if not ok:
            raise TrainingError(
                f"{name.replace('_', '-')} must be {kind} >= {low}"
                f"{' (or unset)' if optional else ''}, got {value!r}"
            )
    if config.seed >= 2**32:
        raise TrainingError(f"seed must be below 2**32, got {config.seed}")
    if config.data not in datasets.DATASETS:
        raise TrainingError(
            f"unknown dataset {config.data!r}; choose one of {', '.join(datasets.DATASETS)}"
        )
    if config.optimizer not in OPTIMIZERS:
        raise TrainingError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}"
        )
    if not isinstance(config.model_args, dict):
        raise TrainingError(f"model_args must be a dict, got {config.model_args!r}")
    if config.max_time is not None and config.max_time <= 0:
        raise TrainingError(
            f"max_time (--time-budget) must be a positive number of seconds, got "
            f"{config.max_time!r}"
        )
    try:
        binarize_mode(config.binarize)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    resolve_model_class(config.model)
    try:
        distributed.pick_device(config.device)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def _memory_bytes(device):
    """The memory of ``device`` (bytes), or None when unknown."""
    try:
        if device is not None and torch.device(device).type == "cuda":
            return torch.cuda.get_device_properties(torch.device(device)).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError, AssertionError):
        return None


def resolve_model_class(name):
    """A model class from a name of MODELS, case-insensitively ('pixelrnn', 'NADE', ...)."""
    lookup = {k.lower(): k for k in MODELS}
    lookup.update({k: v for k, v in ALIASES.items()})
    key = lookup.get(str(name).lower())
    if str(name).lower() == "rnade":  # not in MODELS (image models only)
        raise TrainingError(
            "RNADE models real-valued vectors (B, D); pixelar train fits "
            "image models: choose one of " + ", ".join(MODELS)
        )
    if key is None:
        raise TrainingError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[key]


def build_model(name, model_args, image_shape, levels, device=None):
    """Construct model ``name`` for images of ``image_shape`` with ``levels`` values.
    Bad arguments, and a model too large for ``device``'s memory (parameters, gradients,
    optimizer state), raise TrainingError before anything is allocated."""
    cls = resolve_model_class(name)
    params = inspect.signature(cls.__init__).parameters
    kwargs = dict(model_args or {})
    for key in ("image_shape", "levels"):
        if key in kwargs:
            raise TrainingError(f"{key} comes from the data; do not pass it as a model argument")
    unknown = set(kwargs) - set(params)
    if unknown:
        allowed = [p for p in params if p not in ("self", "image_shape", "levels")]
        raise TrainingError(
            f"{cls.__name__} has no argument {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(allowed)}"
        )
    kwargs["image_shape"] = tuple(image_shape)
    if "levels" in params:
        kwargs["levels"] = levels
    shown = ", ".join(f"{k}={v!r}" for k, v in (model_args or {}).items())
    try:  # first on the meta device: bad arguments and absurd sizes cost no memory
        with torch.device("meta"):
            probe = cls(**kwargs)
        need = 4 * sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    except (TypeError, ValueError, OverflowError, RuntimeError, MemoryError) as exc:
        raise TrainingError(f"{cls.__name__}({shown}): {exc}") from exc
    have = _memory_bytes(device)
    if have is not None and need > have:
        raise TrainingError(
            f"{cls.__name__}({shown}) is too large: its parameters, gradients "
            f"and optimizer state need {need / 2**30:.1f} GiB, the device "
            f"has {have / 2**30:.1f} GiB"
        )
    model = cls(**kwargs)
    if model.levels != levels:
        raise TrainingError(
            f"{cls.__name__} models images with {model.levels} levels, but "
            f"the data has {levels}; pick a binary dataset or --binarize"
        )
    return model


# Devices whose fused (one kernel per step) Adam torch provides.
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def _dense(p):
    """True when p covers its memory exactly (contiguous in some order of its dimensions,
    as a transposed-stored weight is): the strides that empty_like(p) would give."""
    return p.stride() == torch.empty_like(p, device="meta").stride()


def _match_parameter_layouts(optimizer, args, kwargs):
    """Step pre-hook of a fused Adam: gives every gradient and every state tensor its
    parameter's strides. torch's fused CPU Adam reads a parameter, its gradient and its state
    as flat memory, so a gradient or state laid out otherwise than a non-contiguous parameter
    (a state loaded from a checkpoint is contiguous; a gradient set by hand may be) would get
    silently wrong updates (seen in torch 2.14.1)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if (
                    torch.is_tensor(value)
                    and value.shape == p.shape
                    and value.dim() > 0
                    and value.stride() != p.stride()
                ):
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _contiguous_order(t):
    """t itself when contiguous, else t permuted to its contiguous order of dimensions (a
    view of the same memory, contiguous when t is dense)."""
    if t.is_contiguous():
        return t
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    view = t.permute(order)
    return view if view.is_contiguous() else t


class DenseLayoutAdam(torch.optim.Adam):
    """torch's Adam for dense parameters some of which are stored non-contiguous (the NADE
    models' transposed W): the fused kernel gets every parameter, gradient and state tensor
    permuted to its contiguous order of dimensions, views of the same memory. torch 2.14.1's
    fused CPU kernel otherwise makes a contiguous copy of a non-contiguous gradient that it
    never reads: 0.6 ms of NADE's 9 ms training step (H=500, B=64, 2 threads). The updates
    are those of the fused Adam on the tensors as they are (an elementwise update over the
    same memory), and ``_match_parameter_layouts`` (a step pre-hook) first gives every
    gradient and state its parameter's strides, so that the permutation of the parameter's
    dimensions makes all of them contiguous."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.register_step_pre_hook(_match_parameter_layouts)

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps):
        has_complex = super()._init_group(
            group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps
        )
        for tensors in (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs):
            tensors[:] = [_contiguous_order(t) for t in tensors]
        return has_complex


def make_optimizer(name, params, lr, weight_decay=0.0):
    """The optimizer ``name`` ("adam" or "rmsprop") over ``params``, in torch's fastest
    implementation that serves them:

    - Adam: the fused one (``fused=True``: one kernel per step instead of a dozen grouped
      ops; 3-4x faster on 2 CPU threads) when every parameter is a dense floating tensor
      (contiguous, or contiguous in another order of its dimensions, as the NADE models'
      transposed-stored W) on the CPU or a CUDA device. Its updates equal the per-tensor
      loop's to within 1 ulp (a different order of the same float operations), not bit for
      bit. torch's fused Adam reads a parameter, its gradient and its state as flat memory,
      so they must share one layout: autograd gives a dense parameter a gradient of its
      layout, Adam makes its state so, and where some parameter is not contiguous a step
      pre-hook (``_match_parameter_layouts``) re-lays out any gradient or state that differs
      (a state loaded from a checkpoint, a gradient set by hand) before each step; the kernel
      then gets them all as contiguous views (``DenseLayoutAdam``).
    - Otherwise, and for RMSprop (torch has no fused RMSprop): the multi-tensor ("foreach")
      implementation, on every device (torch's default only on GPUs), whose updates equal
      the per-tensor loop's bit for bit.
    """
    if name not in OPTIMIZERS:
        raise TrainingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    params = list(params)
    fused = name == "adam" and all(
        p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES and _dense(p) for p in params
    )
    if fused and not all(p.is_contiguous() for p in params):
        return DenseLayoutAdam(params, lr=lr, weight_decay=weight_decay, fused=True)
    impl = dict(fused=True) if fused else dict(foreach=True)
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay, **impl)
