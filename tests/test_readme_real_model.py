"""The README's real-model commands, typed as written with the model, the data and the sizes swapped
for CPU analogues (the embedded model, local files in each source's real layout, a few prompts and
tokens, one step): each gets past step 1. The GPU check (scripts/gpu_check.py) runs the same path at
Qwen's vocabulary and ~0.5B shape on a GPU; its CPU smoke mode runs here too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
CPU = ["model.path=builtin:tiny_arith", "rollout.prompts_per_step=4", "algo.group_size=4", "rollout.max_new_tokens=24",
       "algo.mini_batch_size=8", "algo.micro_batch_size=4", "trainer.max_steps=1", "trainer.save_every=0",
       "trainer.progress=false", "val.every=0", "reward.num_workers=1",
       "algo.filter_zero_std_groups=false"]  # a random-answer step still runs the update (SIREN's term has a gradient)
MATH = [{"problem": f"What is ${i} + {i}$?", "level": "Level 1", "type": "Algebra",
         "solution": f"We add: ${i} + {i} = \\boxed{{{2 * i}}}$."} for i in range(1, 9)]
MATH500 = [{"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "answer": "2", "subject": "Algebra",
            "level": 1, "unique_id": "test/algebra/1.json"}]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rlvr_train(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def test_one_gpu_command_bf16_with_gradient_checkpointing(tmp_path):
    """README: rlvr train model=qwen2.5-math-1.5b data=math algo=dr_grpo +method=siren rollout.max_new_tokens=3072
    rollout.prompts_per_step=128 algo.mini_batch_size=512 algo.micro_batch_size=8 optim.lr=1e-6 (bf16 on a GPU:
    here model.dtype=bfloat16 on the CPU, so the fp32-master + autocast path runs)."""
    train, test = _jsonl(tmp_path / "math.jsonl", MATH), _jsonl(tmp_path / "math500.jsonl", MATH500)
    out = tmp_path / "run"
    r = _rlvr_train("model=qwen2.5-math-1.5b", "data=math", "algo=dr_grpo", "+method=siren", "optim.lr=1e-6",
                    *CPU, "model.dtype=bfloat16", f"data.path={train}", f"data.test_path={test}", f"out_dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "policy: float32 weights, bfloat16 autocast on cpu, gradient checkpointing" in r.stdout
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1 and "loss/total" in row


def test_eight_gpu_zero3_command_on_two_cpu_ranks(tmp_path):
    """README: rlvr train model=qwen2.5-math-7b data=dapo17k method=siren trainer=zero3 trainer.gpus=8
    (2 CPU ranks over gloo; DAPO-Math-17k-Processed and AIME 2024 as local files in their real layouts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.data.test_sources import aime_2024, dapo_processed

    train = tmp_path / "dapo.parquet"
    pq.write_table(pa.Table.from_pylist(dapo_processed(8)), train)
    test = _jsonl(tmp_path / "aime24.jsonl", aime_2024())
    out = tmp_path / "run"
    r = _rlvr_train("model=qwen2.5-math-7b", "data=dapo17k", "method=siren", "trainer=zero3", "trainer.gpus=2",
                    "trainer.device=cpu", "trainer.master_port=29640", *CPU, f"data.path={train}",
                    f"data.test_path={test}", f"out_dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "launching:" in r.stdout and "policy: float32 on cpu, gradient checkpointing" in r.stdout
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1 and "loss/total" in row


def test_two_node_command_starts_the_deepspeed_launcher_with_the_hostfile(monkeypatch):
    """README: rlvr train ... trainer=zero2 trainer.nodes=2 trainer.gpus=8 trainer.hostfile=hosts.txt (the
    launch command it would run; no second node here)."""
    from omegaconf import OmegaConf

    from rlvr_cli.commands import launcher_command

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):  # not already under a launcher
        monkeypatch.delenv(key, raising=False)
    trainer = OmegaConf.create({"kind": "deepspeed", "gpus": 8, "nodes": 2, "hostfile": "hosts.txt", "master_port": 29500})
    cmd = launcher_command(trainer, ["trainer=zero2", "out_dir=runs/x"])
    assert cmd[:2] == ["deepspeed", "--no_local_rank"] and cmd[cmd.index("--hostfile") + 1] == "hosts.txt"
    assert cmd[cmd.index("--num_nodes") + 1] == "2" and cmd[cmd.index("--num_gpus") + 1] == "8"
    assert cmd[-4:] == ["rlvr_cli.cli", "train", "trainer=zero2", "out_dir=runs/x"]


def test_gpu_check_script_runs_in_its_cpu_smoke_mode(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--cpu-smoke", "--steps", "1",
                        "--work", str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True, env=ENV,
                       timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    result = json.loads(out.read_text())
    run, *engine, packing = result["runs"]
    # padding-free forwards: packed vs padded token log-probs (sdpa + block mask on the CPU, fp32)
    assert packing["trainer"] == "packing" and packing["ok"] and packing["logprob_abs_diff_max"] < 1e-4
    assert packing["prefix_logprob_abs_diff_max"] < 1e-4  # prompts shared per group (step 6)
    assert packing["prefix_block_logprob_abs_diff_max"] < 1e-4  # packed with prompts shared (step 6)
    assert packing["sampler_first_token_agree"] == 1.0 and packing["sampler_lean_tokens"] > 0  # step 7
    assert run["ok"] and run["checkpointed_layer_calls"] > 0 and run["export_max_abs_diff"] < 1e-2
    lora_run = engine.pop(0)  # step 8: LoRA on a bf16 base, the adapters (the optimizer's weights) in fp32
    assert lora_run["trainer"] == "lora-single" and lora_run["ok"] and lora_run["lora_base_changed"] == []
    assert lora_run["lora_dtypes"] == {"base": "bfloat16", "adapter": "float32"}
    assert lora_run["export_max_abs_diff"] < 1e-2  # hf/ holds the merged weights
    import importlib.util

    if importlib.util.find_spec("vllm"):  # the same run with rollout.engine=vllm (the CPU build, fp32)
        (v,) = engine
        assert v["trainer"] == "vllm-single" and v["ok"] and v["logprob_abs_diff_mean"] < 1e-4
