"""Checkpoints: one safetensors file, switched in by one rename; nothing is ever unpickled.

A checkpoint ``PREFIX`` (format version 2) is the single file ``PREFIX.safetensors``:

    tensors   model.<name>              the model's state_dict
              optimizer.<param>.<key>   the optimizer's state tensors
              rng.torch, rng.cuda.<i>   the torch random generators' states
    metadata  pixelar_checkpoint        JSON: format, version, model_class, model_config
                                        (constructor kwargs), the optimizer's class,
                                        param_groups and scalar state, the trainer's state
              pixelar_sha256            SHA-256 over that JSON, the tensor table (names,
                                        dtypes, shapes, offsets) and every tensor byte

It is written to a temporary file, fsynced, and renamed over the previous one
(``atomic.atomic_write_bytes``): a crash at any point leaves the previous checkpoint or the
new one, whole. On load the hash covers everything (a bit flip in ``lr`` or ``epoch`` is
caught, not just one in the weights), and the stored tensor shapes are checked against the
model the JSON describes (built on the meta device, allocating nothing) before any tensor
is read. Loading a training folder falls back, with a ``CheckpointWarning``, from a damaged
checkpoint to the other one (``best`` <-> ``last``).

Version 1 (earlier pixelar) wrote a pair, ``PREFIX.safetensors`` plus ``PREFIX.json`` (the
JSON holding the tensors' SHA-256); it is still read, with its checks, and the next write
of that checkpoint replaces it with version 2.
"""

import hashlib
import json
import os
import struct
import time
import warnings

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _load_bytes
from safetensors.torch import save as _save_bytes

from ..models import MODELS

# atomic_write, atomic_write_json and OutputWriteError are re-exported from here
from .atomic import OutputWriteError, atomic_write, atomic_write_bytes, atomic_write_json  # noqa: F401

FORMAT = "pixelar-checkpoint"
VERSION = 2
META_KEY, DIGEST_KEY = "pixelar_checkpoint", "pixelar_sha256"
NAMES = ("best", "last")  # the checkpoints of a training folder
HEADER_LIMIT = 100 << 20  # bytes of safetensors header (JSON) we agree to parse
JSON_LIMIT = 64 << 20  # bytes of a version-1 JSON file
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted, or does not fit the model."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of another one."""


# ---------------------------------------------------------------------------- files


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _strip(path):
    path = os.path.expanduser(os.fspath(path))
    for ext in (".json", ".safetensors"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def _exists(prefix):
    return os.path.isfile(prefix + ".safetensors") or os.path.isfile(prefix + ".json")


def checkpoint_paths(path):
    """(PREFIX.safetensors, PREFIX.json) for ``path`` given as PREFIX, PREFIX.json,
    PREFIX.safetensors, or a training folder (its best checkpoint, else its last). In
    format 2 only the first exists."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        for name in NAMES:
            if _exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise CheckpointError(
                f"no checkpoint in folder {path}: best.safetensors or "
                f"last.safetensors (written by pixelar train) not found"
            )
    prefix = _strip(path)
    return prefix + ".safetensors", prefix + ".json"


def has_checkpoint(folder) -> bool:
    """Whether ``folder`` holds a best or last checkpoint (any format, even damaged)."""
    return any(_exists(os.path.join(os.fspath(folder), n)) for n in NAMES)


def remove_checkpoint(prefix):
    """Delete checkpoint PREFIX (both formats); missing files are fine."""
    prefix = _strip(prefix)
    for ext in (".safetensors", ".json"):
        try:
            os.remove(prefix + ext)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------- header


def _read_header(raw_head, size, path):
    """Parse a safetensors header. raw_head: the file's first bytes (at least 8 + header
    length, when the file has them); size: the file's length. Returns (header dict,
    data start). Checks every entry against the file's size."""
    if size < 8 or len(raw_head) < 8:
        raise CheckpointError(
            f"{path} is truncated or corrupted: {size} bytes is too short for a safetensors file"
        )
    (n,) = struct.unpack("<Q", raw_head[:8])
    if n > min(HEADER_LIMIT, size - 8) or len(raw_head) < 8 + n:
        raise CheckpointError(
            f"{path} is truncated or corrupted: its header claims {n} bytes, the file holds {size}"
        )
    try:
        header = json.loads(bytes(raw_head[8 : 8 + n]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path} is truncated or corrupted: its safetensors header "
            f"is not valid JSON ({type(exc).__name__})"
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupted: its safetensors header is not an object")
    data_len = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                raise CheckpointError(
                    f"{path} is corrupted: __metadata__ must map names to strings"
                )
            continue
        ok = (
            isinstance(entry, dict)
            and entry.get("dtype") in DTYPE_BYTES
            and isinstance(entry.get("shape"), list)
            and all(type(s) is int and s >= 0 for s in entry["shape"])
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and all(type(o) is int for o in entry["data_offsets"])
        )
        if not ok:
            raise CheckpointError(f"{path} is corrupted: bad header entry for tensor {name!r}")
        begin, end = entry["data_offsets"]
        numel = 1
        for s in entry["shape"]:
            numel *= s
        if not 0 <= begin <= end or end - begin != numel * DTYPE_BYTES[entry["dtype"]]:
            raise CheckpointError(
                f"{path} is corrupted: tensor {name!r} of shape "
                f"{entry['shape']} does not match its byte range"
            )
        if end > data_len:
            raise CheckpointError(
                f"{path} is truncated or corrupted: tensor {name!r} ends at "
                f"byte {end} of a data section of {data_len} bytes"
            )
    return header, 8 + n


def _digest(meta_str, header, data):
    """SHA-256 over the metadata JSON, the tensor table and the tensor bytes."""
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    h = hashlib.sha256(b"pixelar-checkpoint-2\0")
    h.update(meta_str.encode("utf-8"))
    h.update(b"\0")
    h.update(json.dumps(table, sort_keys=True, separators=(",", ":")).encode("ascii"))
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


# ---------------------------------------------------------------------------- checks


def _fail(path, what):
    raise CheckpointError(f"{path}: {what}")


def _check_meta(meta, path):
    """The JSON part of a checkpoint has the fields and types pixelar wrote."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        _fail(path, f"not a pixelar checkpoint (format field {got!r})")
    version = meta.get("version")
    if type(version) is not int or version < 1:
        _fail(path, f"bad checkpoint version {version!r}")
    if version > VERSION:
        _fail(
            path,
            f"checkpoint version {version}; this pixelar reads up to {VERSION}: upgrade pixelar",
        )
    name = meta.get("model_class")
    if not isinstance(name, str) or name not in MODELS:
        _fail(path, f"unknown model class {name!r}; pixelar knows {', '.join(MODELS)}")
    config = meta.get("model_config")
    if not isinstance(config, dict):
        _fail(path, f"model_config must be an object, got {type(config).__name__}")
    opt = meta.get("optimizer")
    if opt is not None:
        groups = opt.get("param_groups") if isinstance(opt, dict) else None
        ok = (
            isinstance(opt, dict)
            and isinstance(opt.get("class"), str)
            and isinstance(groups, list)
            and groups
            and all(
                isinstance(g, dict)
                and isinstance(g.get("params"), list)
                and all(type(i) is int for i in g["params"])
                for g in groups
            )
            and isinstance(opt.get("scalars"), dict)
            and all(isinstance(v, dict) for v in opt["scalars"].values())
        )
        if not ok:
            _fail(path, "the optimizer entry is malformed (class, param_groups, scalars)")
        for g in groups:
            lr = g.get("lr")
            if type(lr) not in (int, float) or not lr >= 0 or lr == float("inf"):
                _fail(
                    path, f"the optimizer's learning rate must be a finite number >= 0, got {lr!r}"
                )
    if meta.get("train_state") is not None and not isinstance(meta["train_state"], dict):
        _fail(path, "train_state must be an object")


def _check_config_sizes(config, header, path):
    """Cheap bounds before building the model, even on the meta device: integers below
    2**31, at most 2**26 pixels, no more layers than stored tensors."""

    def ints(value):
        if type(value) is int:
            yield value
        elif isinstance(value, (list, dict)):
            for v in value.values() if isinstance(value, dict) else value:
                yield from ints(v)

    for key, value in config.items():
        for v in ints(value):
            if abs(v) >= 2**31:
                _fail(path, f"model_config {key}={value!r} is out of range")
    shape = config.get("image_shape")
    if isinstance(shape, list) and all(type(s) is int for s in shape):
        pixels = 1
        for s in shape:
            pixels *= max(s, 0)
        if pixels > 2**26:
            _fail(
                path, f"model_config image_shape={shape} has {pixels} dimensions (at most {2**26})"
            )
    n_model = sum(1 for k in header if k.startswith("model."))
    layers = config.get("num_layers")
    if type(layers) is int and layers > n_model:
        _fail(path, f"model_config num_layers={layers} but only {n_model} model tensors are stored")


def _check_shapes(meta, header, path):
    """The stored model tensors have the names and shapes of the model the JSON describes
    (built on the meta device: nothing is allocated)."""
    name, config = meta["model_class"], meta["model_config"]
    _check_config_sizes(config, header, path)
    try:
        with torch.device("meta"):
            model = MODELS[name](**config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    except Exception as exc:  # any bad config (TypeError, ValueError, ...) is the file's fault
        raise CheckpointError(
            f"{path}: model_config {json.dumps(config)[:200]} does not "
            f"describe a {name}: {type(exc).__name__}: {exc}"
        ) from exc
    stored = {
        k[len("model.") :]: tuple(v["shape"])
        for k, v in header.items()
        if k.startswith("model.") and isinstance(v, dict)
    }
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        _fail(
            path,
            f"the stored weights do not fit {name}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}",
        )
    for k, shape in expected.items():
        if stored[k] != shape:
            _fail(
                path,
                f"the stored weights do not fit {name}({json.dumps(config)[:200]}): "
                f"model.{k} has shape {list(stored[k])}, the model expects {list(shape)}",
            )


def nonfinite_names(tensors):
    """Names of the floating tensors of ``tensors`` (name -> tensor) holding NaN or inf."""
    return [
        k
        for k, v in tensors.items()
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


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


def encode_checkpoint(tensors, meta) -> bytes:
    """The bytes of a format-2 checkpoint file: ``tensors`` (name -> CPU tensor) and
    ``meta`` (a JSON-serialisable dict) under one SHA-256."""
    meta_str = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    first = _save_bytes(tensors, metadata={"format": "pt", META_KEY: meta_str})
    header, start = _read_header(first, len(first), "<new checkpoint>")
    digest = _digest(meta_str, header, memoryview(first)[start:])
    return _save_bytes(tensors, metadata={"format": "pt", META_KEY: meta_str, DIGEST_KEY: digest})


def save_checkpoint(prefix, model, optimizer=None, train_state=None, rng=True):
    """Write checkpoint PREFIX.safetensors atomically (see the module docstring) and remove
    a version-1 PREFIX.json left beside it; returns the path written. ``train_state`` is any
    JSON-serialisable dict (the trainer's counters). A failed write (disk full) raises
    ``OutputWriteError`` and leaves the previous checkpoint as it was."""
    prefix = _strip(prefix)
    path = prefix + ".safetensors"
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
    from .. import __version__

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__name__,
        "model_config": _jsonable(model.config()),
        "optimizer": meta_optimizer,
        "train_state": train_state,
        "pixelar_version": __version__,
        "torch_version": torch.__version__,
    }
    atomic_write_bytes(path, encode_checkpoint(tensors, meta), label=os.path.basename(prefix))
    try:  # a version-1 JSON beside it described the tensors file just replaced
        os.remove(prefix + ".json")
    except FileNotFoundError:
        pass
    return path


# ---------------------------------------------------------------------------- load


class Checkpoint:
    """A loaded checkpoint: ``meta`` (the JSON), ``tensors`` (name -> CPU tensor), ``path``
    (the file it came from), ``version`` (its format) and ``sha256`` (the verified digest
    that identifies its content: format 2 the whole checkpoint's, format 1 the tensors')."""

    def __init__(self, meta, tensors, path, version=VERSION, sha256=None):
        self.meta, self.tensors, self.path, self.version = meta, tensors, path, version
        self.sha256 = sha256 if sha256 is not None else meta.get("tensors_sha256")

    @property
    def train_state(self):
        return self.meta.get("train_state") or {}

    def model_state(self):
        return {k[len("model.") :]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def build_model(self, allow_nonfinite=False):
        """A new model of the stored class and config, with the stored weights. Raises
        CheckpointError for weights holding NaN or inf (a diverged run) unless
        ``allow_nonfinite``."""
        name = self.meta.get("model_class")
        try:
            model = MODELS[name](**self.meta["model_config"])
            model.load_state_dict(self.model_state(), strict=True)
        except Exception as exc:
            raise CheckpointError(
                f"{self.path}: the stored weights do not fit {name}"
                f"({self.meta.get('model_config')}): {exc}"
            ) from exc
        bad = nonfinite_names(model.state_dict())
        if bad and not allow_nonfinite:
            raise CheckpointError(
                f"{self.path}: non-finite parameters (NaN or inf in "
                f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
                f"the run that wrote it diverged; refusing to use it"
            )
        return model

    def restore_optimizer(self, optimizer):
        """Load the stored optimizer state into ``optimizer`` (same class, same params)."""
        stored = self.meta.get("optimizer")
        if stored is None:
            raise CheckpointError(f"{self.path}: holds no optimizer state")
        if stored["class"] != type(optimizer).__name__:
            raise CheckpointError(
                f"{self.path}: optimizer is {stored['class']}, not {type(optimizer).__name__}"
            )
        groups = stored["param_groups"]
        sizes = [len(g["params"]) for g in optimizer.param_groups]
        if [len(g["params"]) for g in groups] != sizes:
            raise CheckpointError(
                f"{self.path}: optimizer state is for parameter groups of "
                f"{[len(g['params']) for g in groups]} tensors, the model "
                f"has {sizes}"
            )
        ids = {
            i: p
            for g, og in zip(groups, optimizer.param_groups)
            for i, p in zip(g["params"], og["params"])
        }
        try:
            state = {}
            for key, value in self.tensors.items():
                if key.startswith("optimizer."):
                    _, pid, name = key.split(".", 2)
                    state.setdefault(int(pid), {})[name] = value
            for pid, scalars in stored["scalars"].items():
                state.setdefault(int(pid), {}).update(scalars)
            for pid, entries in state.items():
                if pid not in ids:
                    raise ValueError(f"state for parameter {pid}, which no group lists")
                for name, value in entries.items():
                    if torch.is_tensor(value) and name != "step" and value.shape != ids[pid].shape:
                        raise ValueError(
                            f"optimizer.{pid}.{name} has shape "
                            f"{list(value.shape)}, its parameter "
                            f"{list(ids[pid].shape)}"
                        )
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except Exception as exc:
            raise CheckpointError(f"{self.path}: optimizer state does not fit: {exc}") from exc

    def restore_rng(self):
        """Restore the torch random generators' states saved with the checkpoint."""
        cpu = self.tensors.get("rng.torch")
        if cpu is not None:
            ref = torch.get_rng_state()
            if cpu.dtype != ref.dtype or cpu.shape != ref.shape:
                raise CheckpointError(
                    f"{self.path}: rng.torch is {cpu.dtype} "
                    f"{list(cpu.shape)}, expected {ref.dtype} "
                    f"{list(ref.shape)}"
                )
            torch.set_rng_state(cpu)
        cuda = [self.tensors[k] for k in sorted(self.tensors) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available():
            try:
                torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
            except Exception as exc:
                raise CheckpointError(f"{self.path}: bad CUDA RNG state: {exc}") from exc


def _load_tensors(raw, path):
    try:
        return _load_bytes(bytes(raw))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} cannot be read as safetensors ({exc}): the "
            f"checkpoint is truncated or corrupted"
        ) from exc


def _read_file(path):
    """(bytes, header, data start) of a safetensors file, read through one open file (a
    concurrent os.replace cannot mix two versions)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                head += f.read(min(n, HEADER_LIMIT, max(size - 8, 0)))
            header, start = _read_header(head, size, path)
            raw = head + f.read(size - len(head))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if len(raw) != size:
        raise CheckpointError(f"{path} changed while being read; try again")
    return raw, header, start


def _load_v2(path, raw, header, start):
    meta_str = header.get("__metadata__", {}).get(META_KEY)
    digest = _digest(meta_str, header, memoryview(raw)[start:])
    stored = header["__metadata__"].get(DIGEST_KEY)
    if digest != stored:
        raise CheckpointError(
            f"{path} is truncated or corrupted: its SHA-256 {digest[:12]}... "
            f"differs from the {str(stored)[:12]}... recorded in it"
        )
    try:
        meta = json.loads(meta_str)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({exc})") from exc
    _check_meta(meta, path)
    _check_shapes(meta, header, path)
    return Checkpoint(meta, _load_tensors(raw, path), path, version=2, sha256=digest)


def _read_json(path):
    try:
        with open(path, "rb") as f:
            text = f.read(JSON_LIMIT + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(text) > JSON_LIMIT:
        raise CheckpointError(
            f"{path} is larger than {JSON_LIMIT >> 20} MiB: not a checkpoint's JSON"
        )
    try:
        return json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({type(exc).__name__}): the "
            f"checkpoint is truncated or corrupted"
        ) from exc


def _load_v1(prefix, attempts=4):
    """A version-1 pair PREFIX.safetensors + PREFIX.json. A pair that does not match is read
    again a few times, 0.1 s apart: an older pixelar may be between writing its two files."""
    tensors_path, json_path = prefix + ".safetensors", prefix + ".json"
    for p in (json_path, tensors_path):
        if not os.path.isfile(p):
            raise CheckpointError(
                f"checkpoint file {p} not found (a version-1 checkpoint is "
                f"PREFIX.json plus PREFIX.safetensors)"
            )
    for attempt in range(attempts):
        try:
            meta = _read_json(json_path)
            _check_meta(meta, json_path)
            raw, header, start = _read_file(tensors_path)
            digest = hashlib.sha256(raw).hexdigest()
            if digest != meta.get("tensors_sha256"):
                raise CheckpointError(
                    f"{tensors_path} is truncated or corrupted: its SHA-256 {digest[:12]}... "
                    f"differs from the {str(meta.get('tensors_sha256'))[:12]}... recorded in "
                    f"{json_path}"
                )
            break
        except CheckpointError:
            if attempt + 1 == attempts:
                raise
            time.sleep(0.1)  # a writer between its two files: read again
    _check_shapes(meta, header, json_path)
    return Checkpoint(meta, _load_tensors(raw, tensors_path), json_path, version=1)


def _load_prefix(prefix):
    path = prefix + ".safetensors"
    if os.path.isfile(path):
        raw, header, start = _read_file(path)
        if META_KEY in header.get("__metadata__", {}):
            return _load_v2(path, raw, header, start)
        if not os.path.isfile(prefix + ".json"):
            raise CheckpointError(
                f"{path} is not a pixelar checkpoint: it holds no "
                f"{META_KEY} metadata and no {prefix}.json is beside it"
            )
    return _load_v1(prefix)


def read_meta(prefix):
    """The metadata JSON of checkpoint PREFIX (either format) without reading or verifying
    its tensors: a dict with model_class, model_config, train_state ..., or None when there
    is no such checkpoint or its metadata cannot be parsed. For a quick look at a run (its
    config, epoch, status); use load_checkpoint for anything that must be trusted."""
    prefix = _strip(prefix)
    try:
        if os.path.isfile(prefix + ".safetensors"):
            with open(prefix + ".safetensors", "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                if len(head) == 8:
                    (n,) = struct.unpack("<Q", head)
                    head += f.read(min(n, HEADER_LIMIT, max(size - 8, 0)))
            header, _ = _read_header(head, size, prefix + ".safetensors")
            meta_str = header.get("__metadata__", {}).get(META_KEY)
            if meta_str is not None:
                meta = json.loads(meta_str)
                return meta if isinstance(meta, dict) else None
        if os.path.isfile(prefix + ".json"):
            meta = _read_json(prefix + ".json")
            return meta if isinstance(meta, dict) else None
    except (OSError, ValueError, RecursionError, CheckpointError):
        return None
    return None


def checkpoint_file(prefix):
    """The file whose modification time is checkpoint PREFIX's last write (format 2: the
    .safetensors file; format 1: the .json written after it), or None when absent."""
    prefix = _strip(prefix)
    for path in (prefix + ".json", prefix + ".safetensors"):
        if os.path.isfile(path) and (
            path.endswith(".json") or not os.path.isfile(prefix + ".json")
        ):
            return path
    return None


def load_checkpoint(path, prefer=NAMES) -> Checkpoint:
    """Read and verify a checkpoint. ``path``: PREFIX, PREFIX.safetensors, PREFIX.json, or a
    training folder, whose checkpoints are tried in the order ``prefer`` (default best,
    then last): a damaged one is skipped with a CheckpointWarning. Raises CheckpointError,
    saying what is wrong, when no usable checkpoint is found."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        candidates = [os.path.join(path, name) for name in prefer]
        present = [p for p in candidates if _exists(p)]
        if not present:
            raise CheckpointError(
                f"no checkpoint in folder {path}: "
                f"{' or '.join(n + '.safetensors' for n in prefer)} (written "
                f"by pixelar train) not found"
            )
    else:
        present = [_strip(path)]
    errors = []
    for prefix in present:
        try:
            ckpt = _load_prefix(prefix)
        except CheckpointError as exc:
            errors.append(exc)
            continue
        for exc in errors:
            warnings.warn(
                f"skipping a damaged checkpoint: {exc}; using {ckpt.path} "
                f"(step {ckpt.train_state.get('global_step', '?')}) instead",
                CheckpointWarning,
                stacklevel=2,
            )
        return ckpt
    if len(errors) == 1:
        raise errors[0]
    raise CheckpointError("no usable checkpoint: " + "; ".join(str(e) for e in errors))


def load_model(path, device="cpu"):
    """The model stored in a checkpoint, in eval mode on ``device``."""
    return load_checkpoint(path).build_model().to(device).eval()
