"""rlvr vs TRL's GRPOTrainer vs a bare loop, side by side on the same work (CPU).

    pip install -e ".[bench]"                       # TRL, pinned; without it TRL's column is skipped
    .venv/bin/python benchmarks/vs_trl.py [--rounds 3] [--steps 12] [--json runs/benchmarks/vs_trl.json]
    .venv/bin/python benchmarks/vs_trl.py --quick   # 1 round of 4 steps (a smoke run)

The work, for all three: the shipped ``tiny_arith`` policy, 8 prompts x 8 samples per step from the
arithmetic task (the same rendered prompts in the same order: rlvr's own seeded sampler), 64 new tokens at T = 1, top-p 1, no top-k, the same
grader, zero-variance groups kept, one on-policy AdamW update per step (lr 3e-4), no KL (beta 0), no
validation, no checkpoint, no gradient checkpointing, 2 torch threads. The figures mean something only on an
otherwise idle machine: the JSON records the load average before and after. Each contestant runs in its own process; rounds are
interleaved (rlvr, TRL, bare, rlvr, ...). A contestant's figure is the median over its steps 2..N
(step 1 warms up), and the table gives the median over rounds, the ratios, and rlvr's stage split
(medians of its ``timing_s/*``).

- ``rlvr``: ``rlvr train`` itself, timed from its own ``timing_s/step``;
- ``trl``: ``trl.GRPOTrainer`` (``num_generations=8``, 64 completions per step, ``num_iterations=1``),
  timed between ``on_step_begin`` and ``on_step_end``;
- ``bare``: HF ``generate`` (through rlvr's ``generate_rollouts(sampler="hf")``) -> one train-mode forward of prompt + response -> token log-probs ->
  advantage-weighted token-mean loss -> backward -> AdamW, nothing else.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "rlvr_cli" / "assets" / "tiny_arith"
PROMPTS, GROUP, NEW_TOKENS, LR = 8, 8, 64, 3e-4
STAGES = ("gen", "weight_sync", "reward", "old_log_prob", "ref", "method", "update_actor", "checkpoint", "val", "other")


def median_after_warmup(values: list[float]) -> float:
    """The median of per-step seconds, the first step (warm-up) left out when there are more."""
    values = values[1:] if len(values) > 1 else values
    return statistics.median(values)


def rlvr_figures(rows: list[dict]) -> dict:
    """s/step and the stage split (median seconds per ``timing_s/<stage>``) from a run's metrics rows."""
    train = [r for r in rows if r.get("step", 0) >= 1 and ("timing_s/step" in r or "perf/step_s" in r)]
    steps = [r.get("timing_s/step", r.get("perf/step_s")) for r in train]
    split = {s: median_after_warmup([r.get(f"timing_s/{s}", 0.0) for r in train]) for s in STAGES}
    return {"s_per_step": median_after_warmup(steps), "steps": steps, "split": {k: v for k, v in split.items() if v > 0}}


def prompts_and_grader(steps: int):
    """The prompts of each of ``steps`` steps in the order ``rlvr train`` draws them (its seeded
    ``PromptSampler``), flattened, and rlvr's grader and tokenizer, as rlvr builds them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rlvr_cli.paths import CONF_DIR
    from rlvr_cli.data.datasets import PromptSampler, load_prompts
    from rlvr_cli.models import load_tokenizer
    from rlvr_cli.rewards import build_grader

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["reward.num_workers=1"])
    c = lambda n: OmegaConf.to_container(n, resolve=True)  # noqa: E731
    tok = load_tokenizer(c(cfg.model))
    prompts, _ = load_prompts(c(cfg.data), tok, "train")
    sampler = PromptSampler(prompts, cfg.seed)
    ordered = [p for _ in range(steps) for p in sampler.next_batch(PROMPTS)]
    return ordered, build_grader(c(cfg.reward)), tok


# ------------------------------------------------------------------------------------------ workers

def run_rlvr(steps: int, out: Path) -> dict:
    run = Path(tempfile.mkdtemp(prefix="rlvr_vs_trl_"))
    cmd = [sys.executable, "-m", "rlvr_cli.cli", "train", f"out_dir={run}", f"rollout.prompts_per_step={PROMPTS}",
           f"algo.group_size={GROUP}", f"rollout.max_new_tokens={NEW_TOKENS}", f"algo.mini_batch_size={PROMPTS * GROUP}",
           f"algo.micro_batch_size={PROMPTS * GROUP}", f"trainer.max_steps={steps}", "val.every=0", "val.at_start=false",
           "trainer.save_every=0", "trainer.resume=never", "trainer.progress=false", f"optim.lr={LR}",
           "optim.warmup_steps=0", "trainer.num_threads=2"]
    try:
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(run, ignore_errors=True)
    fig = rlvr_figures(rows)
    out.write_text(json.dumps(fig))
    return fig


def worker_trl(steps: int, out: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(2)
    torch.manual_seed(0)
    prompts, grader, tok = prompts_and_grader(steps)
    data = Dataset.from_dict({"prompt": [p.text for p in prompts], "answer": [p.answer for p in prompts]})

    def accuracy(prompts, completions, answer, **kw):
        return [g.score for g in grader.grade(list(completions), list(answer))]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_vs_rlvr_"), per_device_train_batch_size=PROMPTS * GROUP,
        num_generations=GROUP, steps_per_generation=1, num_iterations=1, gradient_accumulation_steps=1,
        max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0, top_k=0, beta=0.0, learning_rate=LR,
        lr_scheduler_type="constant", warmup_steps=0, max_steps=steps, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, disable_dropout=True, dataloader_num_workers=0, seed=0,
        shuffle_dataset=False, gradient_checkpointing=False,  # rlvr's prompt order; no recomputation, as rlvr
    )
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=accuracy, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[Clock()])
    trainer.train()
    grader.close()
    out.write_text(json.dumps({"s_per_step": median_after_warmup(times), "steps": times}))


def worker_bare(steps: int, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from rlvr_cli.advantages import grpo_advantages
    from rlvr_cli.rollout import generate_rollouts
    from rlvr_cli.rollout.logprobs import position_ids_from_mask

    torch.set_num_threads(2)
    torch.manual_seed(0)
    prompts, grader, tok = prompts_and_grader(steps)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        batch = prompts[step * PROMPTS: (step + 1) * PROMPTS]
        ro = generate_rollouts(model, tok, batch, GROUP, NEW_TOKENS, 1.0, 1.0, PROMPTS * GROUP, sampler="hf")
        scores = torch.tensor([g.score for g in grader.grade(ro.texts, [batch[i].answer for i in ro.group_ids.tolist()])])
        adv = grpo_advantages(scores, ro.group_ids)
        model.train()
        logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask,  # positions as sampled
                       position_ids=position_ids_from_mask(ro.attention_mask)).logits[:, ro.prompt_len - 1: -1]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ro.responses[..., None]).squeeze(-1)
        mask = ro.response_mask.float()
        loss = -(torch.exp(lp - lp.detach()) * adv[:, None] * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    grader.close()
    out.write_text(json.dumps({"s_per_step": median_after_warmup(times), "steps": times}))


def contestant(name: str, steps: int) -> dict | None:
    """One run of a contestant in a fresh process; None (with a note) when TRL is not installed."""
    if name == "trl" and importlib.util.find_spec("trl") is None:
        return None
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        if name == "rlvr":
            return run_rlvr(steps, out)
        subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(steps), "--out", str(out)],
                       check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return json.loads(out.read_text())
    except subprocess.CalledProcessError as e:  # one line, and the other contestants still run
        last = (e.stderr or "").strip().splitlines()[-1:] or ["(no output)"]
        print(f"{name}: failed (exit {e.returncode}): {last[0][:200]}", flush=True)
        return None
    finally:
        out.unlink(missing_ok=True)


def summarize(rounds: dict[str, list[dict]]) -> dict:
    """Median over rounds of each contestant's s/step, the ratios, rlvr's median stage split."""
    s = {k: statistics.median(r["s_per_step"] for r in v) for k, v in rounds.items() if v}
    out: dict = {"s_per_step": s}
    if "rlvr" not in s:
        return {**out, "rlvr_split": {}}
    for other in ("trl", "bare"):
        if other in s:
            out[f"rlvr_over_{other}"] = s["rlvr"] / s[other]
    stages = sorted({k for r in rounds["rlvr"] for k in r.get("split", {})}, key=STAGES.index)
    out["rlvr_split"] = {k: statistics.median(r["split"].get(k, 0.0) for r in rounds["rlvr"]) for k in stages}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="1 round of 4 steps")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--worker", choices=("trl", "bare"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        (worker_trl if a.worker == "trl" else worker_bare)(a.steps, Path(a.out))
        return
    rounds_n, steps = (1, 4) if a.quick else (a.rounds, a.steps)
    names = ["rlvr", "trl", "bare"]
    if importlib.util.find_spec("trl") is None:
        print("trl is not installed (pip install -e '.[bench]'): TRL's column is skipped")
    load_before = os.getloadavg()
    rounds: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds_n):
        for name in names:
            fig = contestant(name, steps)
            if fig is not None:
                rounds[name].append(fig)
                print(f"round {r + 1} {name:5} {fig['s_per_step']:.3f} s/step", flush=True)
    res = summarize(rounds)
    print(f"\n{PROMPTS} prompts x {GROUP} samples x {NEW_TOKENS} new tokens, {steps} steps, {rounds_n} interleaved rounds (medians)")
    for name, v in res["s_per_step"].items():
        print(f"  {name:5} {v:.3f} s/step")
    if "rlvr_over_trl" in res:
        print(f"  rlvr / TRL  {res['rlvr_over_trl']:.2f}  (rlvr {1 / res['rlvr_over_trl']:.2f}x faster)")
    if "rlvr_over_bare" in res:
        print(f"  rlvr / bare {res['rlvr_over_bare']:.2f}")
    load_after = os.getloadavg()
    print(f"  load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(the contestants use 2 threads: figures from a busy machine are not comparable)")
    total = sum(res["rlvr_split"].values()) or 1.0
    print("  rlvr's step: " + " · ".join(f"{k} {v:.3f} s ({v / total:.0%})" for k, v in res["rlvr_split"].items()))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        from importlib.metadata import PackageNotFoundError, version

        def ver(pkg: str) -> str | None:
            try:
                return version(pkg)
            except PackageNotFoundError:
                return None

        Path(a.json).write_text(json.dumps({
            "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "versions": {p: ver(p) for p in ("torch", "transformers", "trl")},
            "load_average_1min": {"before": load_before[0], "after": load_after[0]}, "rounds": rounds, **res}, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
