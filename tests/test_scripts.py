"""The sweep scripts in scripts/ print what they run with DRY_RUN=1; the train command of each
composes (its first job) and each ends in ``rlvr analyze``."""
from __future__ import annotations

import os
import shlex
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from rlvr_cli.cli import normalise_overrides
from rlvr_cli.paths import CONF_DIR, REPO_ROOT


def _dry(script: str, *args: str, **env: str) -> list[list[str]]:
    out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), *args], capture_output=True, text=True,
                         env={**os.environ, "DRY_RUN": "1", **env}, check=True, timeout=60).stdout
    return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def _first_job(argv: list[str]) -> list[str]:
    """The overrides of a multirun's first job (the first value of every comma list)."""
    out = []
    for a in argv:
        if a.startswith("-") or "=" not in a:
            continue
        key, value = a.split("=", 1)
        if key.startswith("hydra."):
            continue
        out.append(f"{key}={value.split(',')[0] if '$' not in value else value}")
    return out


def _composes(argv: list[str], config: str = "train") -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        compose(config_name=config, overrides=normalise_overrides(_first_job(argv), config))


@pytest.mark.parametrize("script,env", [
    ("sweep_methods.sh", {"SEEDS": "0,1"}),
    ("sweep_coef.sh", {}),
    ("sweep_coef.sh", {"METHOD": "kl_cov", "PARAM": "method.beta", "VALUES": "0.1,1", "EXTRA": "algo.mini_batch_size=64"}),
])
def test_sweeps_dry_run_compose_and_end_in_analyze(script, env):
    cmds = _dry(script, **env)
    train, analyze = cmds
    assert train[1:3] == ["train", "-m"] and any(a.startswith("+method=") for a in train)
    sweep = next(a.split("=", 1)[1] for a in train if a.startswith("hydra.sweep.dir="))
    assert analyze[1:] == ["analyze", sweep]
    _composes(train[3:])


def test_sweep_methods_covers_every_method():
    from rlvr_cli.methods import method_names

    train = _dry("sweep_methods.sh")[0]
    methods = next(a for a in train if a.startswith("+method=")).split("=", 1)[1].split(",")
    assert sorted(methods) == method_names()


def test_eval_checkpoints_dry_run(tmp_path):
    run = tmp_path / "run"
    for step in ("step_000002", "step_000004"):
        (run / "checkpoints" / step / "hf").mkdir(parents=True)
    cmds = _dry("eval_checkpoints.sh", str(run))
    assert [c[1] for c in cmds] == ["eval", "eval", "analyze"] and cmds[-1][2] == str(run)
    assert f"out_dir={run}/eval/step_000004" in cmds[1]
    _composes([a for a in cmds[0][2:] if not a.startswith("model.path=")], "eval")
    empty = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "eval_checkpoints.sh"), str(tmp_path)],
                           capture_output=True, text=True, env={**os.environ, "DRY_RUN": "1"})
    assert empty.returncode == 2 and "no checkpoints" in empty.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", ["arith", "countdown"])
def test_build_tiny_model_builds_a_loadable_policy_for_each_task(task, tmp_path):
    """scripts/build_tiny_model.py end to end at toy size: tokenizer, model, a few SFT steps, eval, save."""
    import json
    import sys

    out = tmp_path / task
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_tiny_model.py"), "--task", task, "--out", str(out),
                    "--steps", "4", "--n-train", "64", "--n-tokenizer", "64", "--n-test", "8", "--eval-batch", "8",
                    "--threads", "1"], check=True, capture_output=True, text=True, timeout=300)
    info = json.loads((out / "build_info.json").read_text())
    assert info["sft_steps"] == 4 and info["eval"]["n_test"] == 8
    assert info["task"]["generator"].endswith("countdown_split" if task == "countdown" else "arith_split")
    assert info["eval"]["sampled_token_entropy"] > 0
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == info["n_params"]
