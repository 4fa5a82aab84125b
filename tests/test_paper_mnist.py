"""benchmarks/paper_mnist.py end to end on a tiny synthetic binarized MNIST: training with
a budget and resume, adopting a run only with the same settings, the report (JSON, table,
curves, sample and completion grids) and --report-only reusing unchanged evaluations."""

import importlib.util
import json
import os

import numpy as np
import pytest

import pixelar
from pixelar.data.binarize import AMAT_NAMES, write_amat

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_CPP = all(
    pixelar._extension.has_kernel(op, "CPU") for op in ("nade_forward", "diagonal_lstm_scan")
)


def _script():
    spec = importlib.util.spec_from_file_location(
        "paper_mnist", os.path.join(ROOT, "benchmarks", "paper_mnist.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_amat(tmp_path):
    rng = np.random.RandomState(0)
    for split, n in (("train", 32), ("val", 16), ("test", 12)):
        write_amat(tmp_path / AMAT_NAMES[split], (rng.rand(n, 784) < 0.2).astype(np.uint8))
    return tmp_path


@pytest.mark.skipif(not HAS_CPP, reason="needs the compiled kernels (seconds instead of minutes)")
def test_paper_mnist_end_to_end(tiny_amat, tmp_path, capsys):
    pm = _script()
    runs, results = tmp_path / "runs", tmp_path / "results"
    common = [
        "--data-dir",
        str(tiny_amat),
        "--runs-dir",
        str(runs),
        "--results-dir",
        str(results),
        "--models",
        "nade,diagonal_1x32",
        "--busy-minutes",
        "0",
        "--train-subset",
        "16",
        "--val-subset",
        "8",
        "--test-limit",
        "6",
        "--completions",
        "3",
    ]
    with pixelar.ops.backend("auto"):
        assert pm.main(common + ["--epochs", "1", "--train-only"]) == 0
        assert not results.exists()
        assert pm.main(common + ["--epochs", "2"]) == 0  # continues both runs
    report = json.loads((results / "paper_mnist.json").read_text())
    rows = {r["key"]: r for r in report["models"]}
    assert set(rows) == {"nade", "diagonal_1x32"}
    for key, paper in (("nade", 88.33), ("diagonal_1x32", 80.75)):
        r = rows[key]
        assert r["paper_nats"] == paper and r["epochs"] == 2 and r["test"]["n"] == 6
        assert r["test"]["nll_nats"] > 0 and r["hours"] > 0
        for name in (r["samples_png"], r["completions_png"]):
            assert (results / name).read_bytes()[:4] == b"\x89PNG"
    table = (results / "paper_mnist.md").read_text()
    assert "| NADE (H=500) | 88.33 |" in table and "Diagonal BiLSTM (1 layer, h=32)" in table
    assert (results / "paper_mnist_curves.png").is_file() == HAS_MPL
    # nothing changed: --report-only reuses the evaluations
    capsys.readouterr()
    assert pm.main(common + ["--report-only"]) == 0
    assert capsys.readouterr().out.count("checkpoint unchanged") == 2


def test_paper_mnist_refuses_a_run_with_other_settings(tiny_amat, tmp_path):
    pm = _script()
    stored = pm.model_config("row_lstm", tiny_amat).__dict__
    assert pm.config_mismatch(stored, pm.model_config("row_lstm", "/elsewhere")) == {}
    # a run of the 7x16 Diagonal BiLSTM started by `pixelar train` (lower-case model name,
    # bool binarize, no max_time) is adopted
    cli_run = dict(
        stored,
        model="pixelrnn",
        binarize=False,
        model_args={"layer": "diagonal", "num_layers": 7, "hidden": 16},
    )
    cli_run.pop("max_time")
    assert pm.config_mismatch(cli_run, pm.model_config("diagonal_7x16", tiny_amat)) == {}
    diff = pm.config_mismatch(stored, pm.model_config("diagonal_7x16", tiny_amat))
    assert set(diff) == {"model_args"}
    folder = tmp_path / "runs" / "diagonal_7x16"
    folder.mkdir(parents=True)
    (folder / "last.json").write_text(json.dumps({"train_state": {"config": stored}}))
    with pytest.raises(SystemExit, match="other settings"):
        pm.main(
            [
                "--data-dir",
                str(tiny_amat),
                "--runs-dir",
                str(tmp_path / "runs"),
                "--models",
                "diagonal_7x16",
                "--train-only",
                "--busy-minutes",
                "0",
            ]
        )
