"""Data-parallel helpers: rank discovery, gathers and metric reduction. Everything is an identity on
one process, so the loop has no ``if world_size > 1`` branches."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from rlvr_cli.progress import console

LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def under_launcher() -> bool:
    """True when torchrun / the deepspeed launcher / Slurm (via its env) started this process."""
    return all(k in os.environ for k in LAUNCHER_ENV)


def backend_for(device: torch.device, backend: str = "auto") -> str:
    """The process group's backend. ``auto``: gloo on CPU; on GPU one backend per device type,
    ``cpu:gloo,cuda:nccl`` (as verl does), so a collective on a CPU tensor (metrics, object gathers,
    a method's statistics) goes over gloo and a CUDA tensor over NCCL. An NCCL-only group has no CPU
    backend ("No backend type associated with device type cpu")."""
    if backend != "auto":
        return backend
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device, backend: str = "auto") -> None:
    """Join the process group (see ``backend_for``). A single process without a launcher gets the env
    a launcher would set, because DeepSpeed otherwise asks for mpi4py."""
    if dist.is_available() and dist.is_initialized():
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", str(29500 + os.getpid() % 1000))):
        os.environ.setdefault(key, value)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend_for(device, backend), timeout=timedelta(minutes=30))


def shutdown() -> None:
    """Leave the process group. Exiting with it still up aborts a rank at interpreter teardown
    ("terminate called without an active exception" from gloo's threads)."""
    if dist.is_available() and dist.is_initialized():
        barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        console.print(*args, **kwargs)


def collective_device() -> torch.device:
    """Where this module's collectives put their tensors: the CPU when the group has a CPU backend
    (gloo, or ``cpu:gloo,cuda:nccl``), else the current GPU (a group started as plain ``nccl``, e.g.
    by ``trainer.dist_backend=nccl`` or by a caller's own ``init_process_group``)."""
    try:
        from torch.distributed.distributed_c10d import _device_capability

        has_cpu = "cpu" in _device_capability()
    except ImportError:  # private helper; the backend's name says the same
        has_cpu = any(b in str(dist.get_backend()) for b in ("gloo", "mpi"))
    if has_cpu:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def all_sum(x: float) -> float:
    if world_size() == 1:
        return float(x)
    t = torch.tensor([float(x)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return float(t)


def all_max(x: int) -> int:
    if world_size() == 1:
        return int(x)
    t = torch.tensor([int(x)], dtype=torch.long, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def gather_1d(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a variable-length 1-D tensor from every rank, in rank order (same on all ranks)."""
    if world_size() == 1:
        return x
    device, comm = x.device, collective_device()
    x = x.detach().to(comm)
    sizes = [torch.zeros(1, dtype=torch.long, device=comm) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.numel()], device=comm))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=x.dtype, device=comm)
    padded[: x.numel()] = x
    parts = [torch.zeros(longest, dtype=x.dtype, device=comm) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)]).to(device)


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Average every scalar over the ranks that report it (key sets may differ between ranks)."""
    if world_size() == 1:
        return metrics
    every: list[dict[str, float]] = [{} for _ in range(world_size())]
    dist.all_gather_object(every, metrics)
    out: dict[str, float] = {}
    for key in sorted(set().union(*every)):
        values = [m[key] for m in every if key in m and m[key] is not None]
        out[key] = sum(values) / len(values) if values else float("nan")
    return out


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
