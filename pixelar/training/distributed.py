"""Multi-process training with DistributedDataParallel, started by torchrun:

    torchrun --nproc_per_node=N -m pixelar train ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; the process group uses gloo on the CPU and
nccl on GPUs (one GPU per process, cuda:LOCAL_RANK). A process waits at most ``timeout``
seconds (``pixelar train --ddp-timeout``, default DEFAULT_TIMEOUT) for its peers in a
collective; then it fails with an error instead of hanging (torch's default is 30 minutes).
"""

import datetime
import gc
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = 300.0  # seconds


class DeviceError(ValueError):
    """The device asked for is not there (e.g. --device cuda without a GPU)."""


class PeerError(RuntimeError):
    """Another process of the group failed, or did not answer within the timeout."""


def peer_error(d, exc, timeout):
    """A PeerError for ``exc`` raised by a collective (gloo and nccl raise RuntimeError or
    torch.distributed.DistError), or None when ``exc`` is something else."""
    text = " ".join(str(exc).split())
    if not d.enabled or not (
        isinstance(exc, dist.DistError)
        or any(word in text for word in ("Timed out", "timed out", "gloo", "NCCL", "Connection"))
    ):
        return None
    return PeerError(
        f"process {d.rank} of {d.world_size}: another process failed or did not "
        f"answer within {float(timeout):g} s (--ddp-timeout): {text[:300]}"
    )


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when setup() created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name="auto", local_rank=0) -> torch.device:
    """'auto' -> cuda:local_rank when CUDA is there, else cpu; 'cuda' -> cuda:local_rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}") from exc


def setup(device="auto", timeout=DEFAULT_TIMEOUT) -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), else run alone.
    timeout: seconds a collective waits for the other processes before raising."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world <= 1:
        return Dist(0, 1, dev, False)
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=float(timeout)),
        )
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


def teardown(d: Dist):
    """Destroy the process group this process created, once nothing holds it any more."""
    if d.owns_group and dist.is_initialized():
        # A DDP wrapper left for the garbage collector keeps the group's backend (and its
        # worker threads) alive until interpreter shutdown, where destroying it aborted
        # about 1 run in 13 of a 2-process gloo training ("terminate called without an
        # active exception"). Collect it while the interpreter is whole.
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(d: Dist, values):
    """Sum a list of floats over the ranks (float64); identity when running alone."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(
        values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu"
    )
    dist.all_reduce(t)
    return t.tolist()


def weights_sha256(model) -> str:
    """SHA-256 of every parameter and buffer's bytes, in state_dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_weight_hashes(d: Dist, model):
    """Every rank's ``weights_sha256`` (a list, rank order); [own] when running alone."""
    own = weights_sha256(model)
    if not d.enabled:
        return [own]
    out = [None] * d.world_size
    dist.all_gather_object(out, own)
    return out


def barrier(d: Dist):
    if d.enabled:
        dist.barrier()
