"""``rlvr analyze dlogp base=MODEL rl=MODEL data=NAME|FILE [key=value ...]``: where RLVR changed the
model, token by token (Huang et al., *Beyond Magnitude*, arXiv 2603.22117 §3.1; spec
methods-siren-rsi-dlogp.md §3.1).

The RL model samples its own responses to the data's prompts; both models then score those same
tokens by teacher forcing at T = 1 (raw distributions, spec [A]), and

    Δlog p(y_t) = log π_RL(y_t | x, y_<t) − log π_base(y_t | x, y_<t).

Writes ``dlogp_hist.png`` (density, log-scale y: the paper's two tails), ``dlogp.json`` (summary,
fraction of tokens beyond ±threshold, the tokens with the largest positive and negative Δlog p in
their context) to ``out`` (default ``analysis/dlogp``). Both models must share a tokenizer.

Options (key=value): base, rl (hub id, local folder or builtin:<name>), data (a conf/data name, whose
held-out split is used, or a .jsonl/.json/.parquet file with problem/answer fields), n (problems, 32),
samples (responses per problem, 1), max_new_tokens (256), temperature (1.0), top_p (1.0),
threshold (0.3, the |Δlog p| counted as "changed"; the paper's τ is −0.3 … −0.4), top (20), seed (0),
device (auto), out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlvr_cli.errors import UserError

DEFAULTS: dict[str, Any] = {"base": None, "rl": None, "data": None, "n": 32, "samples": 1, "max_new_tokens": 256,
                            "temperature": 1.0, "top_p": 1.0, "threshold": 0.3, "top": 20, "seed": 0,
                            "device": "auto", "out": "analysis/dlogp", "batch_size": 32}
CONTEXT = 12  # tokens of context shown before a top token


def parse_args(args: list[str]) -> dict[str, Any]:
    opts = dict(DEFAULTS)
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or key not in DEFAULTS:
            raise UserError(f"rlvr analyze dlogp: unknown argument {a!r}; valid keys: {', '.join(DEFAULTS)}")
        default = DEFAULTS[key]
        try:
            opts[key] = type(default)(value) if default is not None and not isinstance(default, str) else value
        except ValueError:
            raise UserError(f"rlvr analyze dlogp: {key} takes a {type(default).__name__}, got {value!r}") from None
    missing = [k for k in ("base", "rl", "data") if not opts[k]]
    if missing:
        raise UserError(f"rlvr analyze dlogp needs {', '.join(f'{k}=...' for k in missing)}")
    return opts


def data_config(data: str) -> tuple[dict[str, Any], str]:
    """(data config, split): a conf/data name -> its held-out split; a file -> the jsonl config on it."""
    from omegaconf import OmegaConf

    from rlvr_cli.paths import CONF_DIR, group_options

    if Path(data).is_file():
        node = OmegaConf.load(CONF_DIR / "data" / "jsonl.yaml")
        node.path = str(Path(data).resolve())
        split = "train"
    elif data in group_options("data"):
        node, split = OmegaConf.load(CONF_DIR / "data" / f"{data}.yaml"), "test"
    else:
        raise UserError(f"data={data!r} is neither a file nor a data config; valid: {', '.join(group_options('data'))}")
    return OmegaConf.to_container(OmegaConf.create({"data": node}), resolve=True)["data"], split


def token_dlogp(rl_model, base_model, rollouts, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Δlog p, log π_RL, log π_base), each [N, T] on the responses' tokens (0 on padding), at T = 1."""
    from rlvr_cli.rollout import policy_token_stats

    out = []
    with torch.no_grad():
        for model in (rl_model, base_model):
            dev = next(model.parameters()).device
            out.append(policy_token_stats(model, rollouts.input_ids.to(dev), rollouts.attention_mask.to(dev),
                                          rollouts.response_mask.to(dev), rollouts.prompt_len, 1.0, ("logprobs",),
                                          chunk_size=chunk_size)["logprobs"].float().cpu())
    lp_rl, lp_base = out
    mask = rollouts.response_mask.bool()
    return torch.where(mask, lp_rl - lp_base, torch.zeros_like(lp_rl)), lp_rl, lp_base


def top_tokens(dlogp, lp_rl, lp_base, rollouts, tokenizer, k: int, largest: bool) -> list[dict[str, Any]]:
    mask = rollouts.response_mask.bool()
    flat = torch.where(mask, dlogp, torch.full_like(dlogp, -float("inf") if largest else float("inf"))).flatten()
    k = min(k, int(mask.sum()))
    idx = torch.topk(flat, k, largest=largest).indices.tolist() if k else []
    t = dlogp.shape[1]
    resp = rollouts.responses
    rows = []
    for i in idx:
        r, c = divmod(i, t)
        ids = resp[r]
        rows.append({"response": r, "position": c, "token": tokenizer.decode([int(ids[c])]),
                     "dlogp": float(dlogp[r, c]), "logp_rl": float(lp_rl[r, c]), "logp_base": float(lp_base[r, c]),
                     "context": tokenizer.decode(ids[max(0, c - CONTEXT) : c].tolist()),
                     "after": tokenizer.decode(ids[c + 1 : c + 4].tolist())})
    return rows


def summarize(dlogp: torch.Tensor, mask: torch.Tensor, threshold: float) -> dict[str, float]:
    v = dlogp[mask.bool()]
    if v.numel() == 0:
        raise UserError("no response tokens to compare (every response was empty)")
    q = torch.quantile(v, torch.tensor([0.01, 0.5, 0.99]))
    return {"tokens": int(v.numel()), "mean": float(v.mean()), "std": float(v.std()) if v.numel() > 1 else 0.0,
            "abs_mean": float(v.abs().mean()), "p01": float(q[0]), "p50": float(q[1]), "p99": float(q[2]),
            "threshold": threshold, "frac_above": float((v > threshold).float().mean()),
            "frac_below": float((v < -threshold).float().mean()),
            "frac_beyond": float((v.abs() > threshold).float().mean())}


def dlogp_main(args: list[str]) -> dict[str, Any]:
    from rlvr_cli.analysis.plots import histogram
    from rlvr_cli.data.datasets import load_prompts
    from rlvr_cli.models import load_model, load_tokenizer, pick_device
    from rlvr_cli.rollout import generate_rollouts
    from rlvr_cli.rollout.extrapolate import vocab_size

    o = parse_args(args)
    device = pick_device(o["device"])
    tokenizer = load_tokenizer({"path": o["rl"]})
    rl_model = load_model({"path": o["rl"], "dtype": "float32"}, device)
    base_model = load_model({"path": o["base"], "dtype": "float32"}, device)
    if vocab_size(rl_model) != vocab_size(base_model):
        raise UserError(f"Δlog p needs one vocabulary: rl={o['rl']} has {vocab_size(rl_model)} output tokens, "
                        f"base={o['base']} {vocab_size(base_model)} (base must be the RL model's base model)")
    data_cfg, split = data_config(o["data"])
    prompts, report = load_prompts(data_cfg, tokenizer, split)
    prompts = prompts[: o["n"]]
    if not prompts:
        raise UserError(f"data={o['data']} gave no prompts ({report.summary()})")
    torch.manual_seed(o["seed"])
    ro = generate_rollouts(rl_model, tokenizer, prompts, o["samples"], o["max_new_tokens"], o["temperature"],
                           o["top_p"], o["batch_size"])
    dlogp, lp_rl, lp_base = token_dlogp(rl_model, base_model, ro)
    out = Path(o["out"])
    out.mkdir(parents=True, exist_ok=True)
    result = {"base": o["base"], "rl": o["rl"], "data": o["data"], "split": split, "problems": len(prompts),
              "samples": o["samples"], "temperature": o["temperature"],
              "summary": summarize(dlogp, ro.response_mask, o["threshold"]),
              "top_positive": top_tokens(dlogp, lp_rl, lp_base, ro, tokenizer, o["top"], True),
              "top_negative": top_tokens(dlogp, lp_rl, lp_base, ro, tokenizer, o["top"], False)}
    histogram(dlogp[ro.response_mask.bool()].tolist(), out / "dlogp_hist.png",
              "Δlog p = log π_RL − log π_base per response token (nats)",
              f"Δlog p over the RL model's responses ({len(prompts)} problems)", o["threshold"])
    result["figure"] = str(out / "dlogp_hist.png")
    (out / "dlogp.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    s = result["summary"]
    print(f"{s['tokens']} tokens: mean Δlog p {s['mean']:+.4f}, |Δ| > {s['threshold']:g} on {s['frac_beyond']:.1%} "
          f"({s['frac_above']:.1%} up, {s['frac_below']:.1%} down)")
    for name in ("top_positive", "top_negative"):
        print(name.replace("_", " ") + ":")
        for t in result[name][:5]:
            print(f"  {t['dlogp']:+.3f}  …{t['context']!r} [{t['token']!r}] {t['after']!r}")
    print(f"wrote {out}/dlogp.json and {out}/dlogp_hist.png")
    return result
