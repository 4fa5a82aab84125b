"""The state of a training run: ``TrainState``, the counters every checkpoint stores as its
``train_state`` (and ``stored_config``, which checks them when resuming), and ``Run``,
what one sitting of the trainer holds (model, optimizer, data, device, that state)."""

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from .checkpoint import CheckpointError
from .config import TrainConfig, check_config

# The keys of the state that metrics.json holds (with rank_weight_sha256 at the end).
METRICS_KEYS = ("config", "history", "best_val_bpd", "best_epoch", "global_step", "status")


@dataclass
class TrainState:
    """The counters of a run: what each checkpoint stores as its ``train_state`` (JSON) and
    what a resumed run continues from.

    config: the TrainConfig as a dict. epoch: epochs completed; step_in_epoch: steps done
    in the current one; global_step: optimizer steps in all. best_val_bpd / best_epoch:
    the best validation bits/dim so far and its epoch (1-based), None before the first.
    bad_epochs: epochs since the last improvement. epoch_loss_sum / epoch_images: the
    summed training loss (nats/dim times images) of this rank in the current epoch.
    history: one dict per epoch. status: "running", "paused", "interrupted", "finished"
    or "early_stopped". elapsed_s: wall-clock seconds of the whole run, all sittings.
    extra: keys of a resumed checkpoint this version does not know, written back as they
    were.
    """

    config: dict
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_val_bpd: Optional[float] = None
    best_epoch: Optional[int] = None
    bad_epochs: int = 0
    epoch_loss_sum: float = 0.0
    epoch_images: int = 0
    history: list = field(default_factory=list)
    status: str = "running"
    elapsed_s: Optional[float] = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, stored):
        """The state a checkpoint's ``train_state`` holds (checked by ``stored_config``)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in stored.items() if k in known},
            extra={k: v for k, v in stored.items() if k not in known},
        )

    def to_dict(self):
        """The JSON dict a checkpoint stores as ``train_state``."""
        out = dict(self.extra)
        out.update(
            (f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"
        )
        return out

    def metrics(self):
        """What metrics.json holds (besides the ranks' weight hashes)."""
        return {k: getattr(self, k) for k in METRICS_KEYS}


_STATE_FIELDS = {
    "epoch": int,
    "step_in_epoch": int,
    "global_step": int,
    "bad_epochs": int,
    "epoch_loss_sum": (int, float),
    "epoch_images": int,
    "history": list,
    "status": str,
}


def stored_config(ckpt):
    """The TrainConfig and counters a checkpoint holds, checked (CheckpointError)."""
    state = ckpt.train_state
    try:
        stored = TrainConfig(**state["config"])
        for key, kind in _STATE_FIELDS.items():
            if not isinstance(state[key], kind) or isinstance(state[key], bool):
                raise TypeError(f"{key} is {state[key]!r}")
            if kind is int and state[key] < 0:
                raise ValueError(f"{key} is {state[key]}")
        for key in ("best_val_bpd", "best_epoch"):
            if state[key] is not None and not isinstance(state[key], (int, float)):
                raise TypeError(f"{key} is {state[key]!r}")
        check_config(stored)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{ckpt.path}: the stored training state is not usable ({type(exc).__name__}: {exc})"
        ) from exc
    return stored


@dataclass
class Run:
    """One sitting of a training run: everything the steps of the loop share.

    state is what checkpoints store; saved_step is the global step of the last checkpoint
    written or resumed (None: none yet); updating is True while an optimizer step is
    half applied (a KeyboardInterrupt then writes no checkpoint). batch is the global batch,
    per_rank this process's part of it; images: (N, C, H, W) int64 training images.
    """

    config: TrainConfig
    d: Any  # distributed.Dist
    out_dir: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_set: Any  # pixelar.data Dataset
    val_set: Any
    dynamic: bool  # binarize="dynamic": a fresh draw for every batch
    state: TrainState
    log: Callable
    progress: bool = True
    on_step: Optional[Callable] = None
    writer: Any = None  # a tensorboard SummaryWriter, or None
    net: Optional[nn.Module] = None  # NegLogLikelihood(model), DDP-wrapped under torchrun
    sitting_t0: float = 0.0  # time.perf_counter() when this sitting started
    elapsed_base: float = 0.0  # state.elapsed_s when this sitting started
    saved_step: Optional[int] = None
    updating: bool = False
    batch: int = 0
    per_rank: int = 0
    steps_per_epoch: int = 0

    @property
    def last_prefix(self):
        return os.path.join(self.out_dir, "last")

    @property
    def best_prefix(self):
        return os.path.join(self.out_dir, "best")

    @property
    def num_dims(self):
        return self.model.num_dims
