"""Peak memory of per-token log-prob + entropy: chunked (rlvr) vs one full [tokens, V] fp32 pass.

    .venv/bin/python benchmarks/logprob_memory.py [--vocab 151936] [--tokens 4096] [--chunk 1024]

Each variant runs in a fresh subprocess; the figure is the growth of peak RSS (ru_maxrss) over the
process's baseline after building the model, forward + backward included.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def run_one(mode: str, vocab: int, tokens: int, chunk: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvr_cli.rollout.logprobs import entropy_from_logits, policy_token_stats, position_ids_from_mask

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=tokens + 8,
                      tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg)
    rows = 4
    t = tokens // rows
    ids = torch.randint(0, vocab, (rows, t + 1))
    attn = torch.ones_like(ids)
    mask = torch.ones(rows, t, dtype=torch.long)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "chunked":
        out = policy_token_stats(model, ids, attn, mask, 1, 1.0, ("logprobs", "entropy"), ("logprobs",),
                                 chunk_size=chunk, checkpoint=True)
        out["logprobs"].sum().backward()
    else:
        logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        with torch.no_grad():
            entropy_from_logits(logits[:, :-1])
        lp.sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "peak_growth_mb": (peak - base) / 1024, "full_logits_mb": tokens * vocab * 4 / 2**20}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--mode", default=None)
    a = p.parse_args()
    if a.mode:
        print(json.dumps(run_one(a.mode, a.vocab, a.tokens, a.chunk)))
        return
    print(f"vocab {a.vocab}, {a.tokens} tokens, chunk {a.chunk}: one fp32 [tokens, V] tensor = {a.tokens * a.vocab * 4 / 2**20:.0f} MB")
    for mode in ("full", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--vocab", str(a.vocab), "--tokens", str(a.tokens),
                              "--chunk", str(a.chunk)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:8s} peak memory growth (forward + backward): {r['peak_growth_mb']:8.0f} MB")


if __name__ == "__main__":
    main()
