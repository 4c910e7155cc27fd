"""The command line as a user types it (subprocess where exit codes and stderr matter)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rlvr_cli.cli import normalise_overrides
from rlvr_cli.errors import UserError


def rlvr(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "rlvr_cli.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_plus_method_is_rewritten_for_a_default_group():
    out = normalise_overrides(["+method=baseline", "method=baseline", "+foo=1", "trainer.max_steps=3"], "train")
    assert out == ["method=baseline", "method=baseline", "+foo=1", "trainer.max_steps=3"]


def test_sweep_values_are_checked_one_by_one():
    assert "method=baseline,baseline" in normalise_overrides(["+method=baseline,baseline"], "train")
    with pytest.raises(UserError, match="unknown method 'nope'; valid: .*baseline"):
        normalise_overrides(["+method=baseline,nope"], "train")


def test_unknown_option_is_one_line_exit_2_no_traceback():
    r = rlvr("train", "+method=sirenn")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "unknown method 'sirenn'; valid:" in r.stderr and "baseline" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_command():
    r = rlvr("trian")
    assert r.returncode == 2 and "valid: train, eval, plan, ls, report" in r.stderr


def test_ls_lists_groups_and_options():
    r = rlvr("ls")
    assert r.returncode == 0
    for word in ("method", "baseline", "model", "tiny_arith", "algo", "dr_grpo"):
        assert word in r.stdout


def test_cfg_job_prints_composed_config_with_plus_method():
    r = rlvr("train", "+method=baseline", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "name: baseline" in r.stdout and "group_size: 8" in r.stdout


def test_recipe_from_the_command_line():
    r = rlvr("train", "+recipes=kl_cov/qwen2.5-7b_dapo17k", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "name: kl_cov" in r.stdout and "prompts_per_step: 256" in r.stdout and "Qwen/Qwen2.5-7B" in r.stdout


@pytest.mark.slow
def test_multirun_sweep_over_methods_gives_one_run_folder_each(tmp_path):
    """``rlvr train -m +method=a,b`` as typed (the documented sweep), then ``rlvr report`` over it."""
    from tests.trainer.conftest import TINY

    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [sys.executable, "-m", "rlvr_cli.cli", "train", "-m", "+method=baseline,rsi_s", *TINY,
         "trainer.max_steps=1", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.jsonl").is_file())
    assert runs == ["arith_grpo_baseline_s0", "arith_grpo_rsi_s_s0"]
    assert "method/rsi_s/keep_frac" in (sweep / "arith_grpo_rsi_s_s0" / "metrics.jsonl").read_text()
    rep = rlvr("report", str(sweep))
    assert rep.returncode == 0 and "| arith_grpo_rsi_s_s0 | rsi_s | 1 |" in rep.stdout


@pytest.mark.parametrize("override,expected", [
    ("optim.lr=abc", "optim.lr='abc': expected a float > 0"),
    ("rollout.temperature=-1", "rollout.temperature=-1: expected a float > 0 (0 or less samples greedily"),
    ("algo.group_size=1", "algo.group_size=1: expected an int >= 2"),
    ("algo.mini_batch_size=96", "algo.mini_batch_size=96: expected a divisor of 256, the responses per step"),
])
def test_bad_train_value_is_one_line_exit_2_before_anything_runs(tmp_path, override, expected):
    """A bad value is caught by the config schema at start (these were tracebacks or silent before)."""
    out = tmp_path / "run"
    r = rlvr("train", override, "trainer.max_steps=1", "val.every=0", f"out_dir={out}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("rlvr: error: ") and expected in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "resolved_config.yaml").exists()


def test_deepspeed_rank_divisibility_is_checked_before_the_launcher(tmp_path):
    r = rlvr("train", "trainer=zero2", "trainer.gpus=3", "trainer.device=cpu", f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "rollout.prompts_per_step=32: expected a multiple of the 3 data-parallel ranks" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "launching:" not in r.stdout


@pytest.mark.parametrize("override,expected", [
    ("eval.n=0", "eval.n=0: expected an int >= 1"),
    ("eval.n=abc", "eval.n='abc': expected an int >= 1"),
    ("eval.temperature=-1", "eval.temperature=-1: expected a float >= 0"),
])
def test_bad_eval_value_is_one_line_exit_2(tmp_path, override, expected):
    r = rlvr("eval", override, f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr
