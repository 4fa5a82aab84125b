"""Watching a training run (pixelar.training.history): history.csv and curve.png after
every epoch, TensorBoard scalars, ``pixelar plot``; and the trainer's time budget
(max_time / --time-budget) and dynamic binarization, both resumed exactly."""

import importlib.util
import json
import math
import os
import sys

import pytest
import torch

import pixelar
from pixelar.cli import main
from pixelar.training import TrainConfig, TrainingError, history, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_TB = importlib.util.find_spec("tensorboard") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


from training_testing import BACKEND, QUIET, tiny, training_backend  # noqa: E402,F401


def weights(folder):
    ckpt = load_checkpoint(os.path.join(folder, "last"))
    return {k: v for k, v in ckpt.tensors.items() if not k.startswith("rng.")}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    with pixelar.ops.backend(BACKEND):
        train(tiny(), root / "a", **QUIET)
        train(tiny(lr=3e-2, epochs=3), root / "b", **QUIET)
    return root / "a", root / "b"


def test_history_csv_after_every_epoch(two_runs):
    run = two_runs[1]
    rows = history.read_csv(run / history.CSV_NAME)
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["step"] for r in rows] == [3, 6, 9]
    assert list(rows[0]) == list(history.COLUMNS)
    for row, entry in zip(rows, metrics["history"]):
        assert row["val_bpd"] == pytest.approx(entry["val_bpd"], rel=1e-5)
        assert row["val_nats"] == pytest.approx(entry["val_bpd"] * 64 * math.log(2), rel=1e-5)
        assert row["train_nats"] == pytest.approx(entry["train_bpd"] * 64 * math.log(2), rel=1e-5)
    hours = [r["hours"] for r in rows]
    assert all(h > 0 for h in hours) and hours == sorted(hours)


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib not installed")
def test_curve_png_after_every_epoch(two_runs):
    for run in two_runs:
        assert (run / history.PNG_NAME).read_bytes()[:8] == PNG_MAGIC


def test_without_matplotlib_csv_only_and_one_note(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "_figure", lambda *a, **k: None)
    monkeypatch.setattr(history, "_said_no_matplotlib", False)
    lines = []
    train(tiny(epochs=3), tmp_path, progress=False, log=lines.append)
    notes = [line for line in lines if "pip install matplotlib" in line]
    assert len(notes) == 1
    assert (tmp_path / history.CSV_NAME).is_file()
    assert not (tmp_path / history.PNG_NAME).exists()


def test_history_rows_of_runs_from_before_the_csv():
    old = [
        {"epoch": 1, "train_bpd": 0.2, "val_bpd": 0.1, "seconds": 1800.0},
        {"epoch": 2, "train_bpd": 0.15, "val_bpd": 0.09, "seconds": 1800.0},
    ]
    rows = history.history_rows(old, num_dims=784)
    assert [r["hours"] for r in rows] == [0.5, 1.0]
    assert rows[1]["val_nats"] == pytest.approx(0.09 * 784 * math.log(2))
    assert rows[0]["step"] is None
    assert history.history_rows(old)[0]["val_nats"] is None


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib not installed")
def test_pixelar_plot_several_runs(two_runs, tmp_path, capsys):
    out = tmp_path / "both.png"
    assert main(["plot", *map(str, two_runs), "--out", str(out), "--unit", "nats", "--train"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "a 2 epochs" in capsys.readouterr().out
    runs = [history.load_run(r) for r in two_runs]
    assert history.plot_runs(tmp_path / "ref.png", runs, reference={"a": 40.0}) is not None


def test_pixelar_plot_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unit"):
        history.plot_runs(tmp_path / "x.png", [], unit="bits")


def test_tensorboard_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(TrainingError, match="pip install tensorboard"):
        train(tiny(epochs=1, tensorboard=True), tmp_path, **QUIET)
    args = [
        "train",
        "--model",
        "nade",
        "--model-arg",
        "hidden=6",
        "--data",
        "digits-binary",
        "--train-subset",
        "32",
        "--val-subset",
        "16",
        "--epochs",
        "1",
        "--no-progress",
        "--tensorboard",
        "--out",
        str(tmp_path / "cli"),
    ]
    assert main(args) == 2


@pytest.mark.skipif(not HAS_TB, reason="tensorboard not installed")
def test_tensorboard_events(tmp_path):
    train(tiny(epochs=2, tensorboard=True), tmp_path, **QUIET)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / history.TENSORBOARD_DIR))
    acc.Reload()
    val = acc.Scalars("val/bpd")
    assert [e.step for e in val] == [1, 2]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert val[1].value == pytest.approx(metrics["history"][1]["val_bpd"], rel=1e-6)
    assert "train/nats" in acc.Tags()["scalars"]


# ---------------------------------------------------------------------------- time budget


def test_time_budget_pauses_and_resume_matches(tmp_path):
    config = tiny(epochs=2, optimizer="rmsprop")
    train(config, tmp_path / "whole", **QUIET)
    paused = train(TrainConfig(**{**config.__dict__, "max_time": 1e-9}), tmp_path / "part", **QUIET)
    assert paused["status"] == "paused" and paused["global_step"] == 0
    assert load_checkpoint(tmp_path / "part" / "last").train_state["status"] == "paused"
    done = train(config, tmp_path / "part", resume=True, **QUIET)
    assert done["status"] == "finished" and done["global_step"] == 6
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TrainingError, match="max_time"):
        train(tiny(max_time=0), tmp_path / "bad", **QUIET)


def test_time_budget_cli(tmp_path, capsys):
    args = [
        "train",
        "--model",
        "nade",
        "--model-arg",
        "hidden=6",
        "--data",
        "digits-binary",
        "--train-subset",
        "64",
        "--val-subset",
        "16",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert main(args + ["--time-budget", "1e-9"]) == 0
    assert "paused" in capsys.readouterr().out
    assert main(args + ["--resume"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------------------- binarize


def test_dynamic_binarization_trains_and_resumes_exactly(tmp_path):
    config = tiny(data="digits", binarize="dynamic", epochs=2, batch_size=32)
    whole = train(config, tmp_path / "whole", **QUIET)
    assert whole["status"] == "finished"
    assert load_checkpoint(tmp_path / "whole" / "last").meta["model_config"].get("image_shape") == [
        1,
        8,
        8,
    ]
    train(TrainConfig(**{**config.__dict__, "max_steps": 4}), tmp_path / "part", **QUIET)
    train(config, tmp_path / "part", resume=True, **QUIET)
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a fixed threshold gives other weights: the draws are really stochastic
    train(tiny(data="digits", binarize="threshold", epochs=2), tmp_path / "thr", **QUIET)
    assert not torch.equal(a["model.W"], weights(tmp_path / "thr")["model.W"])


def test_old_bool_binarize_still_loads(tmp_path):
    train(tiny(data="digits", binarize=True, epochs=1), tmp_path / "old", **QUIET)
    stored = load_checkpoint(tmp_path / "old" / "last").train_state["config"]
    assert stored["binarize"] is True
    assert main(["eval", str(tmp_path / "old"), "--no-progress", "--limit", "8"]) == 0
    with pytest.raises(TrainingError, match="binarize"):
        train(tiny(binarize="sometimes"), tmp_path / "bad", **QUIET)


@pytest.mark.parametrize("command", ["plot", "data"])
def test_new_subcommands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: pixelar " + command in capsys.readouterr().out
