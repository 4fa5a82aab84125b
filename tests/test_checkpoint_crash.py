"""Crash safety of checkpoints: a real training process is killed with SIGKILL at points
inside a checkpoint write (PIXELAR_FAULT makes the writer stop there; the test kills it),
then the run must load, and --resume must end bit for bit equal to a run never stopped.
Also: format-1 checkpoints (a .safetensors + .json pair, written by pixelar before format
2) are resumed, evaluated, and upgraded, even when the upgrade itself is killed."""

import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

import pixelar
from pixelar.training import TrainConfig, load_checkpoint, train
from pixelar.training import trainer as trainer_module
from pixelar.training.checkpoint import CheckpointWarning

from training_testing import TINY_CLI

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = "auto" if pixelar._extension.has_kernel("nade_forward", "CPU") else "reference"
QUIET = dict(progress=False, log=lambda *a, **k: None)
# 3 steps of 32 per epoch, a checkpoint after every step: `last` is written at steps 1, 2,
# 3, at the end of epoch 1 (4th write, after `best`), 4, ...
CONFIG = dict(
    model="nade",
    model_args={"hidden": 6},
    data="digits-binary",
    train_subset=96,
    val_subset=32,
    batch_size=32,
    epochs=3,
    lr=0.01,
    patience=None,
    checkpoint_every=1,
    optimizer="rmsprop",
)
CLI = [
    *TINY_CLI,
    "--epochs",
    "3",
    "--lr",
    "0.01",
    "--patience",
    "0",
    "--checkpoint-every",
    "1",
    "--optimizer",
    "rmsprop",
    "--threads",
    "1",
    "--backend",
    BACKEND,
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def _backend():
    with pixelar.ops.backend(BACKEND):
        yield


def weights(folder):
    ckpt = load_checkpoint(os.path.join(folder, "last"))
    return {k: v for k, v in ckpt.tensors.items() if not k.startswith("rng.")}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The run never stopped: (last weights, validation history)."""
    out = tmp_path_factory.mktemp("whole")
    with pixelar.ops.backend(BACKEND):
        result = train(TrainConfig(**CONFIG), out, **QUIET)
    return weights(out), [h["val_bpd"] for h in result["history"]]


def kill_during_write(out, fault, extra=()):
    """Run `pixelar train` into ``out`` in a child process that stops at ``fault``
    (LABEL:STAGE:K), kill it with SIGKILL there, and return."""
    marker = str(out) + ".paused"
    env = dict(
        os.environ,
        PYTHONPATH=ROOT,
        OMP_NUM_THREADS="1",
        PIXELAR_FAULT=fault,
        PIXELAR_FAULT_MARKER=marker,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelar", "train", *CLI, "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not os.path.exists(marker):
        if proc.poll() is not None:
            pytest.fail(
                f"the child ended (rc {proc.returncode}) before reaching {fault}:\n"
                + proc.stdout.read()
            )
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"the child did not reach {fault} in time")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    os.remove(marker)


def temporaries(folder):
    return [f for f in os.listdir(folder) if f.endswith(".tmp")]


@pytest.mark.parametrize(
    "fault, step",
    [
        ("last:partial:2", 1),  # half of the new file written: the old one (step 1) stands
        ("last:written:3", 2),  # complete temporary, not yet renamed
        ("last:replaced:5", 4),  # renamed: the new one (step 4) is in place
        ("best:start:1", 3),  # first `best`, nothing written yet: `last` at step 3 stands
        ("best:partial:2", 6),  # second `best`, half written
    ],
)
def test_kill_inside_a_checkpoint_write_then_resume_is_bitwise_equal(tmp_path, whole, fault, step):
    """``step``: the global step of the `last` checkpoint the kill leaves."""
    out = tmp_path / "run"
    kill_during_write(out, fault)
    label, stage, _ = fault.split(":")
    ckpt = load_checkpoint(out / "last")
    assert ckpt.version == 2 and ckpt.train_state["global_step"] == step
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # nothing damaged: no fallback
        load_checkpoint(out)  # what eval / sample read: best, else last
    if stage in ("partial", "written"):
        assert temporaries(out)  # the killed write left its temporary ...
    result = train(TrainConfig(**CONFIG), out, resume=True, **QUIET)
    assert not temporaries(out)  # ... which the resumed run removed
    assert result["status"] == "finished" and result["global_step"] == 9
    weights_whole, history_whole = whole
    assert_bitwise_equal(weights(out), weights_whole)
    assert [h["val_bpd"] for h in result["history"]] == history_whole


def test_kill_in_the_first_write_leaves_no_checkpoint_and_a_clean_restart(tmp_path, whole):
    out = tmp_path / "run"
    kill_during_write(out, "last:partial:1")
    assert temporaries(out) and not any(f.endswith(".safetensors") for f in os.listdir(out))
    result = train(TrainConfig(**CONFIG), out, **QUIET)  # no checkpoint: a plain start works
    assert result["global_step"] == 9 and not temporaries(out)
    assert_bitwise_equal(weights(out), whole[0])


# ---------------------------------------------------------------- format 1 (legacy pairs)


def legacy_run(out, steps):
    """A run paused after ``steps`` steps, every checkpoint written by the format-1 writer
    of the starting commit (tests/legacy_checkpoint.py)."""
    from legacy_checkpoint import save_checkpoint_v1

    original = trainer_module.save_checkpoint
    trainer_module.save_checkpoint = save_checkpoint_v1
    try:
        train(TrainConfig(**{**CONFIG, "max_steps": steps}), out, **QUIET)
    finally:
        trainer_module.save_checkpoint = original
    assert {"last.json", "last.safetensors", "best.json", "best.safetensors"} <= set(
        os.listdir(out)
    )
    assert load_checkpoint(out / "last").version == 1


def test_format1_run_evaluates_resumes_and_is_upgraded(tmp_path, whole):
    out = tmp_path / "run"
    legacy_run(out, 4)
    model = load_checkpoint(out).build_model()  # `pixelar eval DIR` reads best
    assert type(model).__name__ == "NADE"
    result = train(TrainConfig(**CONFIG), out, resume=True, **QUIET)
    assert result["global_step"] == 9
    assert_bitwise_equal(weights(out), whole[0])
    names = set(os.listdir(out))
    assert "last.json" not in names and "best.json" not in names  # replaced by format 2
    assert load_checkpoint(out / "last").version == load_checkpoint(out / "best").version == 2


@pytest.mark.parametrize("fault", ["last:written:1", "last:replaced:1"])
def test_kill_during_the_upgrade_from_format1(tmp_path, whole, fault):
    """The first format-2 write over a format-1 pair, killed before and after its rename."""
    out = tmp_path / "run"
    legacy_run(out, 4)
    kill_during_write(out, fault, extra=["--resume"])
    ckpt = load_checkpoint(out / "last")
    assert (ckpt.version, ckpt.train_state["global_step"]) == (
        (1, 4) if fault.endswith("written:1") else (2, 5)
    )
    result = train(TrainConfig(**CONFIG), out, resume=True, **QUIET)
    assert result["global_step"] == 9
    assert_bitwise_equal(weights(out), whole[0])


def test_damaged_format1_best_falls_back_to_last(tmp_path):
    """The S1 case of format 1: killed between best.safetensors and best.json. `eval DIR`
    uses the intact last, with a warning."""
    out = tmp_path / "run"
    legacy_run(out, 4)
    raw = bytearray((out / "best.safetensors").read_bytes())
    raw[-1] ^= 0xFF  # best.json now records the hash of another tensors file
    (out / "best.safetensors").write_bytes(bytes(raw))
    with pytest.warns(CheckpointWarning, match="best.safetensors is truncated or corrupted"):
        ckpt = load_checkpoint(out)
    assert ckpt.path.endswith("last.json") and ckpt.train_state["global_step"] == 4
