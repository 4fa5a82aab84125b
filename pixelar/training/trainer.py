"""The training loop: maximum likelihood (mean NLL per dimension) with Adam or RMSProp,
gradient clipping, a progress bar with the running loss and throughput, validation
bits/dim each epoch, early stopping, atomic checkpoints and exact resume.

Reproducibility: the model is initialised after ``torch.manual_seed(seed)``; the order of
the training images in epoch e is ``torch.randperm(N, generator=seeded(seed, e))``, the
same on every rank; a checkpoint stores the weights, the optimizer's state, the torch RNG
state and the position (epoch, step) inside the epoch. A run resumed from any checkpoint
therefore ends with the same weights, bit for bit, as the run that was never stopped.

Output folder: last.safetensors (every ``checkpoint_every`` steps and each epoch),
best.safetensors (best validation bits/dim), metrics.json (the history), run.lock (held
while a run writes the folder; a second run into it refuses). Each checkpoint is one file
switched in by one rename (see checkpoint.py); checkpoints of format 1 (a .safetensors +
.json pair) are resumed and replaced by format 2 at their next write.

Failures stop the run with one clear error and leave the last good checkpoint: settings
are checked before any work (``check_config``); a non-finite loss or gradient norm stops
training before that step is applied (``TrainingDiverged``); a failed checkpoint write (disk
full) raises ``OutputWriteError`` and keeps the previous checkpoint.

Also in the folder: history.csv and curve.png (the learning curve, rewritten after every
epoch; see ``history``), tensorboard/ with ``tensorboard=True``.

Dynamic binarization (``binarize="dynamic"``): each training batch is drawn afresh from
Bernoulli(value / (levels - 1)) with a generator seeded by (seed, epoch, step), so every
epoch sees new draws and a resumed run draws the same ones; validation uses one fixed draw.
"""
import dataclasses
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from .. import data as datasets
from ..models import MODELS
from ..data.binarize import bernoulli_binarize, binarize_mode, dynamic_generator
from . import distributed, history
from .atomic import clean_stale_temporaries
from .checkpoint import (CheckpointError, atomic_write_json, has_checkpoint, load_checkpoint,
                         nonfinite_names, remove_checkpoint, save_checkpoint)
from .run_lock import RunLock

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
# Settings a resumed run may change; every other one comes from the checkpoint.
RESUME_OVERRIDES = ("epochs", "max_steps", "max_time", "checkpoint_every", "eval_batch_size",
                    "device", "tensorboard")
ALIASES = {"independent": "IndependentPixels", "markov": "MarkovPixels"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in each checkpoint)."""
    model: str = "PixelRNN"            # a name of pixelar.models.MODELS (case-insensitive)
    model_args: dict = field(default_factory=dict)  # constructor kwargs besides shape/levels
    data: str = "digits28-binary"      # a name of pixelar.data.DATASETS
    data_dir: Optional[str] = None
    binarize: object = False            # False, "threshold" (True in older checkpoints)
                                        # or "dynamic" (a fresh Bernoulli draw each epoch)
    train_subset: Optional[int] = None  # use only the first n training images
    val_subset: Optional[int] = None    # use only the first n validation images
    epochs: int = 10
    max_steps: Optional[int] = None     # pause (checkpoint and return) after this many steps
    max_time: Optional[float] = None    # pause after this many seconds of this call (a
                                        # time budget per sitting; continue with resume)
    batch_size: int = 64                # global batch (split over the ranks)
    eval_batch_size: int = 256
    optimizer: str = "adam"             # "adam" or "rmsprop"
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip: Optional[float] = 1.0         # max gradient norm; None: no clipping
    patience: Optional[int] = 5         # early stopping after this many epochs without a
                                        # better validation bits/dim; None: never
    seed: int = 0
    checkpoint_every: int = 0           # also checkpoint every n steps (0: each epoch only)
    device: str = "auto"                # "auto", "cpu", "cuda"
    tensorboard: bool = False           # also log the epoch scalars to OUT/tensorboard


class TrainingError(ValueError):
    """A training setting is wrong (unknown model, data the model cannot fit, ...)."""


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or inf; the last good checkpoint is kept."""


# field -> (smallest allowed value, None allowed); integers unless listed in _FLOATS
_LIMITS = {"train_subset": (1, True), "val_subset": (1, True), "epochs": (1, False),
           "max_steps": (1, True), "batch_size": (1, False), "eval_batch_size": (1, False),
           "lr": (0.0, False), "weight_decay": (0.0, False), "clip": (0.0, True),
           "patience": (0, True), "seed": (0, False), "checkpoint_every": (0, False),
           "max_time": (0.0, True)}
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
            raise TrainingError(f"{name.replace('_', '-')} must be {kind} >= {low}"
                                f"{' (or unset)' if optional else ''}, got {value!r}")
    if config.seed >= 2 ** 32:
        raise TrainingError(f"seed must be below 2**32, got {config.seed}")
    if config.data not in datasets.DATASETS:
        raise TrainingError(f"unknown dataset {config.data!r}; choose one of "
                            f"{', '.join(datasets.DATASETS)}")
    if config.optimizer not in OPTIMIZERS:
        raise TrainingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                            f"{config.optimizer!r}")
    if not isinstance(config.model_args, dict):
        raise TrainingError(f"model_args must be a dict, got {config.model_args!r}")
    if config.max_time is not None and config.max_time <= 0:
        raise TrainingError(f"max_time (--time-budget) must be a positive number of seconds, got "
                            f"{config.max_time!r}")
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
        raise TrainingError("RNADE models real-valued vectors (B, D); pixelar train fits "
                            "image models: choose one of " + ", ".join(MODELS))
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
        raise TrainingError(f"{cls.__name__} has no argument {', '.join(sorted(unknown))}; "
                            f"it takes {', '.join(allowed)}")
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
        raise TrainingError(f"{cls.__name__}({shown}) is too large: its parameters, gradients "
                            f"and optimizer state need {need / 2 ** 30:.1f} GiB, the device "
                            f"has {have / 2 ** 30:.1f} GiB")
    model = cls(**kwargs)
    if model.levels != levels:
        raise TrainingError(f"{cls.__name__} models images with {model.levels} levels, but "
                            f"the data has {levels}; pick a binary dataset or --binarize")
    return model


def make_optimizer(name, params, lr, weight_decay=0.0):
    if name not in OPTIMIZERS:
        raise TrainingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


class NegLogLikelihood(nn.Module):
    """Wraps a model so DistributedDataParallel sees the whole loss: x -> (B,) nats."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return -self.model.log_prob(x)


def epoch_order(n, seed, epoch):
    """The order of the n training images in ``epoch``: (n,) int64, the same on every rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _val_bpd(d, model, images, batch_size):
    """Validation bits/dim, the images sharded over the ranks and the sums all-reduced."""
    shard = images[d.rank::d.world_size]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(shard), batch_size):
            x = shard[start:start + batch_size].to(d.device)
            total += (-model.log_prob(x)).double().sum().item()
            count += len(x)
    model.train(was_training)
    total, count = distributed.all_reduce_sum(d, [total, float(count)])
    return total / (count * model.num_dims * math.log(2.0))


def _initial_state(config):
    return {"config": dataclasses.asdict(config), "epoch": 0, "step_in_epoch": 0,
            "global_step": 0, "best_val_bpd": None, "best_epoch": None, "bad_epochs": 0,
            "epoch_loss_sum": 0.0, "epoch_images": 0, "history": [], "status": "running"}


def train(config: TrainConfig, out_dir, *, resume=False, overwrite=False, progress=True,
          on_step=None, log=print, ddp_timeout=distributed.DEFAULT_TIMEOUT):
    """Train ``config.model`` on ``config.data`` and checkpoint into ``out_dir``.

    resume: continue from out_dir/last (settings other than RESUME_OVERRIDES come from
        the checkpoint; a damaged last falls back to best with a warning). overwrite: start
        afresh even if out_dir holds a run: its checkpoints and metrics are deleted first.
    on_step: called as on_step(global_step) after every optimizer step.
    ddp_timeout: seconds a process waits for its peers (DDP) before failing.
    Returns a dict: status ("finished", "early_stopped" or "paused"), history (one entry
    per epoch), best_val_bpd, best_epoch, global_step, the checkpoint paths, and
    rank_weight_sha256 (every rank's weight hash; all equal under DDP).
    A KeyboardInterrupt between steps writes out_dir/last first, then propagates.
    Raises TrainingError (bad setting, unusable out_dir), RunLockedError (another run
    writes out_dir), CheckpointError, TrainingDiverged, OutputWriteError.
    """
    out_dir = os.fspath(out_dir)
    last_prefix, best_prefix = os.path.join(out_dir, "last"), os.path.join(out_dir, "best")
    if resume and overwrite:
        raise TrainingError("resume and overwrite exclude each other: --resume continues the "
                            "run in the folder, --overwrite deletes it")
    check_config(config)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:  # the process that writes the folder
        lock = _open_out_dir(out_dir)
    try:
        ckpt = None
        if resume:
            ckpt = load_checkpoint(out_dir if os.path.isdir(out_dir) else last_prefix,
                                   prefer=("last", "best"))
            stored = _stored_config(ckpt)
            overrides = {k: getattr(config, k) for k in RESUME_OVERRIDES}
            config = dataclasses.replace(stored, **overrides)
            check_config(config)
        elif has_checkpoint(out_dir) and not overwrite:
            raise TrainingError(f"{out_dir} already holds a checkpoint; pass --resume to "
                                f"continue it or --overwrite to start again")
        elif overwrite and lock is not None:
            clear_run(out_dir)

        d = distributed.setup(config.device, timeout=ddp_timeout)
        try:
            return _train(config, d, out_dir, last_prefix, best_prefix, ckpt, progress,
                          on_step, log if d.is_main else (lambda *a, **k: None))
        except RuntimeError as exc:
            failure = distributed.peer_error(d, exc, ddp_timeout)
            if failure is None:
                raise
            raise failure from exc
        finally:
            distributed.teardown(d)
    finally:
        if lock is not None:
            lock.release()


# Files of a run besides its checkpoints; --overwrite deletes them with the checkpoints.
RUN_OUTPUTS = ["metrics.json", "history.csv", "curve.png"]


def clear_run(out_dir):
    """Delete the run in ``out_dir`` (last first, so nothing can resume it; then best,
    then RUN_OUTPUTS). Other files in the folder are left alone."""
    for name in ("last", "best"):
        remove_checkpoint(os.path.join(out_dir, name))
    for name in RUN_OUTPUTS:
        try:
            os.remove(os.path.join(out_dir, name))
        except FileNotFoundError:
            pass


def _open_out_dir(out_dir):
    """Create ``out_dir``, lock it (RunLockedError names the holder) and remove the
    temporaries an interrupted write left there; TrainingError when it cannot be written."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        lock = RunLock(out_dir).acquire()
    except OSError as exc:
        raise TrainingError(f"cannot write the output folder {out_dir}: "
                            f"{exc.strerror or exc}") from exc
    clean_stale_temporaries(out_dir)
    return lock


_STATE_FIELDS = {"epoch": int, "step_in_epoch": int, "global_step": int, "bad_epochs": int,
                 "epoch_loss_sum": (int, float), "epoch_images": int, "history": list,
                 "status": str}


def _stored_config(ckpt):
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
        raise CheckpointError(f"{ckpt.path}: the stored training state is not usable "
                              f"({type(exc).__name__}: {exc})") from exc
    return stored


def _train(config, d, out_dir, last_prefix, best_prefix, ckpt, progress, on_step, log):
    sitting_t0 = time.perf_counter()
    dynamic = binarize_mode(config.binarize) == "dynamic"
    train_set = datasets.load(config.data, "train", config.data_dir,
                              False if dynamic else config.binarize)
    val_set = datasets.load(config.data, "val", config.data_dir, config.binarize)
    train_set, val_set = train_set.subset(config.train_subset), val_set.subset(config.val_subset)
    writer = None
    if config.tensorboard and d.is_main:
        try:
            writer = history.tensorboard_writer(out_dir)
        except ImportError as exc:
            raise TrainingError(str(exc)) from exc

    torch.manual_seed(config.seed)
    model = build_model(config.model, config.model_args, train_set.image_shape,
                        2 if dynamic else train_set.levels, d.device)
    model.to(d.device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr,
                               config.weight_decay)
    state = _initial_state(config)
    saved = {"step": None}  # the global step of the last checkpoint written or resumed
    if ckpt is not None:
        bad = nonfinite_names(ckpt.model_state())
        if bad:
            raise CheckpointError(f"{ckpt.path}: non-finite weights ({', '.join(bad[:3])}): "
                                  f"the run that wrote it diverged; start again with --overwrite")
        try:
            model.load_state_dict({k: v.to(d.device) for k, v in ckpt.model_state().items()})
        except RuntimeError as exc:
            raise CheckpointError(f"{ckpt.path}: weights do not fit the model: {exc}") from exc
        saved["step"] = ckpt.train_state["global_step"]
        ckpt.restore_optimizer(optimizer)
        ckpt.restore_rng()
        state = ckpt.train_state
        state["config"] = dataclasses.asdict(config)
        if state["status"] != "early_stopped":
            state["status"] = "running"
        log(f"resuming {ckpt.path} at epoch {state['epoch'] + 1}, step {state['global_step']}")
    if state.get("elapsed_s") is None:  # runs from before the wall clock was recorded
        state["elapsed_s"] = sum(e.get("seconds") or 0.0 for e in state["history"])
    elapsed_base = state["elapsed_s"]

    def clock():
        """Wall-clock seconds of the whole run so far (all sittings), stored in the state."""
        state["elapsed_s"] = elapsed_base + (time.perf_counter() - sitting_t0)
        return state["elapsed_s"]

    net = NegLogLikelihood(model)
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    N, D = len(train_set), model.num_dims
    batch = min(config.batch_size, N)
    if batch % d.world_size:
        raise TrainingError(f"batch size {batch} must be divisible by the number of "
                            f"processes ({d.world_size})")
    per_rank = batch // d.world_size
    steps_per_epoch = N // batch
    images = train_set.images

    def checkpoint(prefix):
        clock()
        # every rank checks (the weights are the same on all), so all stop together
        bad = nonfinite_names({**model.state_dict(), **{
            f"optimizer.{i}.{k}": v for i, st in enumerate(optimizer.state.values())
            for k, v in st.items()}})
        if bad:  # the step just applied made them so
            diverged(f"the weights or optimizer state hold NaN or inf ({', '.join(bad[:3])})",
                     step=state["global_step"])
        if d.is_main:
            save_checkpoint(prefix, model, optimizer, state)
        saved["step"] = state["global_step"]

    def diverged(what, step=None):
        kept = (f"the last good checkpoint, {last_prefix}.safetensors (step {saved['step']}), "
                f"is kept" if saved["step"] is not None else "no checkpoint was written")
        step = state["global_step"] + 1 if step is None else step
        raise TrainingDiverged(f"training diverged at step {step} (epoch {state['epoch'] + 1}): "
                               f"{what}; stopped there, {kept}; try a lower --lr or --clip")

    def write_metrics():
        if d.is_main:
            atomic_write_json(os.path.join(out_dir, "metrics.json"), {
                k: state[k] for k in ("config", "history", "best_val_bpd", "best_epoch",
                                      "global_step", "status")})

    log(f"training {type(model).__name__} ({sum(p.numel() for p in model.parameters()):,} "
        f"parameters) on {config.data}: {N} train / {len(val_set)} val images, "
        f"{steps_per_epoch} steps of {batch} per epoch, {d.world_size} process(es) on "
        f"{d.device}")
    if state["status"] == "early_stopped":
        log("this run already stopped early; nothing to do")
    updating = False
    try:
        while state["status"] != "early_stopped" and state["epoch"] < config.epochs:
            epoch = state["epoch"]
            if state["step_in_epoch"] == 0:
                state["epoch_loss_sum"], state["epoch_images"] = 0.0, 0
            order = epoch_order(N, config.seed, epoch)
            bar = None
            if progress and d.is_main:
                from tqdm.auto import tqdm
                bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"],
                           desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                           leave=False, dynamic_ncols=True)
            model.train()
            t0, seen = time.perf_counter(), 0
            while state["step_in_epoch"] < steps_per_epoch:
                reason = None
                if config.max_steps is not None and state["global_step"] >= config.max_steps:
                    reason = "max_steps"
                elif config.max_time is not None and _budget_spent(d, sitting_t0,
                                                                   config.max_time):
                    reason = f"time budget of {config.max_time:g} s"
                if reason is not None:
                    if bar is not None:
                        bar.close()
                    state["status"] = "paused"
                    checkpoint(last_prefix)
                    log(f"paused after {state['global_step']} steps ({reason}); continue "
                        f"with --resume")
                    return _result(state, d, model, out_dir)
                step = state["step_in_epoch"]
                idx = order[step * batch:(step + 1) * batch]
                if dynamic:  # the whole global batch is drawn, then each rank takes its part
                    x = bernoulli_binarize(images[idx], train_set.levels,
                                           dynamic_generator(config.seed, epoch, step))
                    x = x[d.rank * per_rank:(d.rank + 1) * per_rank].to(d.device)
                else:
                    x = images[idx[d.rank * per_rank:(d.rank + 1) * per_rank]].to(d.device)
                loss = net(x).mean() / D  # nats per dimension
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip:
                    norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                else:
                    norm = nn.utils.get_total_norm(
                        [p.grad for p in model.parameters() if p.grad is not None])
                _check_finite(d, loss.item(), norm.item(), diverged)
                updating = True
                try:
                    optimizer.step()
                except (RuntimeError, OverflowError) as exc:  # e.g. lr * moment overflows
                    diverged(f"the optimizer step failed ({exc})")
                state["step_in_epoch"] += 1
                state["global_step"] += 1
                state["epoch_loss_sum"] += loss.item() * len(x)
                state["epoch_images"] += len(x)
                updating = False
                seen += batch
                if bar is not None:
                    running = state["epoch_loss_sum"] / state["epoch_images"] / math.log(2)
                    bar.update(1)
                    bar.set_postfix(loss=f"{running:.4f} bpd",
                                    img_s=f"{seen / (time.perf_counter() - t0):.0f}")
                if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0:
                    checkpoint(last_prefix)
                if on_step is not None:
                    on_step(state["global_step"])
            if bar is not None:
                bar.close()
            seconds = time.perf_counter() - t0
            loss_sum, count = distributed.all_reduce_sum(
                d, [state["epoch_loss_sum"], float(state["epoch_images"])])
            val = _val_bpd(d, model, val_set.images, config.eval_batch_size)
            entry = {"epoch": epoch + 1, "train_bpd": loss_sum / max(count, 1) / math.log(2),
                     "val_bpd": val, "seconds": seconds,
                     "images_per_s": seen / seconds if seconds > 0 else None,
                     "step": state["global_step"], "elapsed_s": clock()}
            entry["train_nats"] = entry["train_bpd"] * D * math.log(2)
            entry["val_nats"] = val * D * math.log(2)
            state["history"].append(entry)
            improved = state["best_val_bpd"] is None or val < state["best_val_bpd"]
            if improved:
                state["best_val_bpd"], state["best_epoch"], state["bad_epochs"] = val, epoch + 1, 0
            else:
                state["bad_epochs"] += 1
            state["epoch"], state["step_in_epoch"] = epoch + 1, 0
            if config.patience and state["bad_epochs"] >= config.patience:
                state["status"] = "early_stopped"
            if improved:
                checkpoint(best_prefix)
            checkpoint(last_prefix)
            write_metrics()
            if d.is_main:
                history.on_epoch(out_dir, state["history"], D, writer, log)
            log(f"epoch {epoch + 1}/{config.epochs}: train {entry['train_bpd']:.4f} bits/dim, "
                f"val {val:.4f} bits/dim{' (best)' if improved else ''}, {seconds:.1f} s, "
                f"{entry['images_per_s'] or 0:.0f} images/s")
            if state["status"] == "early_stopped":
                log(f"early stopping: no better validation bits/dim for {config.patience} "
                    f"epochs (best {state['best_val_bpd']:.4f} at epoch {state['best_epoch']})")
    except KeyboardInterrupt:
        if not updating:
            state["status"] = "interrupted"
            checkpoint(last_prefix)
            log(f"\ninterrupted: checkpoint at step {state['global_step']} written to "
                f"{last_prefix}.safetensors; continue with --resume")
        raise
    if state["status"] != "early_stopped":
        state["status"] = "finished"
    checkpoint(last_prefix)
    return _result(state, d, model, out_dir)


def _check_finite(d, loss, norm, diverged):
    """Call ``diverged(message)`` when the loss or the gradient norm is NaN or inf on any
    rank (the flag is summed over the ranks, so every rank stops at the same step)."""
    bad = not (math.isfinite(loss) and math.isfinite(norm))
    if d.enabled:
        bad = distributed.all_reduce_sum(d, [float(bad)])[0] > 0
    if bad:
        diverged(f"non-finite loss ({loss:g} nats/dim) or gradient norm ({norm:g})"
                 if not d.enabled else "non-finite loss or gradient norm on some process")


def _budget_spent(d, t0, max_time):
    """Whether ``max_time`` seconds have passed since ``t0`` on any rank (so that every
    rank pauses at the same step)."""
    spent = float(time.perf_counter() - t0 >= max_time)
    if d.enabled:
        spent = distributed.all_reduce_sum(d, [spent])[0]
    return spent > 0


def _result(state, d, model, out_dir):
    hashes = distributed.gather_weight_hashes(d, model)
    if len(set(hashes)) > 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {hashes}")
    result = {k: state[k] for k in ("status", "history", "best_val_bpd", "best_epoch",
                                    "global_step")}
    result.update(out_dir=out_dir, last=os.path.join(out_dir, "last.safetensors"),
                  best=os.path.join(out_dir, "best.safetensors"), rank_weight_sha256=hashes)
    if d.is_main:
        path = os.path.join(out_dir, "metrics.json")
        metrics = {k: state[k] for k in ("config", "history", "best_val_bpd", "best_epoch",
                                         "global_step", "status")}
        metrics["rank_weight_sha256"] = hashes
        atomic_write_json(path, metrics)
    return result
