"""The real-model path on one GPU, in one short script (< 8 minutes on one H100/H200).

    python scripts/gpu_check.py [--out gpu_check.json] [--steps 3] [--quick]
    python scripts/gpu_check.py --cpu-smoke      # the same code on the CPU with the embedded model (a test runs it)

1. builds a random Qwen2-architecture model of Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14/2
   heads) at Qwen's real vocabulary (151,936), saved as an HF folder with the shipped tokenizer (ids
   the tokenizer lacks decode to nothing: the vocabulary is there for memory and speed, not text);
2. ``trainer=single`` in bf16 (fp32 master weights, bf16 autocast) with gradient checkpointing for
   ``--steps`` GRPO steps, with the entropy bonus so a random model still gets a gradient, and checks
   that the weights moved and that gradient checkpointing ran in the loss forwards;
3. 2 steps each of ``trainer=zero2`` and ``trainer=zero3`` on one NCCL rank (DeepSpeed bf16 mode);
   then ``rollout.engine=vllm`` under ``single`` and ``zero3`` (colocated engine, weights pushed after
   every update, sleep/wake around it): checks the engine/trainer log-prob mismatch stays small
   (bf16 kernels differ: mean |Δ log p| < 0.05) after the pushes;
4. reloads each run's HF export and compares it with the trained weights;
5. prints peak GPU memory and sampling / training tokens per second per run, and writes JSON;
6. padding-free forwards (``algo.use_remove_padding``): on a batch of 16 rows with responses of 1 to
   1,024 tokens, per-token log-probs / entropy of the packed forward vs the padded one, with
   ``flash_attention_2`` in bf16 (varlen: rows delimited by restarting position_ids) where flash-attn
   is installed, else ``sdpa`` with the block-diagonal mask; tolerance: mean |Δ log p| ≤ 1e-2 and
   max ≤ 0.25 in bf16 (different kernels round differently), 1e-4 in fp32 (the CPU smoke); both
   forwards + backwards timed. The rows come in groups of 4 (2 in the smoke) sharing a prompt, and with ``sdpa`` the
   prompt-shared forwards (``packing=prefix`` and ``prefix_block``) are compared and timed the same way;
7. the lean sampler vs HF ``generate`` (``rollout.sampler``): greedy first tokens agree on ≥ 90% of
   the rows (bf16 kernels may flip near-ties later on), and both are timed on 64 rows x 256 tokens;
8. LoRA (``model.lora.rank=16``, KL on: the reference is the base under the adapters) under ``single``
   (bf16 base, fp32 adapters, bf16 autocast), ``zero3`` and with the vLLM engine (merged layers pushed):
   the base stays bit-identical, the adapters move, ``hf/`` holds the merged weights, the engine's
   log-probs match the trainer's (mean |Δ log p| < 0.05).

Each run is its own process (DeepSpeed keeps global state). The GPU machine needs this package's
dependencies: ``scripts/gpu_wheels.sh`` (run on the CPU machine) puts the ones a bare PyTorch image
lacks into ``.whl/`` to carry there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QWEN_0_5B = dict(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32_768,
                 tie_word_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6)


def build_model(folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if (folder / "config.json").is_file():
        return
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(REPO / "rlvr_cli" / "assets" / "tiny_arith")
    cfg = Qwen2Config(**QWEN_0_5B, bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters -> {folder}", flush=True)


def overrides(model_dir: Path, run: str, steps: int, quick: bool, smoke: bool = False) -> list[str]:
    """``run``: a trainer name, with ``vllm-`` for the vLLM engine and ``lora-`` for LoRA adapters
    (``lora-vllm-single``)."""
    prompts, new = (4, 16) if smoke else (8, 64) if quick else (16, 256)
    *flags, trainer = run.split("-")
    device = ["trainer.device=cpu", "model.dtype=bfloat16"] if smoke else ["model.dtype=auto"]
    if "lora" in flags:  # rank 16 on every linear layer, the KL term on (its reference: the base under the adapters)
        device += ["model.lora.rank=16", "model.lora.alpha=32", "algo.kl.enabled=true", "algo.kl.coef=0.01"]
    if "vllm" in flags:  # the CPU build runs fp32 only
        device = ["trainer.device=cpu", "model.dtype=float32"] if smoke else device
        device += ["rollout.engine=vllm", "rollout.vllm.gpu_memory_utilization=0.3"]
    return [
        f"model.path={model_dir}", "model.name=qwen2-0.5b-random", *device, "model.gradient_checkpointing=true",
        f"trainer={trainer}", f"trainer.max_steps={steps}", f"trainer.save_every={steps}", "trainer.resume=never",
        "trainer.progress=false", "val.every=0", "method=entropy_bonus",
        f"rollout.prompts_per_step={prompts}", "algo.group_size=8", f"rollout.max_new_tokens={new}",
        f"algo.mini_batch_size={prompts * 8}", "algo.micro_batch_size=8", "algo.filter_zero_std_groups=false",
        "optim.lr=1e-5", "data.train_size=256", "data.test_size=16", "reward.num_workers=2",
    ]


def worker(model_dir: Path, trainer: str, steps: int, quick: bool, out_json: Path, smoke: bool = False) -> None:
    """One run in this process: train, then reload the export and compare."""
    import torch
    from hydra import compose, initialize_config_dir

    from rlvr_cli.cli import _register_resolvers
    from rlvr_cli.paths import CONF_DIR
    from rlvr_cli.trainer.loop import GRPOTrainer

    _register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides(model_dir, trainer, steps, quick, smoke))
    run_dir = out_json.with_suffix("")
    trainer_obj = GRPOTrainer.from_config(cfg, run_dir)
    model = trainer_obj.model
    zero3 = trainer_obj.actor.zero3
    ckpt_calls = []
    for layer in model.model.layers:
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, _f=inner, **k: (ckpt_calls.append(1), _f(*a, **k))[1]

    from rlvr_cli import lora

    adapted = lora.has_lora(model)

    def snapshot():
        if zero3:
            return {k: v.float().cpu() for k, v in trainer_obj.engine.full_state_dict().items()}
        return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}

    dtypes = {("adapter" if lora.is_adapter_param(n) else "base"): str(p.dtype).removeprefix("torch.")
              for n, p in model.named_parameters()}

    before = snapshot()
    gpu = torch.cuda.is_available() and not smoke
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    rows, t0 = [], time.perf_counter()
    while trainer_obj.step < steps:
        m = trainer_obj.train_step()
        m["step"] = trainer_obj.step
        rows.append(m)
        print(f"  {trainer} step {trainer_obj.step}: loss {m.get('loss/total', float('nan')):.4f}  "
              f"gen {m['perf/gen_tokens_per_s']:.0f} tok/s  step {m['perf/step_s']:.1f}s  "
              f"entropy {m.get('actor/entropy', float('nan')):.3f}", flush=True)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0
    after = snapshot()
    ckpt = trainer_obj.save()
    # runs that survive: the checkpoint verifies, its state (CUDA RNG included) loads with
    # weights_only=True, and the per-step stop flag all-reduces over this trainer's process group
    from rlvr_cli.trainer import checkpoint as ckpt_mod

    survive = {"checkpoint_problem": ckpt_mod.verify(ckpt),
               "cuda_rng_saved": "cuda" in ckpt_mod.load_state(ckpt)["rng"] if gpu else None,
               "stop_flag_agreed": trainer_obj.stopper.agreed()}
    moved = sum(int((after[k] != before[k]).sum()) for k in after) / sum(v.numel() for v in after.values())
    lora_check = {}
    if adapted:  # the base bit-identical, the adapters moved; the export holds the merged weights
        base_moved = [k for k in after if not lora.is_adapter_param(k) and not torch.equal(after[k], before[k])]
        adapters_moved = sum(int((after[k] != before[k]).sum()) for k in after if lora.is_adapter_param(k))
        lora_check = {"lora_base_changed": base_moved[:3], "lora_adapter_values_moved": adapters_moved,
                      "lora_dtypes": dtypes}
        after = lora.merged_state_dict(after, lora.scalings(model))
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(ckpt / "hf", dtype=torch.float32).state_dict()
    export_err = max((reloaded[k] - after[k]).abs().max().item() for k in after if k in reloaded)
    tokens = sum(m["rollout/response_len_mean"] for m in rows) * cfg.rollout.prompts_per_step * cfg.algo.group_size
    result = {
        "trainer": trainer, "precision": trainer_obj.precision.describe(), "optimizer": trainer_obj.engine.optimizer_name,
        "steps": steps, "wall_s": wall, "peak_gpu_mem_gib": peak,
        "gen_tokens_per_s": sum(m["perf/gen_tokens_per_s"] for m in rows) / len(rows),
        "train_tokens_per_s": tokens / sum(m["perf/step_s"] - m["perf/gen_s"] for m in rows),
        "weights_moved_frac": moved, "checkpointed_layer_calls": len(ckpt_calls),
        "export_max_abs_diff": export_err, "export_keys_missing": sorted(set(after) - set(reloaded)),
        # fp32 master weights (single) move everywhere at lr 1e-5; DeepSpeed's bf16 module copies move
        # where an update crosses a bf16 rounding step
        **survive, **lora_check,
        "ok": (moved > (0.5 if trainer == "single" else 0.0) if not adapted else
               not lora_check["lora_base_changed"] and lora_check["lora_adapter_values_moved"] > 0)
        and len(ckpt_calls) > 0 and export_err < 1e-2
        and survive["checkpoint_problem"] is None and survive["stop_flag_agreed"] is None
        and survive["cuda_rng_saved"] is not False,
    }
    if trainer_obj.rollout.name == "vllm":
        diffs = [m["rollout/logprob_abs_diff_mean"] for m in rows if "rollout/logprob_abs_diff_mean" in m]
        result.update(engine="vllm", logprob_abs_diff_mean=max(diffs), kl_rollout_train=max(
            m["rollout/kl_rollout_train"] for m in rows if "rollout/kl_rollout_train" in m),
            weight_sync_s=sum(m["perf/weight_sync_s"] for m in rows) / len(rows))
        result["ok"] = result["ok"] and len(diffs) == len(rows) and max(diffs) < 0.05
    trainer_obj.close()
    out_json.write_text(json.dumps(result, indent=2))


def packing_check(model_dir: Path, out_json: Path, smoke: bool) -> None:
    """Packed vs padded token statistics and gradients' cost on one wide-length batch (step 6)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM

    from rlvr_cli.rollout.logprobs import policy_token_stats

    gpu = torch.cuda.is_available() and not smoke
    dev = torch.device("cuda" if gpu else "cpu")
    dtype = torch.bfloat16 if gpu else torch.float32
    attn = "flash_attention_2" if gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    mode = "varlen" if attn == "flash_attention_2" else "block_mask"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn).to(dev).train()
    n, p, t = (16, 64, 1024) if gpu else (6, 8, 120)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, min(model.config.vocab_size, 1000), (n, p + t), generator=g)
    att, resp = torch.ones(n, p + t, dtype=torch.long), torch.zeros(n, t)
    group = 4 if n % 4 == 0 else 2
    ids[:, :p] = ids[::group, :p].repeat_interleave(group, 0)
    for i in range(n):  # groups of rows share a prompt (of p/2..p tokens); responses spread over 1..t
        rl, pl = 1 + (i * 997) % t, p // 2 + (i // group) % (p // 2)
        att[i, : p - pl], att[i, p + rl:], resp[i, :rl] = 0, 0, 1
    ids, att, resp = ids.to(dev), att.to(dev), resp.to(dev)
    res: dict = {"attn_implementation": attn, "packing": mode, "dtype": str(dtype), "rows": n,
                 "valid_frac": float(resp.sum() / resp.numel())}
    out = {}
    layouts = ("off", mode) + (("prefix", "prefix_block") if attn == "sdpa" else ())
    for name in layouts:
        times = []
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
                st = policy_token_stats(model, ids, att, resp, p, 1.0, ("logprobs", "entropy"), ("logprobs",), packing=name)
            (st["logprobs"] * resp).sum().backward()
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[name] = {k: v.detach().float() for k, v in st.items()}
        res[f"{name}_fwd_bwd_s"] = sorted(times)[1]
    valid = resp.bool()
    mean_tol, max_tol = (1e-2, 0.25) if dtype == torch.bfloat16 else (1e-4, 1e-4)
    res["ok"] = True
    for name in layouts[1:]:
        d = (out["off"]["logprobs"] - out[name]["logprobs"]).abs()[valid]
        key = "" if name == mode else f"{name}_"
        res.update({f"{key}logprob_abs_diff_mean": float(d.mean()), f"{key}logprob_abs_diff_max": float(d.max()),
                    f"{key}entropy_abs_diff_max": float((out["off"]["entropy"] - out[name]["entropy"]).abs()[valid].max()),
                    f"{key}speedup": res["off_fwd_bwd_s"] / res[f"{name}_fwd_bwd_s"]})
        res["ok"] &= res[f"{key}logprob_abs_diff_mean"] <= mean_tol and res[f"{key}logprob_abs_diff_max"] <= max_tol
    res.update(sampler_check(model, dev, gpu))
    res["ok"] &= res["sampler_first_token_agree"] >= 0.9
    res["trainer"] = "packing"
    out_json.write_text(json.dumps(res, indent=2))


def sampler_check(model, dev, gpu: bool) -> dict:
    """Step 7: the lean decode loop vs HF ``generate`` on the same prompts (greedy agreement, timings)."""
    import torch

    from rlvr_cli.models import load_tokenizer
    from rlvr_cli.rollout.generate import generate_rollouts
    from rlvr_cli.rollout.stopping import StopCriteria
    from rlvr_cli.types import Prompt

    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    model.eval()
    prompts = [Prompt(str(i), "x", "1", f"Compute {i} + {3 * i} - {i % 5}.") for i in range(8)]
    stop = StopCriteria((int(model.config.eos_token_id or 2),))
    firsts, out = {}, {}
    for sampler in ("hf", "lean"):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            firsts[sampler] = generate_rollouts(model, tok, prompts, 1, 8, 0.0, 1.0, stop=stop, sampler=sampler).responses[:, 0]
            times = []
            for _ in range(2):
                torch.manual_seed(0)
                if gpu:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                ro = generate_rollouts(model, tok, prompts, 8, 256 if gpu else 16, 1.0, 1.0, stop=stop, sampler=sampler)
                if gpu:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        out[f"sampler_{sampler}_s"] = min(times)
        out[f"sampler_{sampler}_tokens"] = int(ro.response_mask.sum())
    out["sampler_first_token_agree"] = float((firsts["hf"] == firsts["lean"]).float().mean())
    model.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 prompts x 8, 64 new tokens")
    ap.add_argument("--work", default="/tmp/rlvr_gpu_check")
    ap.add_argument("--cpu-smoke", action="store_true", help="the embedded model on the CPU, trainer=single, 1 step")
    ap.add_argument("--worker", nargs=2, metavar=("TRAINER", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    model_dir = REPO / "rlvr_cli" / "assets" / "tiny_arith" if args.cpu_smoke else work / "qwen2-0.5b-random"
    if args.worker and args.worker[0] == "packing":
        packing_check(model_dir, Path(args.worker[1]), args.cpu_smoke)
        return
    if args.worker:
        trainer, out = args.worker
        worker(model_dir, trainer, args.steps if trainer.endswith("single") else 2, args.quick, Path(out), args.cpu_smoke)
        return
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        sys.exit("gpu_check: no CUDA device visible")
    work.mkdir(parents=True, exist_ok=True)
    if not args.cpu_smoke:
        build_model(model_dir)
    results = {"device": "cpu (smoke)" if args.cpu_smoke else torch.cuda.get_device_name(0), "torch": torch.__version__,
               "runs": []}
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    import importlib.util

    vllm = ["vllm-single"] + ([] if args.cpu_smoke else ["vllm-zero3", "lora-vllm-single"]) if importlib.util.find_spec("vllm") else []
    if not vllm:
        print("vllm is not installed: the rollout.engine=vllm runs are skipped", flush=True)
    runs = ["single", "lora-single"] if args.cpu_smoke else ["single", "zero2", "zero3", "lora-single", "lora-zero3"]
    for port, trainer in enumerate(runs + vllm + ["packing"]):
        out = work / f"{trainer}.json"
        out.unlink(missing_ok=True)
        run_env = {**env, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(29700 + port)} if not trainer.endswith("single") else env
        print(f"== {trainer}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, __file__, "--work", str(work), "--steps", str(args.steps),
                              *(["--quick"] if args.quick else []), *(["--cpu-smoke"] if args.cpu_smoke else []),
                              "--worker", trainer, str(out)], env=run_env)
        r = json.loads(out.read_text()) if out.is_file() else {"trainer": trainer, "ok": False}
        r.update(rc=rc, process_s=time.perf_counter() - t0)
        results["runs"].append(r)
    print(f"\n{'trainer':16} {'ok':>3} {'precision':>28} {'peak GiB':>9} {'gen tok/s':>10} {'train tok/s':>11} {'moved':>6} {'ckpt':>5}")
    for r in results["runs"]:
        if "peak_gpu_mem_gib" in r:
            print(f"{r['trainer']:16} {'yes' if r['ok'] else 'NO':>3} {r['precision']:>28} {r['peak_gpu_mem_gib']:9.1f} "
                  f"{r['gen_tokens_per_s']:10.0f} {r['train_tokens_per_s']:11.0f} {r['weights_moved_frac']:6.2f} "
                  f"{r['checkpointed_layer_calls']:5d}"
                  + (f"  |Δlogp| {r['logprob_abs_diff_mean']:.2e}, sync {r['weight_sync_s']:.2f} s" if "engine" in r else ""))
        elif r["trainer"] == "packing" and "speedup" in r:
            print(f"packing  {'yes' if r['ok'] else 'NO':>3} {r['attn_implementation']} {r['packing']}: |Δlogp| mean "
                  f"{r['logprob_abs_diff_mean']:.2e} max {r['logprob_abs_diff_max']:.2e}; fwd+bwd padded "
                  f"{r['off_fwd_bwd_s']:.3f} s, packed {r[r['packing'] + '_fwd_bwd_s']:.3f} s ({r['speedup']:.2f}x)"
                  + (f"; prompts shared {r['prefix_fwd_bwd_s']:.3f} s ({r['prefix_speedup']:.2f}x, |Δlogp| max "
                     f"{r['prefix_logprob_abs_diff_max']:.2e}; packed with prompts shared {r['prefix_block_fwd_bwd_s']:.3f} s "
                     f"({r['prefix_block_speedup']:.2f}x, |Δlogp| max {r['prefix_block_logprob_abs_diff_max']:.2e})"
                     if "prefix_speedup" in r else "")
                  + f"; sampler hf {r['sampler_hf_s']:.2f} s, lean {r['sampler_lean_s']:.2f} s, greedy first tokens "
                    f"agree {r['sampler_first_token_agree']:.2f}")
        else:
            print(f"{r['trainer']:8}  NO (exit {r['rc']})")
    results["ok"] = all(r.get("ok") for r in results["runs"])
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\n{'PASS' if results['ok'] else 'FAIL'}; wrote {args.out}")
    sys.exit(0 if results["ok"] else 1)


if __name__ == "__main__":
    main()
