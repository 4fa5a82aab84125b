"""pixelar.training.checkpoint: the integrity check covers the JSON (W1), stored shapes are
checked against the config before anything is allocated (S4), edited JSON of either format
gives CheckpointError and nothing else (U3), a damaged checkpoint of a folder falls back to
the other one with a warning (S1), reads during writes never see a mix, and a full disk
keeps the previous checkpoint (U7)."""

import errno
import json
import os
import struct
import threading
import time

import pytest
import torch

from pixelar.models import NADE
from pixelar.training import CheckpointError, atomic, load_checkpoint, save_checkpoint
from pixelar.training.atomic import OutputWriteError
from pixelar.training.checkpoint import META_KEY, CheckpointWarning, _read_header, encode_checkpoint

from legacy_checkpoint import save_checkpoint_v1
from training_testing import nade_and_adam

pytestmark = pytest.mark.usefixtures("one_thread")


def save(prefix, fmt, train_state=None):
    model, opt = nade_and_adam()
    state = train_state if train_state is not None else {"epoch": 1, "global_step": 2}
    if fmt == 1:
        save_checkpoint_v1(prefix, model, opt, state)
    else:
        save_checkpoint(prefix, model, opt, state)


def use(path):
    """Everything a command or a resumed run does with a checkpoint."""
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    ckpt.restore_optimizer(torch.optim.Adam(model.parameters()))
    ckpt.restore_rng()
    return ckpt


def read_parts(path):
    """(meta dict, tensors) of a format-2 file."""
    raw = open(path, "rb").read()
    header, _ = _read_header(raw, len(raw), path)
    from safetensors.torch import load

    return json.loads(header["__metadata__"][META_KEY]), load(raw)


def edit(prefix, fmt, change_meta=None, change_tensors=None):
    """Rewrite checkpoint PREFIX with edited JSON and/or tensors, its hash made to match
    (a deliberate edit, not corruption): what is left to catch are the checks of content."""
    prefix = str(prefix)
    if fmt == 1:
        meta = json.load(open(prefix + ".json"))
        if change_meta:
            change_meta(meta)
        with open(prefix + ".json", "w") as f:
            json.dump(meta, f)
        assert change_tensors is None
    else:
        meta, tensors = read_parts(prefix + ".safetensors")
        if change_meta:
            change_meta(meta)
        if change_tensors:
            change_tensors(tensors)
        open(prefix + ".safetensors", "wb").write(encode_checkpoint(tensors, meta))


# ---------------------------------------------------------------- W1: JSON under the hash


@pytest.mark.parametrize(
    "old, new", [(b'\\"lr\\":0.01', b'\\"lr\\":0.03'), (b'\\"epoch\\":1', b'\\"epoch\\":3')]
)
def test_a_changed_value_in_the_json_is_caught(tmp_path, old, new):
    save(tmp_path / "ck", 2)
    raw = (tmp_path / "ck.safetensors").read_bytes()
    assert raw.count(old) == 1
    (tmp_path / "ck.safetensors").write_bytes(raw.replace(old, new))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "ck")


def test_a_changed_tensor_table_is_caught(tmp_path):
    """Same bytes, read as another dtype: the tensor table is under the hash too."""
    save(tmp_path / "ck", 2)
    raw = (tmp_path / "ck.safetensors").read_bytes()
    i = raw.index(b'"model.W":{"dtype":"F32"')
    raw = raw[:i] + b'"model.W":{"dtype":"I32"' + raw[i + 24 :]
    (tmp_path / "ck.safetensors").write_bytes(raw)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "ck")


# ---------------------------------------------------------------- S4: shapes before allocating


@pytest.mark.parametrize("fmt", [1, 2])
def test_a_config_that_does_not_fit_the_stored_shapes_fails_before_building(
    tmp_path, fmt, monkeypatch
):
    save(tmp_path / "ck", fmt)
    edit(tmp_path / "ck", fmt, lambda m: m["model_config"].update(hidden=1_000_000))
    built = []
    original = NADE.__init__

    def spy(self, *args, **kwargs):
        if torch.empty(0).device.type != "meta":
            built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(NADE, "__init__", spy)
    with pytest.raises(CheckpointError, match=r"model.W has shape \[4, 9\].*\[1000000, 9\]"):
        load_checkpoint(tmp_path / "ck")
    assert built == []  # only ever built on the meta device


def test_absurd_sizes_in_the_config_are_refused_without_building(tmp_path):
    save(tmp_path / "ck", 2)
    edit(tmp_path / "ck", 2, lambda m: m["model_config"].update(image_shape=[1, 10**5, 10**5]))
    with pytest.raises(CheckpointError, match="image_shape"):
        load_checkpoint(tmp_path / "ck")
    edit(
        tmp_path / "ck", 2, lambda m: m["model_config"].update(image_shape=[1, 3, 3], hidden=2**40)
    )
    with pytest.raises(CheckpointError, match="out of range"):
        load_checkpoint(tmp_path / "ck")


# ---------------------------------------------------------------- U3: edited JSON


def _set(path, value):
    def change(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


EDITS = {
    "model_class_list": _set(["model_class"], ["NADE"]),
    "model_class_unknown": _set(["model_class"], "VAE"),
    "model_config_string": _set(["model_config"], "hidden=4"),
    "model_config_bad_value": _set(["model_config", "hidden"], "four"),
    "model_config_unknown_key": _set(["model_config", "depth"], 3),
    "version_string": _set(["version"], "2"),
    "version_future": _set(["version"], 99),
    "optimizer_list": _set(["optimizer"], ["Adam"]),
    "optimizer_no_groups": lambda m: m["optimizer"].pop("param_groups"),
    "optimizer_param_ids": _set(["optimizer", "param_groups", 0, "params"], ["a", "b"]),
    "optimizer_too_few_params": _set(["optimizer", "param_groups", 0, "params"], [0]),
    "optimizer_lr_string": _set(["optimizer", "param_groups", 0, "lr"], "fast"),
    "optimizer_lr_nan": _set(["optimizer", "param_groups", 0, "lr"], float("nan")),
    "optimizer_scalars_key": _set(["optimizer", "scalars"], {"x": {"step": 1}}),
    "optimizer_scalars_value": _set(["optimizer", "scalars"], {"0": 5}),
    "optimizer_class": _set(["optimizer", "class"], "SGD"),
    "train_state_list": _set(["train_state"], [1, 2]),
    "format": _set(["format"], "something-else"),
}


@pytest.mark.parametrize("fmt", [1, 2])
@pytest.mark.parametrize("case", sorted(EDITS))
def test_edited_json_gives_checkpoint_error(tmp_path, fmt, case):
    save(tmp_path / "ck", fmt)
    edit(tmp_path / "ck", fmt, EDITS[case])
    with pytest.raises(CheckpointError):
        use(tmp_path / "ck")


@pytest.mark.parametrize("case", ["optimizer_state_shape", "rng_shape", "rng_dtype"])
def test_edited_tensors_give_checkpoint_error(tmp_path, case):
    save(tmp_path / "ck", 2)

    def change(tensors):
        if case == "optimizer_state_shape":
            tensors["optimizer.0.exp_avg"] = torch.zeros(2, 2)
        elif case == "rng_shape":
            tensors["rng.torch"] = tensors["rng.torch"][:10]
        else:
            tensors["rng.torch"] = tensors["rng.torch"].float()

    edit(tmp_path / "ck", 2, change_tensors=change)
    with pytest.raises(CheckpointError):
        use(tmp_path / "ck")


def test_deeply_nested_json_gives_checkpoint_error(tmp_path):
    save(tmp_path / "ck", 1)
    text = (tmp_path / "ck.json").read_text()
    (tmp_path / "ck.json").write_text(
        text.replace(
            '"train_state":', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "train_state":'
        )
    )
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")


def test_a_safetensors_header_claiming_huge_sizes_is_refused(tmp_path):
    save(tmp_path / "ck", 2)
    raw = bytearray((tmp_path / "ck.safetensors").read_bytes())
    raw[:8] = struct.pack("<Q", 2**62)
    (tmp_path / "ck.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "ck")


def test_non_finite_weights_are_refused(tmp_path):
    model, opt = nade_and_adam()
    with torch.no_grad():
        model.W[0, 0] = float("nan")
    save_checkpoint(tmp_path / "ck", model, opt)
    ckpt = load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="non-finite parameters"):
        ckpt.build_model()
    assert torch.isnan(ckpt.build_model(allow_nonfinite=True).W[0, 0])


# ---------------------------------------------------------------- S1: fallback in a folder


def test_a_damaged_best_falls_back_to_last_with_a_warning(tmp_path):
    save(tmp_path / "best", 2, {"global_step": 3})
    save(tmp_path / "last", 2, {"global_step": 7})
    assert load_checkpoint(tmp_path).train_state["global_step"] == 3  # best first
    raw = bytearray((tmp_path / "best.safetensors").read_bytes())
    raw[-5] ^= 1
    (tmp_path / "best.safetensors").write_bytes(bytes(raw))
    with pytest.warns(
        CheckpointWarning, match="best.safetensors is truncated or corrupted.*last.safetensors"
    ):
        assert load_checkpoint(tmp_path).train_state["global_step"] == 7
    with pytest.raises(CheckpointError):  # asked for by name: no fallback
        load_checkpoint(tmp_path / "best")
    (tmp_path / "last.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*best.*last"):
        load_checkpoint(tmp_path)


def test_a_format2_file_beside_a_stale_format1_json_wins(tmp_path):
    save(tmp_path / "last", 1, {"global_step": 1})
    stale = (tmp_path / "last.json").read_text()
    save(tmp_path / "last", 2, {"global_step": 2})
    assert not (tmp_path / "last.json").exists()  # the writer removes it ...
    (tmp_path / "last.json").write_text(stale)  # ... a kill before that would leave it
    assert load_checkpoint(tmp_path / "last").train_state["global_step"] == 2


def test_reads_during_writes_never_see_a_mix(tmp_path):
    model, opt = nade_and_adam(hidden=64)
    save_checkpoint(tmp_path / "last", model, opt, {"global_step": 0})
    stop, errors = threading.Event(), []

    def writer():
        step = 0
        while not stop.is_set():
            step += 1
            with torch.no_grad():
                model.W.add_(1.0)
            save_checkpoint(tmp_path / "last", model, opt, {"global_step": step})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(60):
            try:
                ckpt = load_checkpoint(tmp_path / "last")
                assert ckpt.tensors["model.W"].isfinite().all()
            except CheckpointError as exc:
                errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert errors == []


# ---------------------------------------------------------------- U7: disk full


def test_disk_full_during_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save(tmp_path / "ck", 2, {"global_step": 1})

    def full(f, data, label=None):
        f.write(data[: len(data) // 3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "write_chunks", full)
    model, opt = nade_and_adam()
    with pytest.raises(OutputWriteError, match="No space left on device.*previous"):
        save_checkpoint(tmp_path / "ck", model, opt, {"global_step": 2})
    assert os.listdir(tmp_path) == ["ck.safetensors"]  # no temporary left
    assert use(tmp_path / "ck").train_state["global_step"] == 1


def test_format1_reads_during_an_older_writer_retry_instead_of_reporting_corruption(tmp_path):
    """An older pixelar writes a pair one file after the other; a reader that catches the
    new tensors with the old JSON reads again instead of calling it corrupted."""
    model, opt = nade_and_adam(hidden=64)
    save_checkpoint_v1(tmp_path / "last", model, opt, {"global_step": 0})
    stop, errors = threading.Event(), []

    def writer():
        while not stop.is_set():
            with torch.no_grad():
                model.W.add_(1.0)
            save_checkpoint_v1(tmp_path / "last", model, opt, {"global_step": 1})
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            try:
                load_checkpoint(tmp_path / "last")
            except CheckpointError as exc:
                errors.append(exc)
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert errors == []


def resumable_run(folder):
    from pixelar.training import TrainConfig, train

    config = TrainConfig(
        model="NADE",
        model_args={"hidden": 4},
        data="digits-binary",
        epochs=1,
        batch_size=32,
        train_subset=96,
        val_subset=32,
        max_steps=2,
        patience=None,
    )
    train(config, folder, progress=False, log=lambda *a, **k: None)
    config.max_steps = None  # the resumed run goes on to the end
    return config


STATE_EDITS = {
    "config_not_a_dict": lambda s: s.update(config="adam"),
    "config_unknown_key": lambda s: s["config"].update(layers=3),
    "config_missing_key_is_a_default": None,
    "config_bad_epochs": lambda s: s["config"].update(batch_size="32"),
    "config_bad_model_args": lambda s: s["config"].update(model_args=[1]),
    "epoch_string": lambda s: s.update(epoch="1"),
    "global_step_negative": lambda s: s.update(global_step=-3),
    "history_missing": lambda s: s.pop("history"),
    "best_val_bpd_string": lambda s: s.update(best_val_bpd="0.5"),
}


@pytest.mark.parametrize("case", sorted(STATE_EDITS))
def test_resume_from_an_edited_training_state(tmp_path, case):
    from pixelar.training import train

    config = resumable_run(tmp_path)
    change = STATE_EDITS[case]
    if change is None:  # a setting added after the checkpoint was written: its default
        edit(tmp_path / "last", 2, lambda m: m["train_state"]["config"].pop("checkpoint_every"))
        assert (
            train(config, tmp_path, resume=True, progress=False, log=lambda *a, **k: None)["status"]
            == "finished"
        )
        return
    edit(tmp_path / "last", 2, lambda m: change(m["train_state"]))
    with pytest.raises(CheckpointError, match="training state"):
        train(config, tmp_path, resume=True, progress=False, log=lambda *a, **k: None)
