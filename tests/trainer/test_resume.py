"""A run killed with SIGKILL and resumed reaches the same metrics as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.trainer.conftest import TINY

pytestmark = pytest.mark.slow
ARGS = [*TINY, "trainer.max_steps=4", "trainer.save_every=2"]


def _train(out, extra_env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", *ARGS, f"out_dir={out}"],
                          capture_output=True, text=True, env=env, timeout=600)


def _rows(out):
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    full = _train(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _train(tmp_path / "killed", {"RLVR_FAULT_KILL_AT_STEP": "3"})
    assert killed.returncode == -signal.SIGKILL
    assert sorted(_rows(tmp_path / "killed")) == [1, 2, 3]  # step 3 ran but was never checkpointed
    resumed = _train(tmp_path / "killed")  # trainer.resume=auto (the default)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a, b = _rows(tmp_path / "full"), _rows(tmp_path / "killed")
    assert sorted(b) == [1, 2, 3, 4]  # the lost step 3 was redone, not duplicated
    for step in (3, 4):
        for key in ("reward/mean", "loss/pg", "actor/entropy", "optim/grad_norm", "rollout/response_len_mean"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-7), (step, key)
