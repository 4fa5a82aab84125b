"""Checkpoints: tensors in safetensors, everything else in JSON; nothing is ever unpickled.

A checkpoint ``PREFIX`` is two files, each written atomically (temp file, then os.replace):

    PREFIX.safetensors  model.<name>            the model's state_dict
                        optimizer.<param>.<key> the optimizer's state tensors
                        rng.torch, rng.cuda.<i> the torch random generators' states
    PREFIX.json         format, version, model_class, model_config (constructor kwargs),
                        the optimizer's class, param_groups and scalar state, the trainer's
                        state, and the SHA-256 of PREFIX.safetensors

The JSON is written last and records the hash of the tensor file, so a crash between the
two writes, a truncated file or a corrupted one is detected on load with a clear
``CheckpointError`` instead of a traceback from deep inside.
"""
import hashlib
import json
import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..models import MODELS

FORMAT = "pixelar-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted, or does not fit the model."""


# ---------------------------------------------------------------------------- files

def atomic_write(path, write):
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then os.replace."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_paths(path):
    """(PREFIX.safetensors, PREFIX.json) for ``path`` given as PREFIX, PREFIX.json,
    PREFIX.safetensors, or a training folder (its best checkpoint, else its last)."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        for name in ("best", "last"):
            if os.path.isfile(os.path.join(path, name + ".json")):
                path = os.path.join(path, name)
                break
        else:
            raise CheckpointError(f"no checkpoint in folder {path}: expected best.json or "
                                  f"last.json (with its .safetensors) written by pixelar train")
    for ext in (".json", ".safetensors"):
        if path.endswith(ext):
            path = path[: -len(ext)]
    return path + ".safetensors", path + ".json"


# ---------------------------------------------------------------------------- save

def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def rng_state():
    """The torch generators' states: {'rng.torch': ..., 'rng.cuda.<i>': ...} uint8 tensors."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def save_checkpoint(prefix, model, optimizer=None, train_state=None, rng=True):
    """Write PREFIX.safetensors and PREFIX.json (see the module docstring); returns the
    JSON path. ``train_state`` is any JSON-serialisable dict (the trainer's counters)."""
    tensors_path, json_path = checkpoint_paths(prefix)
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
        meta_optimizer = {"class": type(optimizer).__name__,
                          "param_groups": _jsonable(sd["param_groups"]), "scalars": scalars}
    if rng:
        tensors.update(rng_state())
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    atomic_write(tensors_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    from .. import __version__
    meta = {
        "format": FORMAT, "version": VERSION,
        "model_class": type(model).__name__, "model_config": _jsonable(model.config()),
        "optimizer": meta_optimizer, "train_state": train_state,
        "tensors_file": os.path.basename(tensors_path),
        "tensors_sha256": sha256_file(tensors_path),
        "pixelar_version": __version__, "torch_version": torch.__version__,
    }
    atomic_write_json(json_path, meta)
    return json_path


# ---------------------------------------------------------------------------- load

class Checkpoint:
    """A loaded checkpoint: ``meta`` (the JSON) and ``tensors`` (name -> CPU tensor)."""

    def __init__(self, meta, tensors, path):
        self.meta, self.tensors, self.path = meta, tensors, path

    @property
    def train_state(self):
        return self.meta.get("train_state") or {}

    def model_state(self):
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def build_model(self):
        """A new model of the stored class and config, with the stored weights."""
        name = self.meta.get("model_class")
        if name not in MODELS:
            raise CheckpointError(f"{self.path}: unknown model class {name!r}; pixelar knows "
                                  f"{', '.join(MODELS)}")
        try:
            model = MODELS[name](**self.meta.get("model_config", {}))
            model.load_state_dict(self.model_state(), strict=True)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path}: the stored weights do not fit {name}"
                                  f"({self.meta.get('model_config')}): {exc}") from exc
        return model

    def restore_optimizer(self, optimizer):
        """Load the stored optimizer state into ``optimizer`` (same class, same params)."""
        stored = self.meta.get("optimizer")
        if stored is None:
            raise CheckpointError(f"{self.path}: holds no optimizer state")
        if stored["class"] != type(optimizer).__name__:
            raise CheckpointError(f"{self.path}: optimizer is {stored['class']}, "
                                  f"not {type(optimizer).__name__}")
        state = {}
        for key, value in self.tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        for pid, scalars in stored["scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        try:
            optimizer.load_state_dict({"state": state, "param_groups": stored["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path}: optimizer state does not fit: {exc}") from exc

    def restore_rng(self):
        """Restore the torch random generators' states saved with the checkpoint."""
        if "rng.torch" in self.tensors:
            torch.set_rng_state(self.tensors["rng.torch"])
        cuda = [self.tensors[k] for k in sorted(self.tensors) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def load_checkpoint(path) -> Checkpoint:
    """Read and verify a checkpoint (see ``checkpoint_paths`` for what ``path`` may be).
    Raises CheckpointError, saying what is wrong, for a missing, truncated or corrupted one."""
    tensors_path, json_path = checkpoint_paths(path)
    for p in (json_path, tensors_path):
        if not os.path.isfile(p):
            raise CheckpointError(f"checkpoint file {p} not found (a checkpoint is "
                                  f"PREFIX.json plus PREFIX.safetensors)")
    try:
        with open(json_path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{json_path} is not valid JSON ({exc}): the checkpoint is "
                              f"truncated or corrupted") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a pixelar checkpoint (format field "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{json_path} has checkpoint version {meta['version']}; this "
                              f"pixelar reads up to {VERSION}: upgrade pixelar")
    digest = sha256_file(tensors_path)
    if digest != meta.get("tensors_sha256"):
        raise CheckpointError(
            f"{tensors_path} is truncated or corrupted: its SHA-256 {digest[:12]}... differs "
            f"from the {str(meta.get('tensors_sha256'))[:12]}... recorded in {json_path}")
    try:
        tensors = load_file(tensors_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{tensors_path} cannot be read as safetensors ({exc}): the "
                              f"checkpoint is truncated or corrupted") from exc
    return Checkpoint(meta, tensors, json_path)


def load_model(path, device="cpu"):
    """The model stored in a checkpoint, in eval mode on ``device``."""
    return load_checkpoint(path).build_model().to(device).eval()
