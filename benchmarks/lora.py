"""Full fine-tuning vs LoRA on the shipped models (CPU): seconds per step, trainable parameters,
optimizer-state bytes and peak memory.

    .venv/bin/python benchmarks/lora.py [--steps 4] [--rank 16] [--json runs/benchmarks/lora.json]

Each (model, variant) trains ``--steps`` GRPO steps of the same tiny config in a fresh child process
(so the peak resident memory, ``ru_maxrss``, is that variant's alone): ``full`` trains every weight,
``lora`` only rank-``--rank`` adapters on every linear layer (``model.lora.rank``). s/step is the
median of the steps after the first (``perf/step_s``). The optimizer-state bytes are the tensors AdamW
holds (two moments per trainable parameter, plus its step counters), read off the optimizer after the run.
On models this small the frozen weights and the process itself dominate the peak; what LoRA saves at
scale is the optimizer states and gradients of the base (``rlvr plan`` gives the 7B figures).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("builtin:tiny_arith", "builtin:tiny_countdown")
BASE = ["rollout.prompts_per_step=8", "algo.group_size=8", "rollout.max_new_tokens=48", "algo.mini_batch_size=32",
        "algo.micro_batch_size=16", "val.every=0", "val.at_start=false", "trainer.progress=false",
        "trainer.save_every=0", "trainer.resume=never", "data.train_size=128", "data.test_size=8",
        "reward.num_workers=1", "algo.filter_zero_std_groups=false"]


def child(model: str, rank: int, steps: int, out: str) -> dict:
    """One variant in this process: train, then report (runs in the child)."""
    import torch
    from hydra import compose, initialize_config_dir

    from rlvr_cli.paths import CONF_DIR
    from rlvr_cli.trainer.loop import GRPOTrainer

    data = "countdown" if "countdown" in model else "arith"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model.split(':', 1)[1]}",
                                                      f"data={data}", *BASE, f"trainer.max_steps={steps}",
                                                      f"model.lora.rank={rank}", f"model.lora.alpha={2 * rank}"])
    torch.manual_seed(0)
    trainer = GRPOTrainer.from_config(cfg, Path(out))
    trainer.fit()
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    opt = trainer.engine.optimizer
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    params = list(trainer.model.parameters())
    result = {
        "s_per_step": statistics.median(r["perf/step_s"] for r in rows[1:]) if len(rows) > 1 else rows[0]["perf/step_s"],
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "total_params": sum(p.numel() for p in params),
        "optimizer_state_bytes": state_bytes,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    trainer.close()
    return result


def run_variant(model: str, rank: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import lora; "
                f"print('RESULT', json.dumps(lora.child({model!r}, {rank}, {steps}, {out!r})))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                           env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode or line is None:
            raise SystemExit(f"{model} rank {rank} failed:\n{r.stderr[-2000:]}")
        return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    for model in args.models:
        for variant, rank in (("full", 0), ("lora", args.rank)):
            r = {"model": model, "variant": variant, "rank": rank, **run_variant(model, rank, args.steps)}
            results.append(r)
            print(f"{model:24s} {variant:4s}  {r['s_per_step']:.3f} s/step  trainable {r['trainable_params']:>9,} of "
                  f"{r['total_params']:,}  optimizer states {r['optimizer_state_bytes'] / 2**20:7.2f} MiB  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MiB", flush=True)
    for model in args.models:
        full, lo = (next(r for r in results if r["model"] == model and r["variant"] == v) for v in ("full", "lora"))
        print(f"{model}: LoRA trains {lo['trainable_params'] / full['trainable_params']:.1%} of the parameters, "
              f"optimizer states {lo['optimizer_state_bytes'] / full['optimizer_state_bytes']:.1%}, "
              f"s/step x{lo['s_per_step'] / full['s_per_step']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": str(date.today()), "machine": platform.processor() or platform.machine(),
                                         "steps": args.steps, "rank": args.rank, "results": results}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
