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

The loop is a few named steps over one ``Run`` (what a sitting holds: model, optimizer,
data, device) and its ``TrainState`` (the counters stored in every checkpoint):
``_start`` (data, model, optimizer; ``_resume`` from a checkpoint), then per epoch
``_run_epoch`` (``_pause_reason``, ``_train_step`` on each batch) and ``_end_epoch``
(``_validate``, ``_update_best`` with early stopping, checkpoints, metrics), and
``_result``. The settings and the model's construction are in ``config.py``;
``TrainState`` and ``Run`` in ``state.py``.
"""

import dataclasses
import math
import os
import time

import torch
import torch.nn as nn

from .. import data as datasets
from ..data.binarize import bernoulli_binarize, binarize_mode, dynamic_generator
from . import distributed, history
from .atomic import clean_stale_temporaries
from .checkpoint import (
    CheckpointError,
    atomic_write_json,
    has_checkpoint,
    load_checkpoint,
    nonfinite_names,
    remove_checkpoint,
    save_checkpoint,
)
from .config import (  # noqa: F401
    ALIASES,
    OPTIMIZERS,
    RESUME_OVERRIDES,
    TrainConfig,
    TrainingDiverged,
    TrainingError,
    build_model,
    check_config,
    make_optimizer,
    resolve_model_class,
)
from .run_lock import RunLock
from .state import Run, TrainState, stored_config
from .stop_signals import raise_if_stopped

# Files of a run besides its checkpoints; --overwrite deletes them with the checkpoints.
RUN_OUTPUTS = ["metrics.json", "history.csv", "curve.png"]


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


# ---------------------------------------------------------------------------- train()


def train(
    config: TrainConfig,
    out_dir,
    *,
    resume=False,
    overwrite=False,
    progress=True,
    on_step=None,
    log=print,
    ddp_timeout=distributed.DEFAULT_TIMEOUT,
):
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
    if resume and overwrite:
        raise TrainingError(
            "resume and overwrite exclude each other: --resume continues the "
            "run in the folder, --overwrite deletes it"
        )
    check_config(config)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:  # the process that writes the folder
        lock = _open_out_dir(out_dir)
    try:
        config, ckpt = _previous_run(config, out_dir, resume, overwrite, lock is not None)
        d = distributed.setup(config.device, timeout=ddp_timeout)
        try:
            run = _start(
                config,
                d,
                out_dir,
                ckpt,
                progress,
                on_step,
                log if d.is_main else (lambda *a, **k: None),
            )
            return _loop(run)
        except RuntimeError as exc:
            failure = distributed.peer_error(d, exc, ddp_timeout)
            if failure is None:
                raise
            raise failure from exc
        finally:
            run = None  # the DDP wrapper holds the process group: drop it before teardown
            distributed.teardown(d)
    finally:
        if lock is not None:
            lock.release()


def _previous_run(config, out_dir, resume, overwrite, writes_folder):
    """(config, checkpoint to resume or None): with ``resume`` the stored config with
    RESUME_OVERRIDES from ``config``; without it, a folder holding a run is refused unless
    ``overwrite`` (the folder's writer then deletes that run)."""
    if resume:
        last_prefix = os.path.join(out_dir, "last")
        ckpt = load_checkpoint(
            out_dir if os.path.isdir(out_dir) else last_prefix, prefer=("last", "best")
        )
        stored = stored_config(ckpt)
        overrides = {k: getattr(config, k) for k in RESUME_OVERRIDES}
        config = dataclasses.replace(stored, **overrides)
        check_config(config)
        return config, ckpt
    if has_checkpoint(out_dir) and not overwrite:
        raise TrainingError(
            f"{out_dir} already holds a checkpoint; pass --resume to "
            f"continue it or --overwrite to start again"
        )
    if overwrite and writes_folder:
        clear_run(out_dir)
    return config, None


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
        raise TrainingError(
            f"cannot write the output folder {out_dir}: {exc.strerror or exc}"
        ) from exc
    clean_stale_temporaries(out_dir)
    return lock


# ---------------------------------------------------------------------------- setup


def _start(config, d, out_dir, ckpt, progress, on_step, log):
    """The Run of this sitting: the data, a tensorboard writer, the model (initialised
    after ``torch.manual_seed(config.seed)``) and optimizer, the state of ``ckpt`` when
    resuming, the DDP wrapper and the batch split over the ranks."""
    sitting_t0 = time.perf_counter()
    dynamic = binarize_mode(config.binarize) == "dynamic"
    train_set, val_set = _load_data(config, dynamic)
    writer = _tensorboard(config, d, out_dir)
    torch.manual_seed(config.seed)
    model = build_model(
        config.model,
        config.model_args,
        train_set.image_shape,
        2 if dynamic else train_set.levels,
        d.device,
    )
    model.to(d.device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
    run = Run(
        config,
        d,
        out_dir,
        model,
        optimizer,
        train_set,
        val_set,
        dynamic,
        TrainState(dataclasses.asdict(config)),
        log,
        progress,
        on_step,
        writer,
        sitting_t0=sitting_t0,
    )
    if ckpt is not None:
        _resume(run, ckpt)
    if run.state.elapsed_s is None:  # runs from before the wall clock was recorded
        run.state.elapsed_s = sum(e.get("seconds") or 0.0 for e in run.state.history)
    run.elapsed_base = run.state.elapsed_s
    run.net = _wrap(model, d)
    _split_batch(run)
    _log_start(run)
    return run


def _load_data(config, dynamic):
    """(train, val) datasets of ``config``, subsets taken. With dynamic binarization the
    training images stay grey (each batch is drawn afresh); validation is one fixed draw."""
    train_set = datasets.load(
        config.data, "train", config.data_dir, False if dynamic else config.binarize
    )
    val_set = datasets.load(config.data, "val", config.data_dir, config.binarize)
    return train_set.subset(config.train_subset), val_set.subset(config.val_subset)


def _tensorboard(config, d, out_dir):
    """A SummaryWriter into OUT/tensorboard on the main process with ``config.tensorboard``
    (TrainingError when the package is missing), else None."""
    if not (config.tensorboard and d.is_main):
        return None
    try:
        return history.tensorboard_writer(out_dir)
    except ImportError as exc:
        raise TrainingError(str(exc)) from exc


def _resume(run, ckpt):
    """Load the weights, optimizer state, RNG state and counters of ``ckpt`` into ``run``
    (CheckpointError for non-finite weights or weights that do not fit the model)."""
    bad = nonfinite_names(ckpt.model_state())
    if bad:
        raise CheckpointError(
            f"{ckpt.path}: non-finite weights ({', '.join(bad[:3])}): "
            f"the run that wrote it diverged; start again with --overwrite"
        )
    try:
        run.model.load_state_dict({k: v.to(run.d.device) for k, v in ckpt.model_state().items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not fit the model: {exc}") from exc
    run.saved_step = ckpt.train_state["global_step"]
    ckpt.restore_optimizer(run.optimizer)
    ckpt.restore_rng()
    state = TrainState.from_dict(ckpt.train_state)
    state.config = dataclasses.asdict(run.config)
    if state.status != "early_stopped":
        state.status = "running"
    run.state = state
    run.log(f"resuming {ckpt.path} at epoch {state.epoch + 1}, step {state.global_step}")


def _wrap(model, d):
    """The loss module the steps call: NegLogLikelihood(model), under DDP when several
    processes train."""
    net = NegLogLikelihood(model)
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )
    return net


def _split_batch(run):
    """The global batch (at most the training set), its part per rank and the steps per
    epoch (TrainingError when the ranks cannot share the batch evenly)."""
    n, world = len(run.train_set), run.d.world_size
    run.batch = min(run.config.batch_size, n)
    if run.batch % world:
        raise TrainingError(
            f"batch size {run.batch} must be divisible by the number of processes ({world})"
        )
    run.per_rank = run.batch // world
    run.steps_per_epoch = n // run.batch


def _log_start(run):
    """One line on what is trained on what, where (and a note when it already ended)."""
    params = sum(p.numel() for p in run.model.parameters())
    run.log(
        f"training {type(run.model).__name__} ({params:,} parameters) on "
        f"{run.config.data}: {len(run.train_set)} train / {len(run.val_set)} val images, "
        f"{run.steps_per_epoch} steps of {run.batch} per epoch, {run.d.world_size} "
        f"process(es) on {run.d.device}"
    )
    if run.state.status == "early_stopped":
        run.log("this run already stopped early; nothing to do")


# ---------------------------------------------------------------------------- the loop


def _loop(run):
    """Train epoch after epoch until ``config.epochs``, early stopping or a pause; write
    the last checkpoint and return the result. A KeyboardInterrupt between steps writes
    the last checkpoint first."""
    state = run.state
    try:
        while state.status != "early_stopped" and state.epoch < run.config.epochs:
            paused = _run_epoch(run)
            if paused is not None:
                return paused
    except KeyboardInterrupt:
        if not run.updating:
            state.status = "interrupted"
            _checkpoint(run, run.last_prefix)
            run.log(
                f"\ninterrupted: checkpoint at step {state.global_step} written to "
                f"{run.last_prefix}.safetensors; continue with --resume"
            )
        raise
    if state.status != "early_stopped":
        state.status = "finished"
    _checkpoint(run, run.last_prefix)
    return _result(run)


def _run_epoch(run):
    """The remaining steps of the current epoch, then its validation and checkpoints.
    Returns the result when the run pauses (max_steps, time budget) inside it, else None."""
    state, config = run.state, run.config
    epoch = state.epoch
    if state.step_in_epoch == 0:
        state.epoch_loss_sum, state.epoch_images = 0.0, 0
    order = epoch_order(len(run.train_set), config.seed, epoch)
    bar = _progress_bar(run)
    run.model.train()
    t0, seen = time.perf_counter(), 0
    while state.step_in_epoch < run.steps_per_epoch:
        raise_if_stopped()  # a stop signal whose KeyboardInterrupt was dropped
        reason = _pause_reason(run)
        if reason is not None:
            if bar is not None:
                bar.close()
            return _pause(run, reason)
        _train_step(run, order, epoch)
        seen += run.batch
        if bar is not None:
            running = state.epoch_loss_sum / state.epoch_images / math.log(2)
            bar.update(1)
            bar.set_postfix(
                loss=f"{running:.4f} bpd", img_s=f"{seen / (time.perf_counter() - t0):.0f}"
            )
        if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
            _checkpoint(run, run.last_prefix)
        if run.on_step is not None:
            run.on_step(state.global_step)
    if bar is not None:
        bar.close()
    _end_epoch(run, epoch, time.perf_counter() - t0, seen)
    return None


def _progress_bar(run):
    """A tqdm bar over the epoch's steps (main process, with progress on), or None."""
    if not (run.progress and run.d.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=run.steps_per_epoch,
        initial=run.state.step_in_epoch,
        desc=f"epoch {run.state.epoch + 1}/{run.config.epochs}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
    )


def _pause_reason(run):
    """Why the run pauses before its next step ("max_steps", the time budget), or None.
    Every rank reaches the same answer at the same step."""
    config = run.config
    if config.max_steps is not None and run.state.global_step >= config.max_steps:
        return "max_steps"
    if config.max_time is not None and _budget_spent(run.d, run.sitting_t0, config.max_time):
        return f"time budget of {config.max_time:g} s"
    return None


def _pause(run, reason):
    """Checkpoint last with status "paused" and return the result."""
    run.state.status = "paused"
    _checkpoint(run, run.last_prefix)
    run.log(f"paused after {run.state.global_step} steps ({reason}); continue with --resume")
    return _result(run)


def _batch(run, order, epoch):
    """This rank's part of the next global batch: (per_rank, C, H, W) int64 on the device.
    With dynamic binarization the whole global batch is drawn (seeded by seed, epoch and
    step), then each rank takes its part."""
    d, step, batch = run.d, run.state.step_in_epoch, run.batch
    idx = order[step * batch : (step + 1) * batch]
    mine = slice(d.rank * run.per_rank, (d.rank + 1) * run.per_rank)
    if run.dynamic:
        x = bernoulli_binarize(
            run.train_set.images[idx],
            run.train_set.levels,
            dynamic_generator(run.config.seed, epoch, step),
        )
        return x[mine].to(d.device)
    return run.train_set.images[idx[mine]].to(d.device)


def _train_step(run, order, epoch):
    """One optimizer step on the next batch: the loss in nats/dim, its gradient (clipped
    to ``config.clip``), a divergence check on every rank, the update, the counters."""
    state, model, optimizer = run.state, run.model, run.optimizer
    x = _batch(run, order, epoch)
    loss = run.net(x).mean() / run.num_dims  # nats per dimension
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.clip:
        norm = nn.utils.clip_grad_norm_(model.parameters(), run.config.clip)
    else:
        norm = nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    _check_finite(run.d, loss.item(), norm.item(), lambda what: _diverged(run, what))
    run.updating = True
    try:
        optimizer.step()
    except (RuntimeError, OverflowError) as exc:  # e.g. lr * moment overflows
        _diverged(run, f"the optimizer step failed ({exc})")
    state.step_in_epoch += 1
    state.global_step += 1
    state.epoch_loss_sum += loss.item() * len(x)
    state.epoch_images += len(x)
    run.updating = False


def _end_epoch(run, epoch, seconds, seen):
    """After the last step of ``epoch``: validate, record the history entry, keep the best,
    decide early stopping, write best (when better), last and metrics.json, the history
    files and one log line."""
    state, config = run.state, run.config
    entry = _validate(run, epoch, seconds, seen)
    improved = _update_best(run, entry)
    if improved:
        _checkpoint(run, run.best_prefix)
    _checkpoint(run, run.last_prefix)
    if run.d.is_main:
        atomic_write_json(os.path.join(run.out_dir, "metrics.json"), state.metrics())
        history.on_epoch(run.out_dir, state.history, run.num_dims, run.writer, run.log)
    run.log(
        f"epoch {epoch + 1}/{config.epochs}: train {entry['train_bpd']:.4f} bits/dim, "
        f"val {entry['val_bpd']:.4f} bits/dim{' (best)' if improved else ''}, "
        f"{seconds:.1f} s, {entry['images_per_s'] or 0:.0f} images/s"
    )
    if state.status == "early_stopped":
        run.log(
            f"early stopping: no better validation bits/dim for {config.patience} "
            f"epochs (best {state.best_val_bpd:.4f} at epoch {state.best_epoch})"
        )


def _validate(run, epoch, seconds, seen):
    """The history entry of ``epoch``: training loss (all-reduced over the ranks) and
    validation bits/dim and nats, time, throughput, step and the run's wall clock."""
    d, state, D = run.d, run.state, run.num_dims
    loss_sum, count = distributed.all_reduce_sum(
        d, [state.epoch_loss_sum, float(state.epoch_images)]
    )
    val = _val_bpd(d, run.model, run.val_set.images, run.config.eval_batch_size)
    entry = {
        "epoch": epoch + 1,
        "train_bpd": loss_sum / max(count, 1) / math.log(2),
        "val_bpd": val,
        "seconds": seconds,
        "images_per_s": seen / seconds if seconds > 0 else None,
        "step": state.global_step,
        "elapsed_s": _clock(run),
    }
    entry["train_nats"] = entry["train_bpd"] * D * math.log(2)
    entry["val_nats"] = val * D * math.log(2)
    state.history.append(entry)
    return entry


def _update_best(run, entry):
    """Keep the best validation bits/dim, move to the next epoch and stop early after
    ``patience`` epochs without improvement. Returns whether this epoch is the best."""
    state, val = run.state, entry["val_bpd"]
    improved = state.best_val_bpd is None or val < state.best_val_bpd
    if improved:
        state.best_val_bpd, state.best_epoch, state.bad_epochs = val, entry["epoch"], 0
    else:
        state.bad_epochs += 1
    state.epoch, state.step_in_epoch = entry["epoch"], 0
    if run.config.patience and state.bad_epochs >= run.config.patience:
        state.status = "early_stopped"
    return improved


def _val_bpd(d, model, images, batch_size):
    """Validation bits/dim, the images sharded over the ranks and the sums all-reduced."""
    shard = images[d.rank :: d.world_size]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(shard), batch_size):
            x = shard[start : start + batch_size].to(d.device)
            total += (-model.log_prob(x)).double().sum().item()
            count += len(x)
    model.train(was_training)
    total, count = distributed.all_reduce_sum(d, [total, float(count)])
    return total / (count * model.num_dims * math.log(2.0))


# ---------------------------------------------------------------------------- checkpoints


def _clock(run):
    """Wall-clock seconds of the whole run so far (all sittings), stored in the state."""
    run.state.elapsed_s = run.elapsed_base + (time.perf_counter() - run.sitting_t0)
    return run.state.elapsed_s


def _checkpoint(run, prefix):
    """Write checkpoint ``prefix`` (main process). Every rank first checks the weights and
    optimizer state (the same on all), so all stop together when they are not finite."""
    _clock(run)
    model, optimizer = run.model, run.optimizer
    bad = nonfinite_names(
        {
            **model.state_dict(),
            **{
                f"optimizer.{i}.{k}": v
                for i, st in enumerate(optimizer.state.values())
                for k, v in st.items()
            },
        }
    )
    if bad:  # the step just applied made them so
        _diverged(
            run,
            f"the weights or optimizer state hold NaN or inf ({', '.join(bad[:3])})",
            step=run.state.global_step,
        )
    if run.d.is_main:
        save_checkpoint(prefix, model, optimizer, run.state.to_dict())
    run.saved_step = run.state.global_step


def _diverged(run, what, step=None):
    """Raise TrainingDiverged at ``step`` (default: the step being taken), naming the last
    good checkpoint, which is kept."""
    kept = (
        f"the last good checkpoint, {run.last_prefix}.safetensors (step {run.saved_step}), is kept"
        if run.saved_step is not None
        else "no checkpoint was written"
    )
    step = run.state.global_step + 1 if step is None else step
    raise TrainingDiverged(
        f"training diverged at step {step} (epoch {run.state.epoch + 1}): "
        f"{what}; stopped there, {kept}; try a lower --lr or --clip"
    )


def _check_finite(d, loss, norm, diverged):
    """Call ``diverged(message)`` when the loss or the gradient norm is NaN or inf on any
    rank (the flag is summed over the ranks, so every rank stops at the same step)."""
    bad = not (math.isfinite(loss) and math.isfinite(norm))
    if d.enabled:
        bad = distributed.all_reduce_sum(d, [float(bad)])[0] > 0
    if bad:
        diverged(
            f"non-finite loss ({loss:g} nats/dim) or gradient norm ({norm:g})"
            if not d.enabled
            else "non-finite loss or gradient norm on some process"
        )


def _budget_spent(d, t0, max_time):
    """Whether ``max_time`` seconds have passed since ``t0`` on any rank (so that every
    rank pauses at the same step)."""
    spent = float(time.perf_counter() - t0 >= max_time)
    if d.enabled:
        spent = distributed.all_reduce_sum(d, [spent])[0]
    return spent > 0


def _result(run):
    """The dict train() returns; the main process also writes metrics.json with every
    rank's weight hash (a RuntimeError when DDP ranks ended with different weights)."""
    state, out_dir = run.state, run.out_dir
    hashes = distributed.gather_weight_hashes(run.d, run.model)
    if len(set(hashes)) > 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {hashes}")
    result = {
        k: getattr(state, k)
        for k in ("status", "history", "best_val_bpd", "best_epoch", "global_step")
    }
    result.update(
        out_dir=out_dir,
        last=os.path.join(out_dir, "last.safetensors"),
        best=os.path.join(out_dir, "best.safetensors"),
        rank_weight_sha256=hashes,
    )
    if run.d.is_main:
        atomic_write_json(
            os.path.join(out_dir, "metrics.json"), {**state.metrics(), "rank_weight_sha256": hashes}
        )
    return result
