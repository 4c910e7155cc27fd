"""Kill it any way, anywhere, and the resumed run is the unbroken one: SIGKILL after a step and at each
phase of a checkpoint write, SIGTERM / SIGUSR1 mid-step (graceful stop), on one rank and on two
(DeepSpeed ZeRO-2 over gloo). One unbroken run per world size is shared by every comparison."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import TINY

pytestmark = pytest.mark.slow
ARGS = [*TINY, "trainer.max_steps=4", "trainer.save_every=2"]
TWO_RANKS = ["trainer=zero2", "trainer.gpus=2", "trainer.device=cpu"]
KEYS = ("reward/mean", "loss/pg", "actor/entropy", "optim/grad_norm", "rollout/response_len_mean")


def _train(out, extra_env=None, extra_args=()):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", *ARGS, *extra_args, f"out_dir={out}"],
                          capture_output=True, text=True, env=env, timeout=600)


def _rows(out):
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _flat(text: str) -> str:
    return text.replace("\n", "")  # the console wraps long lines (a long tmp path)


def _numbers(value) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _numbers(item)]
    return [float(value)]


def _same_run(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert sorted(rb) == sorted(ra) == [1, 2, 3, 4]  # no step lost, none logged twice
    for step in ra:
        for key in KEYS:
            assert rb[step][key] == pytest.approx(ra[step][key], rel=1e-5, abs=1e-7), (step, key)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unbroken")
    r = _train(out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def unbroken_two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unbroken2")
    r = _train(out, extra_args=[*TWO_RANKS, "trainer.master_port=29641"])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, unbroken):
    killed = _train(tmp_path, {"RLVR_FAULT_KILL_AT_STEP": "3"})
    assert killed.returncode == -signal.SIGKILL
    assert sorted(_rows(tmp_path)) == [1, 2, 3]  # step 3 ran but was never checkpointed
    resumed = _train(tmp_path)  # trainer.resume=auto (the default)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    _same_run(unbroken, tmp_path)  # the lost step 3 was redone, not duplicated


@pytest.mark.parametrize("phase", ["engine", "hf", "state", "manifest", "renamed"])
def test_sigkill_at_each_phase_of_a_checkpoint_write_resumes_the_unbroken_run(tmp_path, unbroken, phase):
    """Killed while writing step 4's checkpoint: before the rename the half-written folder is never
    taken (resume goes back to step 2); after it the checkpoint is whole (and its step's metrics line,
    logged after the save, is written on resume)."""
    killed = _train(tmp_path, {"RLVR_FAULT_KILL_CHECKPOINT": f"4:{phase}"})
    assert killed.returncode == -signal.SIGKILL
    resumed = _train(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expect = 4 if phase == "renamed" else 2
    assert f"step_{expect:06d} at step {expect}" in _flat(resumed.stdout)
    _same_run(unbroken, tmp_path)
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))


@pytest.mark.parametrize("sig,mode,code,saved", [("SIGTERM", "step", 143, 3), ("SIGUSR1", "now", 0, 2)])
def test_a_stop_signal_mid_step_saves_the_last_completed_step_and_resumes_exactly(tmp_path, unbroken, sig, mode,
                                                                                  code, saved):
    """The signal arrives while step 3 generates: with stop_mode=step the step finishes and is saved;
    with stop_mode=now it is abandoned and step 2 is the last one. Either way the resume repeats
    the unbroken run, and `rlvr analyze` reads the two runs alike."""
    stopped = _train(tmp_path, {"RLVR_FAULT_SIGNAL": f"3:{sig}"}, [f"trainer.stop_mode={mode}"])
    assert stopped.returncode == code, stopped.stderr[-2000:]
    assert f"stopped by {sig} after step {saved}; resume with the same command" in _flat(stopped.stdout)
    assert sorted(_rows(tmp_path)) == list(range(1, saved + 1))
    assert (tmp_path / "checkpoints" / f"step_{saved:06d}" / "manifest.json").is_file()
    resumed = _train(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step_{saved:06d} at step {saved}" in _flat(resumed.stdout)
    _same_run(unbroken, tmp_path)
    from rlvr_cli.analysis.analyze import analyze_run

    a, b = analyze_run(unbroken), analyze_run(tmp_path)
    for key in ("entropy", "response_len", "law_points", "cov_pairs"):
        assert _numbers(a[key]) == pytest.approx(_numbers(b[key]), rel=1e-5, abs=1e-7), key


def test_two_ranks_stop_together_when_one_gets_the_signal_and_resume_exactly(tmp_path, unbroken_two_ranks):
    """SIGTERM to rank 1 only while step 3 generates: the flag is all-reduced once per step, so both
    ranks finish step 3, save it together (each its own RNG and ZeRO partition) and exit 143."""
    stopped = _train(tmp_path, {"RLVR_FAULT_SIGNAL": "3:SIGTERM:1"}, [*TWO_RANKS, "trainer.master_port=29642"])
    assert "stopped by SIGTERM after step 3" in _flat(stopped.stdout), stopped.stderr[-3000:]
    assert stopped.returncode != 0
    ckpt = tmp_path / "checkpoints" / "step_000003"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and {"rng_rank0.pt", "rng_rank1.pt"} <= set(manifest["files"])
    assert any(name.startswith("deepspeed/") for name in manifest["files"])
    resumed = _train(tmp_path, extra_args=[*TWO_RANKS, "trainer.master_port=29643"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_run(unbroken_two_ranks, tmp_path)


@pytest.mark.parametrize("phase,port", [("engine", 29644), ("renamed", 29646)])
def test_two_ranks_killed_while_checkpointing_resume_the_unbroken_run(tmp_path, unbroken_two_ranks, phase, port):
    """SIGKILL while step 4's checkpoint is written: every rank after writing its ZeRO partitions
    (before the rename: step 2 is taken), or rank 0 after the rename (step 4 is whole; torchrun takes
    the other rank down)."""
    killed = _train(tmp_path, {"RLVR_FAULT_KILL_CHECKPOINT": f"4:{phase}"}, [*TWO_RANKS, f"trainer.master_port={port}"])
    assert killed.returncode != 0
    resumed = _train(tmp_path, extra_args=[*TWO_RANKS, f"trainer.master_port={port + 1}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expect = 4 if phase == "renamed" else 2
    assert f"step_{expect:06d} at step {expect}" in _flat(resumed.stdout)
    _same_run(unbroken_two_ranks, tmp_path)


def test_lora_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """With LoRA the resume loads the base from model.path and the checkpoint's adapter (and its
    optimizer state): as exact as without it. The KL term reads the base under the adapters."""
    lora = ["model.lora.rank=8", "model.lora.alpha=16", "optim.lr=1e-2", "algo.kl.enabled=true", "algo.kl.coef=0.05"]
    unbroken_lora = tmp_path / "unbroken"
    assert _train(unbroken_lora, extra_args=lora).returncode == 0
    killed = _train(tmp_path / "killed", {"RLVR_FAULT_KILL_AT_STEP": "3"}, extra_args=lora)
    assert killed.returncode == -signal.SIGKILL
    resumed = _train(tmp_path / "killed", extra_args=lora)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "LoRA (rank 8" in _flat(resumed.stdout)
    _same_run(unbroken_lora, tmp_path / "killed")
    assert all(_rows(unbroken_lora)[s]["loss/kl"] == pytest.approx(_rows(tmp_path / "killed")[s]["loss/kl"], rel=1e-5, abs=1e-9)
               for s in (1, 2, 3, 4))
