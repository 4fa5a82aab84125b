"""pixelar.training: checkpoints (round trip, atomic, never unpickled, corruption caught),
exact resume, reproducibility, early stopping, evaluation, anomaly scores, linear probes,
and a 2-process DistributedDataParallel run on the CPU (gloo)."""

import json
import math
import os
import pickle
import subprocess
import sys

import pytest
import torch

from pixelar import data
from pixelar.models import NADE, IndependentPixels
from pixelar.training import (
    CheckpointError,
    TrainConfig,
    TrainingError,
    auroc,
    build_model,
    corrupt,
    evaluate,
    linear_probe,
    load_checkpoint,
    probe,
    save_checkpoint,
    save_histogram,
    summarize,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from training_testing import BACKEND, QUIET, TINY_CLI, nade_and_adam, tiny, training_backend  # noqa: E402, F401


def weights(folder, name="last"):
    ckpt = load_checkpoint(os.path.join(folder, name))
    return {k: v for k, v in ckpt.tensors.items() if not k.startswith("rng.")}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    model, opt = nade_and_adam()
    save_checkpoint(tmp_path / "ck", model, opt, {"epoch": 3})
    assert sorted(os.listdir(tmp_path)) == ["ck.safetensors"]  # one file, no temp files
    ckpt = load_checkpoint(tmp_path / "ck.safetensors")
    meta = ckpt.meta
    assert meta["model_class"] == "NADE" and meta["model_config"] == {
        "image_shape": [1, 3, 3],
        "hidden": 4,
    }
    assert ckpt.train_state == {"epoch": 3}
    clone = ckpt.build_model()
    for (k, v), (_, w) in zip(model.state_dict().items(), clone.state_dict().items()):
        assert torch.equal(v, w), k
    opt2 = torch.optim.Adam(clone.parameters(), lr=0.5)
    ckpt.restore_optimizer(opt2)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 0.01
    for pid in a["state"]:
        for key in a["state"][pid]:
            assert torch.equal(a["state"][pid][key], b["state"][pid][key])


def test_checkpoint_loading_never_unpickles(tmp_path, monkeypatch):
    model, opt = nade_and_adam()
    save_checkpoint(tmp_path / "ck", model, opt, {"epoch": 1})

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    ckpt = load_checkpoint(tmp_path / "ck")
    ckpt.restore_optimizer(torch.optim.Adam(ckpt.build_model().parameters()))
    ckpt.restore_rng()


@pytest.mark.parametrize(
    "damage", ["flip_byte", "truncate", "garbage_header", "missing", "not_a_checkpoint"]
)
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    model, opt = nade_and_adam()
    save_checkpoint(tmp_path / "ck", model, opt)
    st = tmp_path / "ck.safetensors"
    if damage == "flip_byte":
        raw = bytearray(st.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        st.write_bytes(bytes(raw))
        match = "corrupted"
    elif damage == "truncate":
        st.write_bytes(st.read_bytes()[:-100])
        match = "truncated"
    elif damage == "garbage_header":
        raw = bytearray(st.read_bytes())
        raw[8:16] = b"\xff" * 8
        st.write_bytes(bytes(raw))
        match = "not valid JSON"
    elif damage == "missing":
        os.remove(st)
        match = "not found"
    else:
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, st)
        match = "not a pixelar checkpoint"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "ck")


def test_unhashed_garbage_safetensors_is_caught(tmp_path):
    """Even when the recorded hash matches, a file that is not safetensors is reported
    (format 1: the hash of the tensors file is in PREFIX.json)."""
    from legacy_checkpoint import save_checkpoint_v1, sha256_file

    model, _ = nade_and_adam()
    save_checkpoint_v1(tmp_path / "ck", model)
    (tmp_path / "ck.safetensors").write_bytes(b"\x00" * 64)
    meta = json.loads((tmp_path / "ck.json").read_text())
    meta["tensors_sha256"] = sha256_file(tmp_path / "ck.safetensors")
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "ck")


# ---------------------------------------------------------------- training


def test_training_lowers_validation_bits_and_writes_checkpoints(tmp_path):
    result = train(tiny(epochs=3), tmp_path, **QUIET)
    assert result["status"] == "finished" and result["global_step"] == 9
    bpd = [h["val_bpd"] for h in result["history"]]
    assert bpd[-1] < bpd[0] < 1.0
    assert {"best.safetensors", "last.safetensors", "metrics.json"} <= set(os.listdir(tmp_path))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_val_bpd"] == min(bpd) and len(metrics["history"]) == 3


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    train(tiny(), tmp_path / "a", **QUIET)
    train(tiny(), tmp_path / "b", **QUIET)
    train(tiny(seed=1), tmp_path / "c", **QUIET)
    assert_bitwise_equal(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["model.W"], weights(tmp_path / "c")["model.W"])


class Crash(Exception):
    pass


def _crash_at(step, exc=Crash):
    def on_step(global_step):
        if global_step == step:
            raise exc()

    return on_step


@pytest.mark.parametrize("how", ["crash", "keyboard_interrupt", "max_steps"])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, how):
    config = tiny(epochs=3, checkpoint_every=2, optimizer="rmsprop")
    train(config, tmp_path / "whole", **QUIET)
    part = tmp_path / "part"
    if how == "crash":  # a crash at step 5: the last checkpoint is step 4, mid-epoch 2
        with pytest.raises(Crash):
            train(config, part, on_step=_crash_at(5), **QUIET)
        assert load_checkpoint(part / "last").train_state["global_step"] == 4
    elif how == "keyboard_interrupt":  # Ctrl-C after step 7: checkpoint written on the way out
        with pytest.raises(KeyboardInterrupt):
            train(config, part, on_step=_crash_at(7, KeyboardInterrupt), **QUIET)
        state = load_checkpoint(part / "last").train_state
        assert (state["global_step"], state["status"]) == (7, "interrupted")
    else:
        paused = train(TrainConfig(**{**config.__dict__, "max_steps": 4}), part, **QUIET)
        assert paused["status"] == "paused" and paused["global_step"] == 4
    result = train(config, part, resume=True, **QUIET)
    assert result["status"] == "finished" and result["global_step"] == 9
    assert_bitwise_equal(weights(tmp_path / "whole"), weights(part))
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]
    assert [h["val_bpd"] for h in result["history"]] == [h["val_bpd"] for h in whole]


def test_refuses_to_overwrite_and_resume_needs_a_checkpoint(tmp_path):
    train(tiny(epochs=1), tmp_path, **QUIET)
    with pytest.raises(TrainingError, match="--resume"):
        train(tiny(epochs=1), tmp_path, **QUIET)
    with pytest.raises(CheckpointError, match="not found"):
        train(tiny(), tmp_path / "empty", resume=True, **QUIET)


def test_early_stopping(tmp_path):
    result = train(tiny(epochs=10, lr=0.0, patience=2), tmp_path, **QUIET)
    assert result["status"] == "early_stopped" and len(result["history"]) == 3
    assert result["best_epoch"] == 1


def test_build_model_checks():
    assert build_model("pixelrnn", {"num_layers": 1, "hidden": 2}, (1, 4, 4), 3).levels == 3
    with pytest.raises(TrainingError, match="unknown model"):
        build_model("vae", {}, (1, 4, 4), 2)
    with pytest.raises(TrainingError, match="real-valued"):
        build_model("RNADE", {}, (1, 4, 4), 2)
    with pytest.raises(TrainingError, match="binarize"):
        build_model("NADE", {"hidden": 3}, (1, 4, 4), 17)
    with pytest.raises(TrainingError, match="no argument"):
        build_model("NADE", {"layers": 3}, (1, 4, 4), 2)


# ---------------------------------------------------------------- evaluation


def test_evaluate_uniform_model_is_one_bit_per_dim():
    model = IndependentPixels(image_shape=(1, 4, 4), levels=2)  # logits 0: p = 1/2 each
    m = evaluate(model, torch.randint(0, 2, (10, 1, 4, 4)))
    assert m["n"] == 10 and m["nll_nats"] == pytest.approx(16 * math.log(2))
    assert m["bits_per_dim"] == pytest.approx(1.0) and m["bits_per_dim_ci95"] == 0.0


def test_confidence_interval():
    nll = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    m = summarize(nll, num_dims=2)
    half = 1.959963984540054 * nll.std().item() / 2.0
    assert m["nll_nats"] == 2.5 and m["nll_nats_ci95"] == pytest.approx(half)
    assert m["bits_per_dim_ci95"] == pytest.approx(half / (2 * math.log(2)))


# ---------------------------------------------------------------- anomaly scores


def test_corrupt_and_auroc(tmp_path):
    x = data.load("digits-binary", "test").images
    flipped = corrupt(x, 2, "flip", 0.25, seed=0)
    changed = (flipped != x).float().mean().item()
    assert 0.2 < changed < 0.3 and torch.equal(corrupt(x, 2, "flip", 1.0), 1 - x)
    noised = corrupt(data.load("digits", "test").images, 17, "noise", 0.5, seed=0)
    assert int(noised.max()) <= 16 and int(noised.min()) >= 0
    assert auroc([1, 2, 3], [4, 5]) == 1.0 and auroc([4, 5], [1, 2, 3]) == 0.0
    assert auroc([1, 2], [1, 2]) == 0.5
    save_histogram(tmp_path / "h.png", [1.0, 2.0, 2.5], [3.0, 4.0])
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_score_anomalies_nll_summary_and_auroc():
    from pixelar.training import nll_per_image, score_anomalies

    torch.manual_seed(0)
    model = NADE(image_shape=(1, 8, 8), hidden=6)
    x = data.load("digits-binary", "test").images[:40]
    alone = score_anomalies(model, x, batch_size=16)
    assert alone.nll_in.shape == (40,) and alone.nll_in.dtype == torch.float64
    assert torch.equal(alone.nll_in, nll_per_image(model, x))
    assert alone.summary_in == summarize(alone.nll_in, 64)
    assert alone.nll_ood is None and alone.summary_ood is None and alone.auroc is None
    ood = corrupt(x[:30], 2, "noise", 0.5, seed=1)
    both = score_anomalies(model, x, ood, batch_size=16)
    assert both.nll_ood.shape == (30,) and both.summary_ood["n"] == 30
    assert both.auroc == auroc(both.nll_in.numpy(), both.nll_ood.numpy())


def test_histogram_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    save_histogram(tmp_path / "h.png", [1.0, 2.0, 2.5], [3.0, 4.0], title="no matplotlib")
    assert (tmp_path / "h.png").stat().st_size > 500


# ---------------------------------------------------------------- features


def test_linear_probe_on_features_and_pixels():
    train_set = data.load("digits-binary", "train").subset(300)
    test_set = data.load("digits-binary", "test").subset(100)
    torch.manual_seed(0)
    report, ftr, fte = probe(NADE(image_shape=(1, 8, 8), hidden=12), train_set, test_set)
    assert ftr.shape == (300, 12) and fte.shape == (100, 12) and report["feature_dim"] == 12
    assert report["raw_pixels_accuracy"] > 0.8  # binary digits are easy for a linear probe
    assert report["chance"] < report["probe_accuracy"] <= 1.0
    x = torch.tensor([[0.0], [0.1], [1.0], [1.1]])
    assert linear_probe(x, [0, 0, 1, 1], x, [0, 0, 1, 1]) == 1.0


def test_features_need_labels_and_a_model_with_features():
    from pixelar.training import extract_features

    with pytest.raises(ValueError, match="has no features"):
        extract_features(IndependentPixels(image_shape=(1, 8, 8)), torch.zeros(2, 1, 8, 8).long())
    unlabeled = data.load("digits-binary", "test").subset(5)
    unlabeled.labels = None
    with pytest.raises(ValueError, match="no labels"):
        probe(NADE(image_shape=(1, 8, 8), hidden=3), unlabeled, unlabeled)


# ---------------------------------------------------------------- DDP


def test_ddp_two_processes_on_cpu_keep_identical_weights(tmp_path):
    """torchrun --nproc_per_node=2 -m pixelar train: gloo on the CPU; every rank ends with
    the same weights (their SHA-256 are gathered into metrics.json)."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pixelar",
        "train",
        *TINY_CLI,
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--backend",
        BACKEND,
        "--no-progress",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    hashes = metrics["rank_weight_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert metrics["status"] == "finished" and metrics["global_step"] == 6
    # the same run in one process: same global batches, gradients averaged over 2 halves
    single = train(tiny(), tmp_path / "single", **QUIET)
    a, b = weights(out), weights(tmp_path / "single")
    for k in a:
        if k.startswith("model."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert single["global_step"] == 6


def _optimizer_run(make):
    """Parameters after 4 steps of the optimizer make(params) on fixed random gradients."""
    torch.manual_seed(0)
    params = [
        torch.randn(50, 30, requires_grad=True),
        torch.randn(7, dtype=torch.float64, requires_grad=True),
    ]
    opt = make(params)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    return opt, params


def test_rmsprop_is_multi_tensor_and_matches_the_default_bit_for_bit():
    """make_optimizer("rmsprop") uses torch's multi-tensor ("foreach") implementation on the
    CPU too (fewer, grouped ops per step), whose updates equal the per-tensor loop's exactly."""
    from pixelar.training.config import OPTIMIZERS, make_optimizer

    opt, fast = _optimizer_run(lambda ps: make_optimizer("rmsprop", ps, 1e-2, weight_decay=1e-3))
    assert opt.param_groups[0]["foreach"] is True
    _, loop = _optimizer_run(
        lambda ps: OPTIMIZERS["rmsprop"](ps, lr=1e-2, weight_decay=1e-3, foreach=False)
    )
    for a, b in zip(fast, loop):
        assert torch.equal(a, b)


def test_adam_is_fused_and_matches_the_default_to_an_ulp():
    """make_optimizer("adam") uses torch's fused Adam on CPU parameters; its updates equal
    the per-tensor loop's to within an ulp of the parameters (float32 and float64)."""
    from pixelar.training.config import OPTIMIZERS, make_optimizer

    opt, fused = _optimizer_run(lambda ps: make_optimizer("adam", ps, 1e-2, weight_decay=1e-3))
    assert opt.param_groups[0]["fused"] is True
    _, loop = _optimizer_run(
        lambda ps: OPTIMIZERS["adam"](ps, lr=1e-2, weight_decay=1e-3, foreach=False)
    )
    for a, b in zip(fused, loop):
        ulp = torch.finfo(a.dtype).eps * b.abs().clamp_min(1.0)
        assert ((a - b).abs() <= ulp).all()


@pytest.mark.parametrize("kind", ["meta device", "not dense"])
def test_adam_falls_back_to_multi_tensor_where_fused_is_unsafe(kind):
    """Parameters the fused kernel does not serve (on the meta device), or would serve wrongly
    (not dense: a strided view, which the fused kernel would read as flat memory), get the
    multi-tensor Adam, whose updates are right for any layout of parameter, gradient and
    state."""
    from pixelar.training.config import make_optimizer

    if kind == "meta device":
        param = torch.empty(3, device="meta", requires_grad=True)
    else:
        param = torch.nn.Parameter(torch.randn(5, 6)[:, ::2])
    opt = make_optimizer("adam", [param], 1e-3)
    assert opt.param_groups[0]["foreach"] is True and not opt.param_groups[0]["fused"]
    if kind == "not dense":
        ref = param.detach().clone().requires_grad_(True)
        ref_opt = torch.optim.Adam([ref], lr=1e-3, foreach=False)
        grad = torch.randn(5, 3)
        param.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
        assert torch.equal(param.detach(), ref.detach())


def test_adam_is_fused_for_a_transposed_parameter_whatever_the_layouts_of_grad_and_state():
    """A dense parameter stored transposed (the NADE models' W) gets the fused Adam; the
    gradient set by hand and the state loaded from a state dict come contiguous, unlike the
    parameter, and make_optimizer's step pre-hook re-lays them out: the updates stay the
    per-tensor loop's to within an ulp (the fused kernel reading them as flat memory would
    otherwise pair each parameter entry with another entry's gradient and moments)."""
    from pixelar.training.config import make_optimizer

    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(5, 3).t())
    ref = param.detach().clone().requires_grad_(True)
    opt = make_optimizer("adam", [param], 1e-2)
    ref_opt = torch.optim.Adam([ref], lr=1e-2, foreach=False)
    assert opt.param_groups[0]["fused"] is True
    g = torch.Generator().manual_seed(1)

    def steps(n):
        for _ in range(n):
            grad = torch.randn(3, 5, generator=g)  # contiguous, unlike param
            param.grad, ref.grad = grad.clone(), grad.clone()
            opt.step()
            ref_opt.step()

    steps(2)
    state = opt.state_dict()
    for entry in state["state"].values():  # as a checkpoint stores them: contiguous
        for key, value in entry.items():
            if value.dim():
                entry[key] = value.contiguous()
    assert not state["state"][0]["exp_avg"].t().is_contiguous()
    opt = make_optimizer("adam", [param], 1e-2)
    opt.load_state_dict(state)
    steps(3)
    assert opt.state[param]["exp_avg"].stride() == param.stride()
    ulp = torch.finfo(torch.float32).eps * ref.detach().abs().clamp_min(1.0)
    assert ((param.detach() - ref.detach()).abs() <= 4 * ulp).all()


def test_fused_adam_gets_transposed_parameters_as_contiguous_views(monkeypatch):
    """make_optimizer hands torch's fused Adam kernel a transposed-stored parameter, its
    gradient and its state as contiguous views of their memory (DenseLayoutAdam; the kernel
    copies a non-contiguous gradient it never reads), and the updates stay the per-tensor
    loop's to within an ulp."""
    from pixelar.training.config import DenseLayoutAdam, make_optimizer

    seen = []
    fused = torch._fused_adam_

    def spy(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs):
        seen.append([t.is_contiguous() for t in (*params, *grads, *exp_avgs, *exp_avg_sqs)])
        return fused(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", spy)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(6, 4).t()), torch.nn.Parameter(torch.randn(5))]
    refs = [p.detach().clone().requires_grad_(True) for p in params]
    opt = make_optimizer("adam", params, 1e-2, weight_decay=1e-3)
    ref_opt = torch.optim.Adam(refs, lr=1e-2, weight_decay=1e-3, foreach=False)
    assert isinstance(opt, DenseLayoutAdam) and opt.param_groups[0]["fused"] is True
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p, r in zip(params, refs):
            p.grad = torch.randn(p.shape, generator=g).as_strided(p.shape, p.stride())
            r.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
    assert len(seen) == 3 and all(all(flags) for flags in seen)
    assert params[0].stride() == (1, 4) and opt.state[params[0]]["exp_avg"].stride() == (1, 4)
    for p, r in zip(params, refs):
        ulp = torch.finfo(torch.float32).eps * r.detach().abs().clamp_min(1.0)
        assert ((p.detach() - r.detach()).abs() <= 4 * ulp).all()


def test_nade_weights_are_stored_transposed_and_train_with_the_fused_adam():
    """NADE keeps W (hidden, D) stored transposed (W.t() contiguous: the kernels read W^T in
    place); autograd gives its gradient that layout, and make_optimizer's Adam is the fused
    one, whose steps keep it."""
    from pixelar.models import NADE
    from pixelar.training.config import make_optimizer

    model = NADE(image_shape=(1, 4, 5), hidden=7)
    assert model.W.shape == (7, 20) and model.W.t().is_contiguous()
    opt = make_optimizer("adam", model.parameters(), 1e-2)
    assert opt.param_groups[0]["fused"] is True
    x = torch.randint(0, 2, (6, 1, 4, 5))
    for _ in range(2):
        opt.zero_grad()
        (-model.log_prob(x).mean()).backward()
        assert model.W.grad.stride() == model.W.stride()
        opt.step()
    assert model.W.t().is_contiguous()
    assert opt.state[model.W]["exp_avg"].stride() == model.W.stride()
