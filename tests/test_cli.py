"""The pixelar command end to end on tiny settings: every subcommand, resume through the
CLI, and clear one-line errors (damaged checkpoint, missing data, backend not built)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pixelar
from pixelar.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_CPP = all(
    pixelar._extension.has_kernel(op, "CPU") for op in ("nade_forward", "diagonal_lstm_scan")
)
BACKEND = "auto" if HAS_CPP else "reference"
COMMON = ["--backend", BACKEND, "--device", "cpu", "--no-progress"]
NADE_ARGS = [
    "--model",
    "nade",
    "--model-arg",
    "hidden=6",
    "--data",
    "digits-binary",
    "--train-subset",
    "64",
    "--val-subset",
    "32",
    "--batch-size",
    "32",
    "--lr",
    "0.01",
    "--epochs",
    "2",
]
PIXELRNN_ARGS = [
    "--model",
    "PixelRNN",
    "--model-arg",
    "layer=diagonal",
    "--model-arg",
    "num_layers=1",
    "--model-arg",
    "hidden=4",
    "--model-arg",
    "head_hidden=4",
    "--data",
    "digits-binary",
    "--train-subset",
    "32",
    "--val-subset",
    "16",
    "--batch-size",
    "16",
    "--lr",
    "0.01",
    "--epochs",
    "1",
]


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def nade_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nade")
    assert run("train", *NADE_ARGS, *COMMON, "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def pixelrnn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pixelrnn")
    assert run("train", *PIXELRNN_ARGS, *COMMON, "--out", out) == 0
    return out


@pytest.mark.parametrize(
    "command", ["demo", "train", "eval", "sample", "score", "features", "bench"]
)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: pixelar " + command in capsys.readouterr().out


def test_python_dash_m_pixelar():
    proc = subprocess.run(
        [sys.executable, "-m", "pixelar", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    for command in ("demo", "train", "eval", "sample", "score", "features", "bench"):
        assert command in proc.stdout


def test_train_writes_checkpoints_and_metrics(nade_run):
    metrics = json.loads((nade_run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["history"]) == 2
    assert metrics["config"]["model_args"] == {"hidden": 6}
    meta = pixelar.training.load_checkpoint(nade_run / "best.safetensors").meta
    assert meta["model_class"] == "NADE" and meta["model_config"]["hidden"] == 6


def test_eval(nade_run, tmp_path, capsys):
    assert run("eval", nade_run, "--json", tmp_path / "m.json", *COMMON) == 0
    assert "bits/dim" in capsys.readouterr().out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["split"] == "test" and m["n"] == 359 and m["data"] == "digits-binary"
    assert 0 < m["bits_per_dim"] < 1.1 and m["bits_per_dim_ci95"] > 0
    assert m["nll_nats"] == pytest.approx(m["bits_per_dim"] * 64 * np.log(2))


def test_sample_png_and_npy_reproducible(nade_run, tmp_path):
    for name in ("a", "b"):
        assert (
            run(
                "sample", nade_run, "-n", 6, "--seed", 3, "--out", tmp_path / f"{name}.png", *COMMON
            )
            == 0
        )
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (6, 1, 8, 8) and a.dtype == np.int64 and np.array_equal(a, b)
    with Image.open(tmp_path / "a.png") as im:
        assert im.size[0] >= 3 * 64  # upscaled so it is visible
    assert (
        run(
            "sample",
            nade_run,
            "-n",
            6,
            "--seed",
            3,
            "--naive",
            "--out",
            tmp_path / "naive.png",
            *COMMON,
        )
        == 0
    )
    assert np.array_equal(np.load(tmp_path / "naive.npy"), a)  # fast == naive sampler


def test_sample_condition_top_keeps_the_top_rows(pixelrnn_run, tmp_path):
    assert (
        run(
            "sample",
            pixelrnn_run,
            "-n",
            4,
            "--condition-top",
            3,
            "--out",
            tmp_path / "c.png",
            *COMMON,
        )
        == 0
    )
    completions = np.load(tmp_path / "c.npy")
    originals = pixelar.data.load("digits-binary", "test").images[:4].numpy()
    assert completions.shape == (4, 1, 8, 8)
    assert np.array_equal(completions[:, :, :3], originals[:, :, :3])
    with Image.open(tmp_path / "c.png") as im:
        assert im.size[0] > 4 * 64  # originals beside completions: 4 columns or more


def test_score_with_corrupted_digits(nade_run, tmp_path, capsys):
    out = tmp_path / "score"
    assert (
        run("score", nade_run, "--ood-corrupt", "flip:0.3", "--limit", 100, "--out", out, *COMMON)
        == 0
    )
    report = json.loads((out / "score.json").read_text())
    assert report["in"]["n"] == report["ood"]["n"] == 100
    assert report["auroc"] > 0.7  # 30% flipped pixels are clearly less likely
    assert np.load(out / "nll_in.npy").shape == (100,)
    assert (out / "histogram.png").stat().st_size > 1000
    assert "AUROC" in capsys.readouterr().out


def test_score_with_ood_dataset_and_alone(nade_run, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(20):  # an "other" dataset: random binary 8x8 PNGs
        bits = rng.randint(0, 2, (8, 8)).astype(bool)
        Image.fromarray(bits).convert("1").save(folder / f"{i}.png")
    out = tmp_path / "score"
    assert (
        run(
            "score",
            nade_run,
            "--ood-data",
            "png",
            "--ood-data-dir",
            folder,
            "--ood-split",
            "train",
            "--limit",
            50,
            "--out",
            out,
            *COMMON,
        )
        == 0
    )
    assert json.loads((out / "score.json").read_text())["auroc"] > 0.75  # noise is unlikely
    assert run("score", nade_run, "--limit", 10, "--out", tmp_path / "alone", *COMMON) == 0
    assert "auroc" not in json.loads((tmp_path / "alone" / "score.json").read_text())


@pytest.mark.parametrize("which", ["nade", "pixelrnn"])
def test_features_linear_probe(which, nade_run, pixelrnn_run, tmp_path, capsys):
    folder = nade_run if which == "nade" else pixelrnn_run
    out = tmp_path / "f"
    assert run("features", folder, "--limit", 300, "--out", out, *COMMON) == 0
    report = json.loads((out / "features.json").read_text())
    assert report["feature_dim"] == (6 if which == "nade" else 4)
    assert 0 <= report["probe_accuracy"] <= 1 and report["raw_pixels_accuracy"] > 0.8
    assert np.load(out / "features_train.npy").shape == (300, report["feature_dim"])
    assert "raw pixels" in capsys.readouterr().out


def test_resume_through_the_cli_matches_one_run(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run("train", *NADE_ARGS, *COMMON, "--out", whole) == 0
    assert run("train", *NADE_ARGS, *COMMON, "--out", part, "--max-steps", 3) == 0
    assert json.loads((part / "metrics.json").read_text())["status"] == "paused"
    assert run("train", *NADE_ARGS, *COMMON, "--out", part, "--resume") == 0
    from safetensors.torch import load_file

    a, b = load_file(whole / "last.safetensors"), load_file(part / "last.safetensors")
    for k in a:
        if not k.startswith("rng."):
            assert torch.equal(a[k], b[k]), k


def test_damaged_checkpoint_is_one_clear_line(nade_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "best.safetensors").write_bytes((nade_run / "best.safetensors").read_bytes()[:-40])
    assert run("eval", bad, *COMMON) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupted" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert run("sample", tmp_path / "nothing", *COMMON) == 2
    assert "not found" in capsys.readouterr().err


def test_missing_data_file_says_what_to_put_where(tmp_path, capsys):
    assert (
        run(
            "train",
            "--model",
            "nade",
            "--data",
            "mnist",
            "--data-dir",
            tmp_path,
            "--out",
            tmp_path / "o",
            *COMMON,
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err


def test_backend_that_is_not_available_is_a_clear_error(tmp_path, capsys):
    # 'cuda' cannot run CPU tensors: the op refuses, and the CLI says what to do instead
    assert (
        run(
            "train",
            *NADE_ARGS,
            "--backend",
            "cuda",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            tmp_path / "o",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "backend 'cuda'" in err and "--backend reference" in err and "Traceback" not in err


def test_bench_runs_scripts_or_says_they_are_missing(capsys, monkeypatch, tmp_path):
    import pixelar.cli.bench as bench

    monkeypatch.setattr(bench, "benchmarks_dir", lambda: str(tmp_path))
    assert run("bench", "ops") == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "ops.py").write_text("import sys; print('ops bench', sys.argv[1:])\n")
    assert run("bench", "ops", "--quick") == 0


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--quick", "--out", out, *COMMON) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "bits/dim" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"independent", "nade", "pixelrnn"}
    for name, entry in metrics["models"].items():
        assert entry["test"]["bits_per_dim"] > 0
        assert (out / entry["checkpoint"]).is_file()
    for png in ("samples_pixelrnn.png", "samples_nade.png"):
        assert (out / png).stat().st_size > 200


def test_grey_data_is_binarized_for_a_binary_model(nade_run, tmp_path, capsys):
    assert (
        run(
            "eval",
            nade_run,
            "--data",
            "digits",
            "--limit",
            20,
            "--json",
            tmp_path / "grey.json",
            *COMMON,
        )
        == 0
    )
    assert "binarizing" in capsys.readouterr().out
    assert run("eval", nade_run, "--limit", 20, "--json", tmp_path / "binary.json", *COMMON) == 0
    grey = json.loads((tmp_path / "grey.json").read_text())
    binary = json.loads((tmp_path / "binary.json").read_text())
    assert grey["nll_nats"] == pytest.approx(binary["nll_nats"])  # digits >= 8 == digits-binary
    assert run("eval", nade_run, "--data", "digits28-binary", *COMMON) == 2
    assert "shape" in capsys.readouterr().err


# ---------------------------------------------------------------- one-line user errors


def run_err(capsys, *argv):
    """(exit status, stderr) of ``pixelar argv``; argparse's exits count as statuses."""
    try:
        rc = run(*argv)
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


def assert_one_line(err, command, *words):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"pixelar {command}: error: "), err
    for word in words:
        assert word in lines[0], (word, err)


TRAIN_ERRORS = [
    (["--lr", "nan"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-5"], "--batch-size"),
    (["--train-subset", "0"], "--train-subset"),
    (["--train-subset", "-10"], "--train-subset"),
    (["--val-subset", "0"], "--val-subset"),
    (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--epochs", "-1"], "--epochs"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--clip", "nan"], "--clip"),
    (["--threads", "-1"], "--threads"),
    (["--max-steps", "0"], "--max-steps"),
    (["--patience", "-2"], "--patience"),
    (["--ddp-timeout", "0"], "--ddp-timeout"),
    (["--seed", "-1"], "--seed"),
    (["--model-arg", "hidden=abc"], "hidden"),
    (["--model-arg", "hidden=-5"], "hidden"),
    (["--model-arg", "hidden=1000000000"], "GiB"),
    (["--model-arg", "hidden"], "KEY=VALUE"),
    (["--model", "pixelrnn", "--model-arg", "layer=bogus"], "layer"),
    (["--data", "foo"], "unknown dataset"),
    (["--model", "vae"], "unknown model"),
    (["--resume", "--overwrite"], "--overwrite"),
]


@pytest.mark.parametrize("extra, word", TRAIN_ERRORS, ids=[" ".join(e) for e, _ in TRAIN_ERRORS])
def test_train_user_errors_are_one_line_and_status_2(tmp_path, capsys, extra, word):
    rc, err = run_err(capsys, "train", *NADE_ARGS, *COMMON, "--out", tmp_path / "o", *extra)
    assert rc == 2
    assert_one_line(err, "train", word)
    assert not (tmp_path / "o").exists() or not [
        f for f in os.listdir(tmp_path / "o") if f != "run.lock"
    ]


CHECKPOINT_ERRORS = [
    ("eval", ["--limit", "0"], "--limit"),
    ("eval", ["--limit", "-5"], "--limit"),
    ("eval", ["--batch-size", "0"], "--batch-size"),
    ("eval", ["--data", "foo"], "foo"),
    ("sample", ["-n", "0"], "-n"),
    ("sample", ["-n", "-3"], "-n"),
    ("sample", ["-n", "100000000"], "-n"),
    ("sample", ["--ncol", "-1"], "--ncol"),
    ("sample", ["--condition-top", "99"], "--condition-top"),
    ("score", ["--ood-corrupt", "flip:2"], "--ood-corrupt"),
    ("score", ["--ood-corrupt", "flip:nan"], "--ood-corrupt"),
    ("score", ["--limit", "0"], "--limit"),
    ("features", ["--limit", "0"], "--limit"),
    ("eval", ["--threads", "0"], "--threads"),
]


@pytest.mark.parametrize(
    "command, extra, word",
    CHECKPOINT_ERRORS,
    ids=[f"{c} {' '.join(e)}" for c, e, _ in CHECKPOINT_ERRORS],
)
def test_checkpoint_command_user_errors_are_one_line(
    nade_run, tmp_path, capsys, command, extra, word
):
    out = ["--out", tmp_path / "o.png" if command == "sample" else tmp_path / "o"]
    rc, err = run_err(
        capsys, command, nade_run, *COMMON, *(out if command != "eval" else []), *extra
    )
    assert rc == 2
    assert_one_line(err, command, word)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["train", "eval"])
def test_device_cuda_without_a_gpu(nade_run, tmp_path, capsys, command):
    args = [*NADE_ARGS, "--out", tmp_path / "o"] if command == "train" else [nade_run]
    rc, err = run_err(
        capsys, command, *args, "--backend", BACKEND, "--device", "cuda", "--no-progress"
    )
    assert rc == 2
    assert_one_line(err, command, "CUDA")


# ---------------------------------------------------------------- output paths, up front


def test_train_output_folder_is_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    no_data = ["--data", "mnist", "--data-dir", tmp_path / "missing"]  # would fail later
    for out, word in [
        (tmp_path / "file", "is a file"),
        (tmp_path / "file" / "x", "cannot write"),
        ("/proc/pixelar-run", "cannot write"),
    ]:
        rc, err = run_err(capsys, "train", "--model", "nade", *no_data, *COMMON, "--out", out)
        assert rc == 2
        assert_one_line(err, "train", word, "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, err = run_err(capsys, "train", *NADE_ARGS, *COMMON, "--out", ro / "run")
        assert rc == 2
        assert_one_line(err, "train", "cannot write")
    finally:
        ro.chmod(0o700)


def test_checkpoint_command_outputs_are_checked_before_the_work(nade_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    under_file = tmp_path / "file" / "x"
    cases = [
        ("sample", ["--out", tmp_path / "grid.txt"], "image extension"),
        ("sample", ["--out", tmp_path], "is a folder"),
        ("sample", ["--out", under_file / "s.png"], "cannot write"),
        ("eval", ["--json", under_file / "m.json"], "cannot write"),
        ("eval", ["--json", tmp_path], "is a folder"),
        ("score", ["--out", tmp_path / "file"], "is a file"),
        ("features", ["--out", under_file], "cannot write"),
        ("score", ["--out", "/proc/pixelar-score"], "cannot write"),
    ]
    for command, extra, word in cases:
        rc, err = run_err(capsys, command, nade_run, *COMMON, *extra)
        assert rc == 2, (command, extra)
        assert_one_line(err, command, word)


# ---------------------------------------------------------------- failures while running


def test_non_finite_weights_are_refused_by_every_reading_command(nade_run, tmp_path, capsys):
    ckpt = pixelar.training.load_checkpoint(nade_run / "best")
    model = ckpt.build_model()
    with torch.no_grad():
        model.W[0, 0] = float("nan")
    bad = tmp_path / "nan"
    pixelar.training.save_checkpoint(bad / "best", model, train_state=ckpt.train_state)
    for command in ("eval", "sample", "score", "features"):
        extra = ["--out", tmp_path / "s.png"] if command == "sample" else []
        rc, err = run_err(capsys, command, bad, *COMMON, *extra)
        assert rc == 2
        assert_one_line(err, command, "non-finite")
    assert not (tmp_path / "s.png").exists()


def test_lr_inf_is_refused_and_divergence_is_one_line(tmp_path, capsys):
    rc, err = run_err(capsys, "train", *NADE_ARGS, *COMMON, "--lr", "inf", "--out", tmp_path / "a")
    assert rc == 2
    assert_one_line(err, "train", "--lr")
    rc, err = run_err(
        capsys, "train", *NADE_ARGS, *COMMON, "--lr", "1e38", "--clip", "0", "--out", tmp_path / "b"
    )
    assert rc == 1
    assert_one_line(err, "train", "diverged")


def test_disk_full_during_training_is_one_line_and_keeps_the_checkpoint(
    tmp_path, capsys, monkeypatch
):
    import errno

    from pixelar.training import atomic

    calls, write_chunks = [], atomic.write_chunks

    def full_on_third(f, data, label=None):
        calls.append(label)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_chunks(f, data, label)

    monkeypatch.setattr(atomic, "write_chunks", full_on_third)
    out = tmp_path / "run"
    rc, err = run_err(capsys, "train", *NADE_ARGS, *COMMON, "--checkpoint-every", "1", "--out", out)
    assert rc == 1 and calls == ["last", "last", "best"]
    assert_one_line(err, "train", "No space left on device", "previous")
    assert [f for f in os.listdir(out) if f.endswith(".tmp")] == []
    monkeypatch.setattr(atomic, "write_chunks", write_chunks)
    ckpt = pixelar.training.load_checkpoint(out / "last")
    assert ckpt.train_state["global_step"] == 2
    assert (
        run("train", *NADE_ARGS, *COMMON, "--checkpoint-every", "1", "--out", out, "--resume") == 0
    )


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, capsys):
    from pixelar.training.run_lock import RunLock

    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        rc, err = run_err(capsys, "train", *NADE_ARGS, *COMMON, "--out", out)
    assert rc == 2
    assert_one_line(err, "train", "in use by", f"pid {os.getpid()}")


def test_a_damaged_best_is_skipped_with_a_one_line_warning(nade_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("best.safetensors", "last.safetensors"):
        (run_dir / name).write_bytes((nade_run / name).read_bytes())
    (run_dir / "best.safetensors").write_bytes((run_dir / "best.safetensors").read_bytes()[:-9])
    assert run("eval", run_dir, "--limit", 10, *COMMON) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pixelar eval: warning: skipping a damaged")
    assert "last.safetensors" in lines[0]


def test_errors_are_reported_by_one_table(monkeypatch, capsys):
    import pixelar.cli.errors as errors
    import pixelar.cli.plot as plot

    class Unavailable(RuntimeError):
        pass

    def fail(args):
        raise failure

    monkeypatch.setattr(plot, "run", fail)
    failure = Unavailable("no kernel for this device")
    with pytest.raises(Unavailable):  # a type the table does not know propagates
        run("plot", "somewhere")
    monkeypatch.setattr(
        errors, "ERRORS", [((Unavailable,), 2, errors._backend_message)] + errors.ERRORS
    )
    assert run("plot", "somewhere") == 2  # one row makes it a one-line error
    err = capsys.readouterr().err
    assert (
        err.startswith(
            "pixelar plot: error: backend 'auto' cannot run this model here: "
            "no kernel for this device"
        )
        and "--backend reference" in err
    )
    failure = RuntimeError("something else")
    with pytest.raises(RuntimeError, match="something else"):
        run("plot", "somewhere")


def test_entry_point_exits_with_the_status_and_130_by_os_exit(monkeypatch):
    """The process entry (console script, python -m pixelar) exits with main()'s status; an
    interrupted command (130) ends through os._exit, so that CPython's exit-time SIGINT
    (after a KeyboardInterrupt left a PyRun_* call in a C extension) cannot replace it."""
    import pixelar.cli as cli

    exits = []

    def fake_os_exit(status):
        exits.append(("os._exit", status))
        raise SystemExit(status)  # stop here, as os._exit would

    monkeypatch.setattr(cli.os, "_exit", fake_os_exit)
    for status, expected in [(0, ("sys.exit", 0)), (2, ("sys.exit", 2)), (130, ("os._exit", 130))]:
        monkeypatch.setattr(cli, "main", lambda s=status: s)
        exits.clear()
        with pytest.raises(SystemExit) as info:
            cli.entry_point()
        assert info.value.code == status
        assert (exits[0] if exits else ("sys.exit", info.value.code)) == expected
