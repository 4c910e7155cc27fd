"""Collectives on a GPU run: the process group must carry CPU tensors (metrics, object gathers, method
statistics) as well as CUDA ones. An NCCL-only group has no CPU backend and fails at the first
``all_sum`` ("No backend type associated with device type cpu")."""
from __future__ import annotations

import torch
import torch.distributed as dist

from rlvr_cli import dist as ddp


def test_a_gpu_run_starts_a_group_with_a_cpu_backend(monkeypatch):
    """What ``init_distributed`` asks torch for on a GPU (no GPU here: the calls are recorded)."""
    seen = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.setdefault("backend", backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: seen.setdefault("device", i))
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", "29999")):
        monkeypatch.setenv(key, value)  # restored afterwards (init_distributed sets them when absent)
    ddp.init_distributed(torch.device("cuda"))
    assert seen == {"backend": "cpu:gloo,cuda:nccl", "device": 0}
    assert ddp.backend_for(torch.device("cpu")) == "gloo"
    assert ddp.backend_for(torch.device("cuda"), "nccl") == "nccl"  # trainer.dist_backend=nccl


def _group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)


def test_collectives_put_their_tensors_on_a_device_the_group_serves(tmp_path, monkeypatch):
    """Under gloo the tensors stay on the CPU; under a group that serves CUDA only (plain ``nccl``)
    they go to the current GPU. Recorded with a fake 2-rank world over a real 1-rank gloo group."""
    _group(tmp_path)
    try:
        import torch.distributed.distributed_c10d as c10d

        devices = []
        monkeypatch.setattr(ddp, "world_size", lambda: 2)
        monkeypatch.setattr(dist, "all_reduce", lambda t, **kw: devices.append(t.device.type))
        monkeypatch.setattr(dist, "all_gather", lambda out, t: (devices.append(t.device.type),
                                                                [o.copy_(t) for o in out]))
        assert ddp.collective_device() == torch.device("cpu")
        ddp.all_sum(1.0), ddp.all_max(3), ddp.gather_1d(torch.ones(3))
        assert set(devices) == {"cpu"}
        monkeypatch.setattr(c10d, "_device_capability", lambda group=None: ["cuda"])
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
        assert ddp.collective_device() == torch.device("cuda", 1)
    finally:
        dist.destroy_process_group()
