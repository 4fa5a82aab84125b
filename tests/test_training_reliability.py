"""pixelar.training.train under failure: one run per folder (S5), --overwrite clears the old
run first (U9), a non-finite loss or gradient stops training and keeps the last good
checkpoint (W2), settings are checked before any work (W5, U1), stale temporaries are
removed, and a stopped DDP peer fails the run after --ddp-timeout (U6)."""

import datetime
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from pixelar.training import CheckpointError, TrainingError, distributed, load_checkpoint, train
from pixelar.training import trainer as trainer_module
from pixelar.training.checkpoint import has_checkpoint
from pixelar.training.run_lock import RunLock, RunLockedError
from pixelar.training.stop_signals import raise_if_stopped, stop_signals
from pixelar.training.trainer import TrainingDiverged, build_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from training_testing import BACKEND, QUIET, TINY_CLI, tiny, training_backend  # noqa: E402, F401

# ---------------------------------------------------------------- S5: one run per folder


def test_a_second_run_into_a_locked_folder_refuses_naming_the_holder(tmp_path):
    """The holder is another process (the lock module loaded alone, without torch)."""
    script = (
        f"import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('run_lock', "
        f"{os.path.join(ROOT, 'pixelar', 'training', 'run_lock.py')!r})\n"
        f"m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"m.RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True)\n"
        f"time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            RunLockedError, match=f"pid {holder.pid} on host {socket.gethostname()}"
        ):
            train(tiny(), tmp_path, **QUIET)
        assert not has_checkpoint(tmp_path)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
        holder.stdout.close()
    assert train(tiny(epochs=1), tmp_path, **QUIET)["status"] == "finished"


def test_the_lock_is_held_during_the_run_and_released_after(tmp_path):
    seen = []

    def on_step(step):
        with pytest.raises(RunLockedError):
            RunLock(tmp_path).acquire()
        seen.append(step)

    train(tiny(epochs=1), tmp_path, on_step=on_step, **QUIET)
    assert seen == [1, 2, 3]
    with RunLock(tmp_path):  # free again
        pass


# ---------------------------------------------------------------- U9: --overwrite


class Crash(Exception):
    pass


def crash_at(step):
    def on_step(global_step):
        if global_step == step:
            raise Crash()

    return on_step


def test_overwrite_clears_the_old_run_before_training(tmp_path):
    train(tiny(epochs=1), tmp_path, **QUIET)
    (tmp_path / "notes.txt").write_text("mine")
    assert has_checkpoint(tmp_path) and (tmp_path / "metrics.json").exists()
    with pytest.raises(Crash):  # a new model, killed before its first checkpoint
        train(
            tiny(model="IndependentPixels", model_args={}),
            tmp_path,
            overwrite=True,
            on_step=crash_at(1),
            **QUIET,
        )
    assert not has_checkpoint(tmp_path) and not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not ours: left alone
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path)  # nothing for eval
    with pytest.raises(CheckpointError, match="not found"):
        train(tiny(), tmp_path, resume=True, **QUIET)  # nothing to resume


def test_stale_temporaries_are_removed_at_start(tmp_path):
    for name in ("last.safetensors.k2j_9x0q.tmp", "metrics.json.abcdefgh.tmp", "keep.tmp"):
        (tmp_path / name).write_bytes(b"x" * 100)
    train(tiny(epochs=1), tmp_path, **QUIET)
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == ["keep.tmp"]


def test_resume_from_a_damaged_last_falls_back_to_best(tmp_path):
    """`last` damaged (bit rot): --resume warns and continues from `best` (end of epoch 1);
    the run still ends bit for bit equal to one never stopped."""
    from pixelar.training.checkpoint import CheckpointWarning

    whole = train(tiny(epochs=3), tmp_path / "whole", **QUIET)
    part = tmp_path / "part"
    train(tiny(epochs=3, max_steps=5), part, **QUIET)
    raw = bytearray((part / "last.safetensors").read_bytes())
    raw[-3] ^= 0x10
    (part / "last.safetensors").write_bytes(bytes(raw))
    with pytest.warns(
        CheckpointWarning,
        match="last.safetensors is truncated or corrupted.*"
        r"best.safetensors \(step 3\)",
    ):
        result = train(tiny(epochs=3), part, resume=True, **QUIET)
    assert result["global_step"] == whole["global_step"] == 9
    a = load_checkpoint(part / "last").model_state()
    b = load_checkpoint(tmp_path / "whole" / "last").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- W2: divergence


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = []
    forward = trainer_module.NegLogLikelihood.forward

    def nan_at_fifth(self, x):
        calls.append(1)
        out = forward(self, x)
        return out * float("nan") if len(calls) == 5 else out

    monkeypatch.setattr(trainer_module.NegLogLikelihood, "forward", nan_at_fifth)
    with pytest.raises(
        TrainingDiverged,
        match=r"step 5 \(epoch 2\): non-finite loss \(nan.*"
        r"last good checkpoint.*last.safetensors "
        r"\(step 4\)",
    ):
        train(tiny(checkpoint_every=2), tmp_path, **QUIET)
    ckpt = load_checkpoint(tmp_path / "last")
    assert ckpt.train_state["global_step"] == 4
    ckpt.build_model()  # finite
    monkeypatch.setattr(trainer_module.NegLogLikelihood, "forward", forward)
    assert train(tiny(checkpoint_every=2), tmp_path, resume=True, **QUIET)["global_step"] == 6


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    step = torch.optim.Adam.step
    count = []

    def poisoning_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        count.append(1)
        if len(count) == 2:  # the loss and gradients of step 2 were finite
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoning_step)
    with pytest.raises(TrainingDiverged, match=r"NaN or inf.*\(step 1\)"):
        train(tiny(checkpoint_every=1), tmp_path, **QUIET)
    assert load_checkpoint(tmp_path / "last").train_state["global_step"] == 1


def test_an_overflowing_learning_rate_is_a_divergence_not_a_traceback(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        train(tiny(lr=1e38, clip=None), tmp_path, **QUIET)


# ---------------------------------------------------------------- W5: settings up front


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", -1),
        ("epochs", 0),
        ("batch_size", -5),
        ("batch_size", 0),
        ("train_subset", 0),
        ("train_subset", -10),
        ("val_subset", 0),
        ("eval_batch_size", 0),
        ("max_steps", 0),
        ("checkpoint_every", -1),
        ("lr", float("nan")),
        ("lr", -1.0),
        ("lr", float("inf")),
        ("weight_decay", -1.0),
        ("clip", float("nan")),
        ("clip", -1.0),
        ("patience", -1),
        ("seed", -1),
        ("epochs", 2.5),
        ("data", "foo"),
        ("optimizer", "sgd"),
        ("model", "vae"),
    ],
)
def test_bad_settings_fail_before_any_data_is_read(tmp_path, field, value):
    config = tiny(data="mnist", data_dir=str(tmp_path / "no-data"))  # reading it would fail
    setattr(config, field, value)
    with pytest.raises(
        TrainingError,
        match=field.replace("_", "-") if field not in ("data", "model") else "unknown",
    ):
        train(config, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


@pytest.mark.parametrize(
    "args, match",
    [
        ({"hidden": "abc"}, "hidden"),
        ({"hidden": -5}, "hidden"),
        ({"hidden": 1.5}, "hidden"),
        ({"hidden": 10**9}, "GiB"),
        ({"hidden": 10**30}, "hidden"),
    ],
)
def test_bad_model_arguments_are_training_errors(args, match):
    with pytest.raises(TrainingError, match=match):
        build_model("NADE", args, (1, 8, 8), 2)


def test_bad_layer_is_a_training_error():
    with pytest.raises(TrainingError, match="layer"):
        build_model("PixelRNN", {"layer": "bogus", "num_layers": 1, "hidden": 2}, (1, 4, 4), 2)


def test_unusable_output_folders(tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run", "/proc/pixelar-run"):
        with pytest.raises(TrainingError, match="cannot write the output folder"):
            train(tiny(), out, **QUIET)


# ---------------------------------------------------------------- U6: DDP timeout


def test_ddp_timeout_reaches_init_process_group(monkeypatch):
    seen = {}

    def fake_init(backend, **kwargs):
        seen.update(kwargs, backend=backend)
        raise RuntimeError("stop here")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", fake_init)
    with pytest.raises(RuntimeError, match="stop here"):
        distributed.setup("cpu", timeout=7)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=7)}


def test_a_stopped_peer_fails_the_run_after_the_timeout(tmp_path):
    """Two ranks started by hand (as torchrun would); rank 1 is stopped with SIGSTOP in the
    middle of training: rank 0 must fail within the timeout with one line, not hang."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            PYTHONPATH=ROOT,
            OMP_NUM_THREADS="1",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            PYTHONUNBUFFERED="1",
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pixelar",
                    "train",
                    *TINY_CLI,
                    "--epochs",
                    "100000",
                    "--patience",
                    "0",
                    "--device",
                    "cpu",
                    "--backend",
                    BACKEND,
                    "--no-progress",
                    "--ddp-timeout",
                    "3",
                    "--out",
                    str(tmp_path / "ddp"),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        line = procs[0].stdout.readline()
        while line and not line.startswith("epoch 1/"):
            line = procs[0].stdout.readline()
        assert line, procs[0].stderr.read()
        os.kill(procs[1].pid, signal.SIGSTOP)
        t0 = time.time()
        rc = procs[0].wait(timeout=120)
        waited = time.time() - t0
        err = procs[0].stderr.read()
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
    assert rc == 1 and waited < 60, (rc, waited, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "did not answer within 3 s" in lines[0], err


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT, ignored by the parent shell"])
def test_a_stop_signal_writes_the_last_checkpoint(tmp_path, how):
    """`kill PID` (SIGTERM), or SIGINT to a job a script started in the background (which
    inherits SIGINT ignored), stops `pixelar train` like Ctrl-C: last checkpoint, status 130."""
    ignore_sigint = how.startswith("SIGINT")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelar", "train", *TINY_CLI, "--epochs", "100000",
         "--patience", "0", "--backend", BACKEND, "--no-progress", "--out", str(out)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint
        else None,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not has_checkpoint(out) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert has_checkpoint(out), "no checkpoint within 120 s"
        proc.send_signal(signal.SIGINT if ignore_sigint else signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert load_checkpoint(out / "last").train_state["status"] == "interrupted"


def _drop_a_stop_signal_at(step):
    """on_step hook: at ``step``, deliver SIGTERM and swallow its KeyboardInterrupt, as
    CPython does when the handler runs inside a weakref callback or a ``__del__``."""

    def on_step(global_step):
        if global_step == step:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here, at the latest
            except KeyboardInterrupt:
                pass
            else:
                raise AssertionError("SIGTERM did not raise KeyboardInterrupt")

    return on_step


def test_a_stop_signal_whose_interrupt_was_dropped_still_stops_training(tmp_path):
    """A dropped KeyboardInterrupt (the stop signal arrived inside a garbage-collector
    callback) stops training at the next step, with the last checkpoint written."""
    previous = signal.getsignal(signal.SIGTERM)
    with stop_signals():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            train(tiny(epochs=5), tmp_path, on_step=_drop_a_stop_signal_at(4), **QUIET)
        state = load_checkpoint(tmp_path / "last").train_state
        assert (state["global_step"], state["status"]) == (4, "interrupted")
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored, stop forgotten
    raise_if_stopped()
