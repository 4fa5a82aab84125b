"""The checkpoint writer of pixelar before format 2 (commit 368a834), kept verbatim in
substance so that tests can make format-1 checkpoints (a PREFIX.safetensors + PREFIX.json
pair, written one after the other) and check that today's code reads and resumes them.
Runs started with that code keep writing this format until they are resumed."""

import hashlib
import json
import os
import tempfile

import torch
from safetensors.torch import save_file

from pixelar.training.checkpoint import FORMAT, _jsonable, rng_state


def atomic_write(path, write):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint_v1(prefix, model, optimizer=None, train_state=None, rng=True):
    """Write PREFIX.safetensors, then PREFIX.json (format 1); returns the JSON path."""
    prefix = os.fspath(prefix)
    for ext in (".json", ".safetensors"):
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
    tensors_path, json_path = prefix + ".safetensors", prefix + ".json"
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta_optimizer = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars = {}
        for pid, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{pid}.{key}"] = value
                else:
                    scalars.setdefault(str(pid), {})[key] = _jsonable(value)
        meta_optimizer = {
            "class": type(optimizer).__name__,
            "param_groups": _jsonable(sd["param_groups"]),
            "scalars": scalars,
        }
    if rng:
        tensors.update(rng_state())
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    atomic_write(tensors_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    meta = {
        "format": FORMAT,
        "version": 1,
        "model_class": type(model).__name__,
        "model_config": _jsonable(model.config()),
        "optimizer": meta_optimizer,
        "train_state": train_state,
        "tensors_file": os.path.basename(tensors_path),
        "tensors_sha256": sha256_file(tensors_path),
        "pixelar_version": "0.1.0",
        "torch_version": torch.__version__,
    }

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")

    atomic_write(json_path, write)
    return json_path
