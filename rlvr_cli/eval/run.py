"""``rlvr eval``: n samples per problem on each benchmark, graded by the training verifier.

``eval_main`` walks these steps:

1. resolve the benchmarks: ``conf/benchmark/<name>.yaml`` merged with ``benchmark_overrides.<name>``;
2. load the policy (and, for Δlog p extrapolation, its base model) and the grader;
3. per benchmark: load problems -> sample + grade (progress bar with ETA) -> a table of avg@n, pass@k,
   maj@n, length, truncation, grader timeouts; results.json / samples.jsonl are rewritten after each one,
   so a long run that stops keeps the finished benchmarks;
4. results.md: the numbers plus everything that produced them.

Each benchmark is seeded with ``torch.manual_seed(seed)`` before sampling, so its numbers do not depend
on which benchmarks ran before it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from rlvr_cli.data.benchmarks import benchmark_names
from rlvr_cli.data.config import BenchmarkConfig, benchmark_config
from rlvr_cli.data.datasets import canonical_rows
from rlvr_cli.errors import UserError
from rlvr_cli.eval.config import EvalConfig
from rlvr_cli.eval.evaluate import Sample, sample_and_grade
from rlvr_cli.eval.metrics import pass_ks, summarize_samples
from rlvr_cli.models import ModelConfig
from rlvr_cli.typed import to_dict
from rlvr_cli.types import Prompt

if TYPE_CHECKING:
    from rlvr_cli.configs import EvalRunConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- 1. benchmarks
def resolve_benchmarks(names: Any, overrides: Any) -> list[BenchmarkConfig]:
    """``benchmarks`` (list of names) + ``benchmark_overrides`` -> one ``BenchmarkConfig`` per benchmark."""
    names = [names] if isinstance(names, str) else list(names or [])
    overrides = dict(overrides or {})
    valid = benchmark_names()
    if not names:
        raise UserError(f"no benchmarks given; e.g. benchmarks=[aime24,amc23] (valid: {', '.join(valid)})")
    for name in [*names, *overrides]:
        if name not in valid:
            raise UserError(f"unknown benchmark '{name}'; valid: {', '.join(valid)} (conf/benchmark/*.yaml)")
    stray = sorted(set(overrides) - set(names))
    if stray:
        raise UserError(f"benchmark_overrides for {', '.join(stray)}, which is not in benchmarks={names}")
    return [benchmark_config(name, overrides.get(name)) for name in dict.fromkeys(names)]


# JSON-escape damage: a "\f", "\b", "\a", "\v" that began a TeX command became a control character
# ("\frac" -> form feed + "rac"); "\t" and "\r" only count before the rest of a common command, since tabs
# also indent Asymptote code ("\textbf" -> tab + "extbf", "\right" -> CR + "ight").
_ESCAPE_DAMAGE = re.compile(r"[\x07\x08\x0b\x0c]|\t(?:ext|imes|heta|au\b|riangle|an\b|frac|o\b)|\r(?:ight|ho\b|angle)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_source(bench: BenchmarkConfig) -> tuple[list[Any], Counter, dict[str, Any]]:
    """Raw rows of a file benchmark (local ``path``, else ``hub_id``) and where exactly they came from."""
    from rlvr_cli.data.datasets import read_rows

    split, subset, revision = bench.split or "test", bench.subset, bench.revision
    if bench.path:
        p = Path(bench.path).expanduser()
        if not p.exists():
            raise UserError(f"benchmark {bench.name}: file not found: {bench.path}")
        rows, bad = read_rows(str(p), split, subset)
        source = {"kind": "local", "path": str(p.resolve()), "sha256": sha256_file(p) if p.is_file() else None}
        return rows, bad, source
    hub_id = bench.hub_id
    if not hub_id:
        raise UserError(f"benchmark {bench.name} has neither `path` nor `hub_id`")
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, subset, split=split, revision=revision)
    except Exception as e:  # offline, unknown id, unknown split: the user fixes the config or uses a copy
        raise UserError(f"benchmark {bench.name}: could not load {hub_id} (split {split}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                        f"(local copy: +benchmark_overrides.{bench.name}.path=<file>)") from None
    source = {"kind": "hub", "hub_id": hub_id, "split": split, "subset": subset, "revision": revision,
              "fingerprint": getattr(ds, "_fingerprint", None)}
    return list(ds), Counter(), source


def load_benchmark(bench: BenchmarkConfig, tokenizer, ev: EvalConfig) -> tuple[list[Prompt], dict[str, Any]]:
    """Prompts of one benchmark (first ``limit`` problems) and its provenance record."""
    from rlvr_cli.data.datasets import rows_to_prompts

    name = bench.name
    template = ev.template or bench.template
    limit = bench.limit or ev.limit
    if bench.source == "synthetic":
        from rlvr_cli.data.synthetic import synthetic_split

        size = min(limit, bench.size) if limit else bench.size
        params = dict(bench.synthetic or {})
        rows, bad = synthetic_split(bench.split, size, **params), Counter()
        source = {"kind": "synthetic", "generator": f"rlvr_cli.data.synthetic:{params.get('task', 'arith')}",
                  "split": bench.split, "size": size, "params": params}
    else:
        rows, bad, source = _read_source(bench)
        source["rows_in_source"] = len(rows) + sum(bad.values())
        if limit:
            rows = rows[:limit]
        rows = canonical_rows(rows, bench)
    prompts, report = rows_to_prompts(rows, tokenizer, template, source=name, skipped=bad)
    damaged = sum(bool(_ESCAPE_DAMAGE.search(p.problem)) for p in prompts)
    if damaged:
        log.warning("%s: %d problem(s) contain control characters, the mark of broken LaTeX escapes "
                    "(\\frac -> form feed + 'rac'); check the copy", name, damaged)
    return prompts, {"source": source, "fields": bench.fields(), "template": template, "limit": limit,
                     "problems": len(prompts), "skipped": dict(report.skipped), "suspect_latex_escapes": damaged}


# ---------------------------------------------------------------------------------------- 2. models
def _model_record(model, model_cfg: ModelConfig, path: str, device: torch.device) -> dict[str, Any]:
    from rlvr_cli.models import resolve_model_path

    resolved = resolve_model_path(path)
    rec = {"name": model_cfg.name, "path": path, "resolved_path": resolved,
           "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "device": str(device),
           "params": sum(p.numel() for p in model.parameters()),
           "revision": getattr(model.config, "_commit_hash", None)}
    weights = Path(resolved) / "model.safetensors"
    if weights.is_file():
        rec["weights_sha256"] = sha256_file(weights)
    return rec


def _load_base(cfg: EvalRunConfig, model_cfg: ModelConfig, model, tokenizer, device: torch.device):
    """The base model for extrapolation; refuses another vocabulary (Δlog p compares token ids)."""
    from rlvr_cli.models import load_model, load_tokenizer, resolve_model_path
    from rlvr_cli.rollout.extrapolate import check_same_vocab

    base_path = cfg.extrapolate.base
    if resolve_model_path(base_path) == resolve_model_path(model_cfg.path):
        log.warning("extrapolate.base is model.path itself: Δlog p is 0 at every token, so π_ext = π_RL")
    base = load_model(model_cfg, device, path=base_path)
    check_same_vocab(model, base)
    try:
        base_tok = load_tokenizer(dataclasses.replace(model_cfg, path=base_path, tokenizer=None))
    except (OSError, ValueError) as e:
        log.warning("extrapolate.base %s has no loadable tokenizer (%s): only vocabulary sizes checked", base_path, e)
        return base
    if base_tok.get_vocab() != tokenizer.get_vocab():
        raise UserError(f"extrapolate.base {base_path} has a different tokenizer from model.path "
                        f"{model_cfg.path}; Δlog p needs both models on one vocabulary")
    return base


# ------------------------------------------------------------------------------------ 3. one benchmark
def _extrap_metrics(samples: list[Sample]) -> dict[str, float]:
    flagged = sum(s.extra.get("extrap_tokens", 0) for s in samples)
    tokens = sum(s.length for s in samples)
    return {
        "extrap/trigger_rate": flagged / max(tokens, 1),
        "extrap/changed_rate": sum(s.extra.get("extrap_changed", 0) for s in samples) / max(flagged, 1),
        "extrap/dlogp_flagged_mean": sum(s.extra.get("extrap_dlogp_sum", 0.0) for s in samples) / max(flagged, 1),
        "extrap/flagged_tokens": float(flagged),
    }


def _progress(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from rlvr_cli.progress import console

    return Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("samples"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not enabled)


def metrics_table(name: str, metrics: dict[str, float], n: int, caption: str = ""):
    """One row per metric (a column per metric would not fit a terminal at n = 32)."""
    from rich.table import Table

    table = Table(title=f"{name}: {int(metrics.get('problems', 0))} problems × n={n}", caption=caption or None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [(f"avg@{n}", f"avg@{n}", "{:.3f}"), *[(f"pass@{k}", f"pass@{k}", "{:.3f}") for k in pass_ks(n)],
            (f"maj@{n}", f"maj@{n}", "{:.3f}"), ("mean length (tokens)", "response_len_mean", "{:.1f}"),
            ("truncated", "truncated_frac", "{:.1%}"), ("no answer", "no_answer_frac", "{:.1%}"),
            ("grader timeouts", "grader_timeouts", "{:.0f}")]
    if "extrap/trigger_rate" in metrics:
        rows += [("extrapolated tokens", "extrap/trigger_rate", "{:.2%}"),
                 ("  of which changed", "extrap/changed_rate", "{:.1%}"),
                 ("  mean Δlog p", "extrap/dlogp_flagged_mean", "{:.3f}")]
    for label, key, fmt in rows:
        table.add_row(label, fmt.format(metrics[key]), style="bold" if key == f"avg@{n}" else None)
    return table


# ------------------------------------------------------------------------------------------ 4. report
def results_markdown(results: dict[str, Any]) -> str:
    s = results["sampling"]
    n = s["n"]
    keys = [f"avg@{n}", *[f"pass@{k}" for k in pass_ks(n)], f"maj@{n}"]
    lines = [f"# rlvr eval: {results['model']['name']} ({results['model']['path']})", "",
             f"`{results['command'] or 'eval_main() from Python'}`", "",
             "| benchmark | problems | " + " | ".join(keys) + " | mean len | truncated | timeouts |",
             "|---|---:|" + "---:|" * (len(keys) + 3)]
    for name, b in results["benchmarks"].items():
        m = b["metrics"]
        lines.append(f"| {name} | {b['problems']} | " + " | ".join(f"{m[k]:.3f}" for k in keys)
                     + f" | {m['response_len_mean']:.1f} | {m['truncated_frac']:.1%} | {m['grader_timeouts']:.0f} |")
    lines += ["", "## How these numbers were produced", ""]
    model = results["model"]
    lines.append(f"- model: `{model['path']}` -> `{model['resolved_path']}`, {model['dtype']} on {model['device']}, "
                 f"{model['params']:,} parameters" + (f", revision {model['revision']}" if model.get("revision") else ""))
    lines.append(f"- sampling ({s.get('engine', 'hf')} engine): n={n}, temperature={s['temperature']}, top_p={s['top_p']}, "
                 f"max_new_tokens={s['max_new_tokens'] or 'per benchmark'}, batch_size={s['batch_size']}, seed={results['seed']}")
    g = results["grader"]
    lines.append(f"- grader: {g['verifier']}, extract={g['extract']}, timeout_s={g['timeout_s']}, workers={g['num_workers']}")
    x = results["extrapolate"]
    if x["enabled"]:
        lines.append(f"- Δlog p extrapolation: base `{x['base']}`, γ={x['gamma']}, τ={x['tau']}, driver={x['driver']}, "
                     f"cand_topk={x['cand_topk']}, resample={x['resample']}")
    else:
        lines.append("- Δlog p extrapolation: off")
    for name, b in results["benchmarks"].items():
        src = b["source"]
        extrap = (f", extrapolated {b['metrics']['extrap/trigger_rate']:.2%} of tokens "
                  f"(mean Δlog p {b['metrics']['extrap/dlogp_flagged_mean']:.3f})"
                  if "extrap/trigger_rate" in b["metrics"] else "")
        lines.append(f"- {name}: {_source_text(b['source'])}; template {b['template']}, max_new_tokens {b['max_new_tokens']}, "
                     f"limit {b['limit']}, skipped {sum(b['skipped'].values())} malformed rows; "
                     f"{b['wall_s']:.1f} s, {b['samples_per_s']:.2f} samples/s{extrap}")
    lines.append(f"- rlvr {results['rlvr_version']}, torch {results['torch_version']}, "
                 f"transformers {results['transformers_version']}, python {results['python_version']}; "
                 f"started {results['started_at']}, wall time {results['wall_s']:.1f} s")
    return "\n".join(lines) + "\n"


def _source_text(src: dict[str, Any]) -> str:
    if src["kind"] == "local":
        return f"`{src['path']}` (sha256 {src['sha256']})"
    if src["kind"] == "hub":
        subset = f" subset {src['subset']}" if src.get("subset") else ""
        return (f"hub `{src['hub_id']}` split {src['split']}{subset}, revision {src.get('revision') or 'unpinned'}, "
                f"fingerprint {src.get('fingerprint')}")
    return f"synthetic {src['split']} split, {src['size']} problems, {src['params']}"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for key, pkg in (("rlvr_version", "rlvr-cli"), ("transformers_version", "transformers"), ("math_verify_version", "math-verify")):
        try:
            out[key] = version(pkg)
        except PackageNotFoundError:
            out[key] = "unknown"
    out["torch_version"] = torch.__version__
    out["python_version"] = platform.python_version()
    return out


def _warn_greedy(ev: EvalConfig) -> None:
    if ev.temperature <= 0 and ev.n > 1:
        log.warning("eval.temperature=0 is greedy: all %d samples of a problem will be the same", ev.n)


# ------------------------------------------------------------------------------------------ main
def _header(cfg: EvalRunConfig, model, base, model_cfg: ModelConfig, device: torch.device) -> dict[str, Any]:
    """Everything about the run that is not per benchmark: model, sampling, grader, extrapolation, versions."""
    ev, x = cfg.eval, cfg.extrapolate
    header = {
        # the CLI sets argv to ["rlvr eval", *overrides]; from Python (tests, notebooks) there is no command
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0].startswith("rlvr ") else None,
        "started_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "seed": cfg.seed,
        **_versions(),
        "model": _model_record(model, model_cfg, model_cfg.path, device),
        "sampling": {"n": ev.n, "temperature": ev.temperature, "top_p": ev.top_p,
                     "max_new_tokens": ev.max_new_tokens, "batch_size": ev.batch_size,
                     "max_prompt_len": ev.max_prompt_len},
        "grader": {"verifier": f"{cfg.reward.verifier} (a benchmark's own verifier wins)", "extract": str(cfg.reward.extract),
                   "rel_tol": cfg.reward.rel_tol, "timeout_s": cfg.reward.timeout_s, "num_workers": cfg.reward.num_workers},
        "extrapolate": {"enabled": base is not None, "base": x.base, "gamma": x.gamma, "tau": x.tau,
                        "driver": x.driver, "cand_topk": x.cand_topk, "resample": x.resample},
        "benchmarks": {},
    }
    if base is not None:
        header["extrapolate"]["base_model"] = _model_record(base, model_cfg, x.base, device)
    return header


def run_benchmark(bench: BenchmarkConfig, cfg: EvalRunConfig, model, tokenizer, grader, base=None, xcfg=None, stop=None,
                  engine=None):
    """One benchmark: problems -> n samples each (progress bar) -> grades -> metrics. Returns (record, samples).
    ``stop``: where responses end (``rollout.stopping.StopCriteria``; default: the model's EOS).
    ``engine``: the rollout engine that samples (``rollout.engines``; default: HF generate on ``model``)."""
    from rlvr_cli.rollout.config import SamplingSpec
    from rlvr_cli.rollout.extrapolate import generate_extrapolated
    from rlvr_cli.rollout.stopping import resolve_stop

    ev, n = cfg.eval, cfg.eval.n
    prompts, record = load_benchmark(bench, tokenizer, ev)
    max_new = ev.max_new_tokens or bench.max_new_tokens or 1024
    generate = None
    if engine is not None and base is None:
        spec = SamplingSpec(ev.temperature, ev.top_p, max_new, stop or resolve_stop(model, tokenizer),
                            ev.max_prompt_len)

        def generate(part):
            return engine.generate(part, n, spec), {}
    if base is not None:
        def generate(part):
            return generate_extrapolated(model, base, tokenizer, part, n, max_new, ev.temperature,
                                         ev.top_p, ev.batch_size, xcfg, ev.max_prompt_len)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    with _progress(ev.progress) as bar:
        task = bar.add_task(bench.name, total=len(prompts) * n, rate="")

        def on_chunk(done: int) -> None:
            bar.update(task, completed=done * n, rate=f"{done * n / max(time.time() - t0, 1e-9):.1f}/s")

        samples = sample_and_grade(model, tokenizer, prompts, grader, n, ev.temperature, ev.top_p,
                                   max_new, ev.batch_size, on_chunk=on_chunk, generate=generate,
                                   max_prompt_len=ev.max_prompt_len, stop=stop, extract=bench.extract)
    wall = time.time() - t0
    metrics = summarize_samples(samples, n, grader)
    if base is not None:
        metrics.update(_extrap_metrics(samples))
    metrics = {k: round(v, 6) for k, v in metrics.items()}
    tokens = sum(s.length for s in samples)
    record.update(max_new_tokens=max_new, metrics=metrics, wall_s=wall, samples=len(samples), tokens=tokens,
                  samples_per_s=len(samples) / max(wall, 1e-9), tokens_per_s=tokens / max(wall, 1e-9))
    return record, samples


def eval_main(cfg: EvalRunConfig | DictConfig, out_dir: Path) -> dict[str, Any]:
    """Evaluate with a composed ``conf/eval.yaml`` (usable without Hydra's app, e.g. from tests); the
    config is loaded into its typed nodes first (a bad value: ``UserError`` before anything loads)."""
    from rlvr_cli.configs import load_eval_config
    from rlvr_cli.models import load_model, load_tokenizer, pick_device
    from rlvr_cli.progress import console
    from rlvr_cli.rewards import build_grader
    from rlvr_cli.rollout.engines import build_engine, resolve_engine
    from rlvr_cli.rollout.stopping import resolve_stop

    t_start = time.time()
    # 1. what to evaluate, checked before any model is loaded
    cfg = load_eval_config(cfg)
    _warn_greedy(cfg.eval)
    benches = resolve_benchmarks(cfg.benchmarks, cfg.benchmark_overrides)
    x = cfg.extrapolate
    xcfg = x if x.base else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(to_dict(cfg)))

    # 2. models (the base only for extrapolation) and the training verifier
    model_cfg = cfg.model
    device = pick_device(cfg.eval.device)
    tokenizer = load_tokenizer(model_cfg)
    model = load_model(model_cfg, device).eval()
    base = _load_base(cfg, model_cfg, model, tokenizer, device).eval() if xcfg else None
    stop = resolve_stop(model, tokenizer, [*(model_cfg.stop_tokens or []), *(cfg.eval.stop_token_ids or [])],
                        cfg.eval.stop or [])
    ro_cfg = cfg.rollout
    engine_name = resolve_engine(ro_cfg.engine, device)
    if engine_name == "vllm" and xcfg:
        raise UserError("Δlog p extrapolation samples token by token from two models with HF; use rollout.engine=hf "
                        "(or drop extrapolate.base)")
    engine = build_engine(engine_name, model=model, tokenizer=tokenizer, policy=lambda: contextlib.nullcontext(model),
                          batch_size=cfg.eval.batch_size, device=device, dtype=next(model.parameters()).dtype,
                          max_model_len=int(getattr(model.config, "max_position_embeddings", None) or 32768),
                          vllm_cfg=ro_cfg.vllm, seed=cfg.seed, sampler=ro_cfg.sampler)
    results = _header(cfg, model, base, model_cfg, device)
    results["sampling"]["engine"] = engine.name
    m = results["model"]
    console.print(f"model: {m['path']} ({m['params']:,} params, {m['dtype']}, {device})"
                  + (f" + base {x.base} (Δlog p extrapolation)" if base is not None else ""))
    samples_path = out_dir / "samples.jsonl"
    samples_path.write_text("")

    # 3. each benchmark; results are rewritten after each, so finished benchmarks survive a crash
    reward = cfg.reward
    graders: dict[str, Any] = {}  # by verifier: math unless a benchmark names its own (countdown)
    try:
        for bench in benches:
            verifier = bench.verifier or reward.verifier
            if verifier not in graders:
                graders[verifier] = build_grader(reward, verifier)
            record, samples = run_benchmark(bench, cfg, model, tokenizer, graders[verifier], base, xcfg, stop, engine)
            record["verifier"] = verifier
            results["benchmarks"][bench.name] = record
            console.print(metrics_table(bench.name, record["metrics"], cfg.eval.n,
                                        f"{record['wall_s']:.1f} s, {record['samples_per_s']:.1f} samples/s"))
            if cfg.eval.save_samples:
                with open(samples_path, "a", encoding="utf-8") as f:
                    for s in samples:
                        f.write(json.dumps({"benchmark": bench.name, **s.to_json()}, ensure_ascii=False) + "\n")
            _write(results, out_dir, t_start)
    finally:
        for grader in graders.values():
            grader.close()

    engine.close()

    # 4. the report
    _write(results, out_dir, t_start)
    total = results["total"]
    console.print(f"{total['samples']} samples in {results['wall_s']:.1f} s ({total['samples_per_s']:.2f} samples/s "
                  f"including model loading); results in {out_dir}")
    return results


def _write(results: dict[str, Any], out_dir: Path, t_start: float) -> None:
    results["wall_s"] = time.time() - t_start
    total = sum(b["samples"] for b in results["benchmarks"].values())
    results["total"] = {"samples": total, "samples_per_s": total / max(results["wall_s"], 1e-9)}
    if results["extrapolate"]["enabled"]:  # over all benchmarks: positions extrapolated / generated tokens
        benches = results["benchmarks"].values()
        flagged = sum(b["metrics"]["extrap/flagged_tokens"] for b in benches)
        results["extrapolate"]["trigger_rate"] = flagged / max(sum(b["tokens"] for b in benches), 1)
        results["extrapolate"]["dlogp_flagged_mean"] = sum(
            b["metrics"]["extrap/dlogp_flagged_mean"] * b["metrics"]["extrap/flagged_tokens"] for b in benches) / max(flagged, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "results.md").write_text(results_markdown(results))
