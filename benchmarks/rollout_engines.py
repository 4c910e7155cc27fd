"""Rollout throughput and memory: HF ``generate`` vs the colocated vLLM engine (rollout.engine=hf|vllm).

    .venv/bin/python benchmarks/rollout_engines.py                 # CPU: embedded model + ~25M model
    .venv/bin/python benchmarks/rollout_engines.py --quick         # CPU, 2 prompts per model, one timed call
    .venv/bin/python benchmarks/rollout_engines.py --gpu           # GPU: random ~0.5B Qwen2, 64 prompts x 8 x 1024

Each (model, engine) pair runs in a fresh subprocess, through the same ``RolloutEngine.generate`` the
trainer calls: one warm-up call, then ``--repeats`` timed calls. Reported: generated tokens per second
(response tokens that the mask keeps, over the wall time of ``generate``), the engine's start time,
peak memory (CPU: growth of peak RSS over the process after loading the policy; GPU: peak of
``torch.cuda.memory_allocated`` for HF, device memory in use after sampling for vLLM, which reserves
``rollout.vllm.gpu_memory_utilization`` of the device). The table is printed and written as JSON
(``--json``, default ``runs/bench/rollout_engines.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    # name: (Qwen2 config overrides or None for the shipped model, prompts, group size, new tokens)
    "embedded": (None, 32, 8, 64),
    "25M": (dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                 num_key_value_heads=2), 4, 8, 256),
    "0.5B": (dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936), 64, 8, 1024),
}


def build_model(name: str, device):
    """The shipped model, or a random Qwen2 of the given shape with the shipped tokenizer's ids."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvr_cli.models import load_model, load_tokenizer

    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    shape = MODELS[name][0]
    if shape is None:
        return load_model({"path": "builtin:tiny_arith"}, device), tok
    torch.manual_seed(0)
    cfg = Qwen2Config(**{"vocab_size": len(tok), "max_position_embeddings": 2048, "tie_word_embeddings": True,
                         "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                         "pad_token_id": tok.pad_token_id, **shape})
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype).eval(), tok


def run_one(name: str, engine_name: str, prompts_n: int, repeats: int, device_name: str) -> dict:
    import contextlib

    import torch

    from rlvr_cli.data.datasets import load_prompts
    from rlvr_cli.rollout.engines import SamplingSpec, build_engine
    from rlvr_cli.rollout.stopping import StopCriteria

    device = torch.device(device_name)
    model, tok = build_model(name, device)
    _, prompts_default, group, new_tokens = MODELS[name]
    prompts_n = prompts_n or prompts_default
    data = {"name": "arith", "source": "synthetic", "template": "chat", "train_size": prompts_n, "test_size": 1,
            "synthetic": {"seed": 0}}
    prompts, _ = load_prompts(data, tok, "train")
    # random models: no stop token (every response runs to the budget), the shipped one: its EOS
    stop = StopCriteria(()) if MODELS[name][0] is not None else StopCriteria((tok.eos_token_id,))
    spec = SamplingSpec(1.0, 1.0, new_tokens, stop)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    engine = build_engine(engine_name, model=model, tokenizer=tok, policy=lambda: contextlib.nullcontext(model),
                          batch_size=prompts_n * group, device=device, dtype=next(model.parameters()).dtype,
                          max_model_len=int(model.config.max_position_embeddings), vllm_cfg={"seed": 0})
    start_s = time.perf_counter() - t0
    torch.manual_seed(0)
    engine.generate(prompts[: max(1, prompts_n // 4)], group, spec)  # warm-up
    times, tokens = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ro = engine.generate(prompts, group, spec)
        times.append(time.perf_counter() - t0)
        tokens.append(int(ro.response_mask.sum()))
    out = {"model": name, "engine": engine_name, "device": device.type, "params": sum(p.numel() for p in model.parameters()),
           "prompts": prompts_n, "group": group, "max_new_tokens": new_tokens, "start_s": start_s,
           "gen_s": min(times), "tokens": tokens[times.index(min(times))],
           "tokens_per_s": tokens[times.index(min(times))] / min(times)}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        out["peak_mem_gb"] = (torch.cuda.max_memory_allocated() if engine_name == "hf" else total - free) / 2**30
    else:
        out["peak_mem_gb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 2**20
    engine.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="the GPU section (random ~0.5B Qwen2)")
    p.add_argument("--quick", action="store_true", help="2 prompts per model, one timed call")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--models", default=None, help="comma list of " + ", ".join(MODELS))
    p.add_argument("--engines", default="hf,vllm")
    p.add_argument("--json", default=str(REPO / "runs" / "bench" / "rollout_engines.json"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # model:engine:prompts:repeats:device (subprocess)
    a = p.parse_args()
    if a.one:
        name, engine, n, repeats, device = a.one.split(":")
        print(json.dumps(run_one(name, engine, int(n), int(repeats), device)))
        return
    device = "cuda" if a.gpu else "cpu"
    models = a.models.split(",") if a.models else (["0.5B"] if a.gpu else ["embedded", "25M"])
    prompts, repeats = (2, 1) if a.quick else (0, a.repeats)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    rows = []
    for name in models:
        for engine in a.engines.split(","):
            r = subprocess.run([sys.executable, __file__, "--one", f"{name}:{engine}:{prompts}:{repeats}:{device}"],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name} {engine}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            row = rows[-1]
            print(f"{row['model']:>8s} {row['engine']:>4s}  {row['params'] / 1e6:7.1f}M params  "
                  f"{row['prompts']}x{row['group']}x{row['max_new_tokens']}  start {row['start_s']:6.1f} s  "
                  f"generate {row['gen_s']:7.2f} s  {row['tokens_per_s']:9.0f} tokens/s  peak {row['peak_mem_gb']:.2f} GB",
                  flush=True)
    for name in models:
        pair = {r["engine"]: r for r in rows if r["model"] == name}
        if {"hf", "vllm"} <= set(pair):
            print(f"{name}: vLLM / HF tokens/s = {pair['vllm']['tokens_per_s'] / pair['hf']['tokens_per_s']:.2f}x")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
