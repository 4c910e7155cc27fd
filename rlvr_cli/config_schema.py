"""Validation of the composed config at start (``rlvr train``, ``train_main``, ``rlvr eval``).

A bad value fails before anything is loaded, with one line naming the key, the value and what is
expected (``optim.lr='abc': expected a float > 0``), raised as ``UserError`` (the CLI prints
``rlvr: error: ...`` and exits 2), as TRL's ``GRPOConfig.__post_init__`` and verl's dataclass configs do.

The schema is a table per node, ``"node.key": Spec`` on the resolved container: types (bool, int, float,
str, enums, lists, null), ranges, then cross-field rules that name every key they involve (batch
divisibility, DeepSpeed ranks and offload). A key ending in ``?`` may be absent (the code reads it with a
default, or another change adds it); any other missing key is reported. Unknown keys are Hydra's job
(struct mode: ``optim.lrr=1`` never composes). Method nodes are checked by each method's own config
dataclass (``build_method``); here only their shared fields (``name``, ``loss``) and the field types its
annotations declare.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr_cli.errors import UserError

# names that live in modules with heavy imports (torch, transformers); tests/test_config_schema.py
# checks they equal the source lists (models.DTYPES, rollout.extrapolate.DRIVERS / RESAMPLE)
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
EXTRAPOLATE_DRIVERS = ("rl", "base")
EXTRAPOLATE_RESAMPLE = ("coupled", "independent")
WANDB_MODES = ("offline", "online", "disabled", "shared", "dryrun", "run")
RESUME_WORDS = ("auto", "never", "none")
ENGINES = ("hf", "vllm", "auto")  # rollout.engines.ENGINES
SAMPLERS = ("auto", "lean", "hf")  # rollout.generate.SAMPLERS
EXTRACT_MODES = ("auto", "strict", "gsm8k", "boxed", "boxed_all", "answer_line", "hash", "answer_is", "a_line",
                 "final_statement", "last_math", "last_number")  # rewards.extract.VALID_MODES
VERIFIERS = ("math", "countdown")  # rewards.VERIFIERS
SYNTHETIC_TASKS = ("arith", "countdown")  # data.synthetic.SYNTHETIC_TASKS
IS_MODES = ("off", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")  # rollout.correction.MODES


# ----------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class Spec:
    """One value's type and constraint: ``ok(value)`` and the text of what is expected."""

    expect: str
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _range(gt=None, ge=None, lt=None, le=None) -> tuple[str, Callable[[float], bool]]:
    lo, lo_open = (gt, True) if gt is not None else (ge, False)
    hi, hi_open = (lt, True) if lt is not None else (le, False)

    def inside(v: float) -> bool:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))

    if lo is not None and hi is not None:
        text = f" in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f" {'>' if lo_open else '>='} {_fmt(lo)}"
    elif hi is not None:
        text = f" {'<' if hi_open else '<='} {_fmt(hi)}"
    else:
        text = ""
    return text, inside


def _finish(base: str, ok: Callable[[Any], bool], null: bool, why: str) -> Spec:
    expect = f"null or {base}" if null else base
    if why:
        expect += f" ({why})"
    return Spec(expect, (lambda v: v is None or ok(v)) if null else ok)


def Int(gt=None, ge=None, lt=None, le=None, null: bool = False, why: str = "") -> Spec:  # noqa: N802
    """An int (a bool, a float such as 8.0 or a string is not: nothing downstream casts)."""
    text, inside = _range(gt, ge, lt, le)
    return _finish(f"an int{text}", lambda v: _is_int(v) and inside(v), null, why)


def Float(gt=None, ge=None, lt=None, le=None, null: bool = False, why: str = "") -> Spec:  # noqa: N802
    """A finite float; ints are accepted (``lr=1`` is 1.0), strings and bools are not."""
    text, inside = _range(gt, ge, lt, le)
    return _finish(f"a float{text}", lambda v: _is_num(v) and inside(v), null, why)


def Bool(null: bool = False, why: str = "") -> Spec:  # noqa: N802
    return _finish("true or false", lambda v: isinstance(v, bool), null, why)


def Str(null: bool = False, empty: bool = False, why: str = "") -> Spec:  # noqa: N802
    return _finish("a string" if empty else "a non-empty string", lambda v: isinstance(v, str) and (empty or v != ""),
                   null, why)


def Enum(*choices: str, null: bool = False, why: str = "") -> Spec:  # noqa: N802
    return _finish(f"one of {' | '.join(choices)}", lambda v: isinstance(v, str) and v in choices, null, why)


def Dict(null: bool = False, why: str = "") -> Spec:  # noqa: N802
    return _finish("a mapping", lambda v: isinstance(v, Mapping), null, why)


def ListOf(item: Spec, length: int | None = None, null: bool = False, why: str = "") -> Spec:  # noqa: N802
    what = f"a list of {length} items, each {item.expect}" if length else f"a list, each item {item.expect}"
    return _finish(what, lambda v: isinstance(v, list) and (length is None or len(v) == length)
                   and all(item.ok(x) for x in v), null, why)


def AnyOf(*specs: Spec, null: bool = False, why: str = "") -> Spec:  # noqa: N802
    return _finish(" or ".join(s.expect for s in specs), lambda v: any(s.ok(v) for s in specs), null, why)


EXTRACT = Spec(f"one of {' | '.join(EXTRACT_MODES)}, or a list of them (tried in order)",
               lambda v: v in EXTRACT_MODES if isinstance(v, str)
               else isinstance(v, list) and bool(v) and all(isinstance(x, str) and x in EXTRACT_MODES for x in v))

VERIFIER = Enum(*VERIFIERS)
SYNTHETIC_TASK = Enum(*SYNTHETIC_TASKS)


def _device_ok(v: Any) -> bool:
    if not isinstance(v, str) or not v:
        return False
    if v == "auto":
        return True
    import torch

    try:
        torch.device(v)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def _resume_ok(v: Any) -> bool:
    if v is None or v is False or v == "" or v in RESUME_WORDS:
        return True
    return isinstance(v, str) and Path(v).expanduser().exists()


DEVICE = Spec("auto or a torch device (cpu, cuda, cuda:N, ...)", _device_ok)
RESUME = Spec("auto | never | an existing checkpoint or run folder", _resume_ok)
# a field name, or a list of names (the first one present in a row is used)
FIELD_KEY = AnyOf(Str(), ListOf(Str()))
STOP_TOKENS = ListOf(AnyOf(Int(ge=0), Str()), null=True, why="token ids or single-token strings")
GREEDY = ("0 or less samples greedily: a prompt's G responses are identical, so every advantage is 0 "
          "and GRPO learns nothing")
GROUP = ("GRPO's baseline is the mean of a prompt's group: one response per prompt has nothing to compare "
         "with, and filter_zero_std_groups drops every such group")

Table = dict[str, Spec]


def _clip_table(prefix: str, optional: bool) -> Table:
    q = "?" if optional else ""
    return {
        f"{prefix}clip_ratio_low{q}": Float(ge=0, le=1, why="r is clipped below at 1 - clip_ratio_low"),
        f"{prefix}clip_ratio_high{q}": Float(ge=0, why="r is clipped above at 1 + clip_ratio_high"),
        f"{prefix}clip_ratio_c{q}": Float(gt=1, null=True, why="the dual-clip constant c > 1; null = off"),
        f"{prefix}log_ratio_clamp{q}": Float(gt=0, null=True, why="clamp on |log r|; null = off"),
    }


def _model_table() -> Table:
    return {
        "model.name?": Str(),
        "model.path": Str(),
        "model.tokenizer?": Str(null=True),
        "model.dtype?": Enum(*DTYPES),
        "model.attn_implementation?": Str(null=True),
        "model.trust_remote_code?": Bool(),
        "model.gradient_checkpointing?": Bool(),
        "model.stop_tokens?": STOP_TOKENS,
        "model.lora?": Dict(null=True),
        "model.lora.rank?": Int(ge=0, why="0 = full fine-tuning"),
        "model.lora.alpha?": Float(gt=0, why="the update is scaled by alpha / rank"),
        "model.lora.dropout?": Float(ge=0, lt=1),
        "model.lora.target_modules?": AnyOf(Str(), ListOf(Str()), why="all-linear, module names or a regex"),
        "model.lora.modules_to_save?": ListOf(Str(), null=True),
        "model.adapter?": Str(null=True, why="a LoRA adapter folder (adapter_config.json)"),
    }


def _reward_table(optional: bool, train: bool = False) -> Table:
    q = "?" if optional else ""
    table = {
        f"reward.extract{q}": EXTRACT,
        "reward.verifier?": VERIFIER,
        "reward.rel_tol?": Float(ge=0, lt=1, why="relative tolerance when one side is a decimal"),
        f"reward.timeout_s{q}": Float(gt=0, why="seconds per answer comparison"),
        f"reward.num_workers{q}": Int(ge=1),
    }
    if train:  # the reward terms
        table.update({
            "reward.funcs?": ListOf(Str(), why="accuracy | format | overlong | path/to/file.py:function"),
            "reward.weights?": ListOf(Float(), null=True, why="one per reward term; null = all 1.0"),
            "reward.fn?": Str(null=True, why="path/to/file.py:function"),
            "reward.overlong_buffer_len?": Int(ge=0, why="0 = no overlong penalty"),
            "reward.overlong_penalty_factor?": Float(ge=0),
        })
    return table


def train_table() -> Table:
    """The schema of ``conf/train.yaml`` as composed (every group), ``method`` shared fields only."""
    from rlvr_cli.data.benchmarks import benchmark_names
    from rlvr_cli.data.datasets import ANSWER_FORMATS
    from rlvr_cli.data.prompts import TEMPLATES
    from rlvr_cli.losses import AGG_MODES, KL_TYPES

    return {
        "seed": Int(),
        "exp_name?": Str(),
        "out_dir?": Str(null=True),
        **_model_table(),
        # data
        "data.name": Str(),
        "data.source?": Enum("synthetic", "file"),
        "data.template": Enum(*TEMPLATES),
        "data.path?": Str(null=True),
        "data.test_path?": Str(null=True),
        "data.test_benchmark?": Enum(*benchmark_names(), null=True, why="a file of conf/benchmark/"),
        "data.split?": Str(null=True),
        "data.test_split?": Str(null=True),
        "data.subset?": Str(null=True),
        "data.problem_key?": FIELD_KEY,
        "data.answer_key?": FIELD_KEY,
        "data.id_key?": FIELD_KEY,
        "data.answer_format?": Enum(*ANSWER_FORMATS),
        "data.extract?": EXTRACT,
        "data.train_size?": Int(ge=1, null=True, why="null = the whole split"),
        "data.test_size?": Int(ge=1, null=True, why="null = the whole split"),
        "data.verifier?": VERIFIER,
        "data.synthetic?": Dict(null=True),
        "data.synthetic.seed?": Int(),
        "data.synthetic.task?": SYNTHETIC_TASK,
        # algo
        "algo.name?": Str(),
        "algo.group_size": Int(ge=2, why=GROUP),
        "algo.norm_adv_by_std": Bool(),
        "algo.adv_eps": Float(gt=0, why="added to the group std before dividing"),
        "algo.filter_zero_std_groups": Bool(),
        **_clip_table("algo.", optional=False),
        "algo.loss_agg_mode": Enum(*AGG_MODES),
        "algo.loss_scale_factor?": Float(gt=0, null=True, why="null = rollout.max_new_tokens"),
        "algo.ppo_epochs": Int(ge=1),
        "algo.mini_batch_size": Int(ge=1, why="responses per optimizer step"),
        "algo.micro_batch_size": Int(ge=1, why="responses per forward/backward"),
        "algo.max_tokens_per_micro_batch?": Int(ge=1, null=True, why="null = algo.micro_batch_size responses"),
        "algo.use_remove_padding?": Bool(),
        "algo.old_logprob_pass?": Enum("auto", "always"),
        "algo.filter_groups?": Dict(),
        "algo.filter_groups.enabled?": Bool(),
        "algo.filter_groups.max_num_gen_batches?": Int(ge=0, why="0 = no limit"),
        "algo.rollout_correction?": Dict(),
        "algo.rollout_correction.mode?": Enum(*IS_MODES),
        "algo.rollout_correction.cap?": Float(gt=0),
        "algo.rollout_correction.bypass?": Bool(),
        "algo.kl.enabled": Bool(),
        "algo.kl.coef?": Float(ge=0),
        "algo.kl.type?": Enum(*KL_TYPES, *(f"{k}+" for k in KL_TYPES)),
        # method (its own fields: the method's config dataclass, see _method_problems)
        "method.name?": Str(),
        "method.loss?": Dict(null=True),
        # trainer
        "trainer.kind?": Enum("single", "deepspeed"),
        "trainer.device?": DEVICE,
        "trainer.max_steps": Int(ge=1),
        "trainer.save_every": Int(ge=0, why="0 = only at the end"),
        "trainer.keep_last?": Int(ge=1, null=True, why="null = keep all"),
        "trainer.resume?": RESUME,
        "trainer.max_nonfinite_steps?": Int(ge=1),
        "trainer.stop_mode?": Enum("step", "now", why="what a stop signal (SIGTERM, SIGINT, SIGUSR1) ends"),
        "trainer.logprob_chunk_size?": Int(ge=1),
        "trainer.checkpoint_logits?": Spec("auto, true or false", lambda v: v == "auto" or isinstance(v, bool)),
        "trainer.num_threads?": Int(ge=1, null=True),
        "trainer.progress?": Bool(),
        "trainer.master_weights?": Enum("fp32", "model"),
        "trainer.dist_backend?": Str(),
        "trainer.zero_stage?": Int(ge=0, le=3),
        "trainer.offload_optimizer?": Bool(),
        "trainer.offload_param?": Bool(),
        "trainer.gpus?": Int(ge=1, why="processes per node"),
        "trainer.nodes?": Int(ge=1),
        "trainer.hostfile?": Str(null=True),
        "trainer.master_port?": Int(ge=1, le=65535),
        "trainer.deepspeed?": Dict(null=True),
        "trainer.gpu_memory_gb?": Float(gt=0, null=True, why="GiB per GPU for the memory plan; null = the GPU's"),
        "trainer.ignore_memory_plan?": Bool(),
        "trainer.diagnose_every?": Int(ge=0, why="steps between method/grad_ratio diagnostics; 0 = off"),
        # logger
        "logger.kind?": Enum("none", "wandb"),
        "logger.project?": Str(),
        "logger.name?": Str(null=True),
        "logger.mode?": Enum(*WANDB_MODES),
        "logger.id?": Str(null=True),
        # rollout
        "rollout.prompts_per_step": Int(ge=1),
        "rollout.temperature": Float(gt=0, why=GREEDY),
        "rollout.top_p": Float(gt=0, le=1),
        "rollout.max_new_tokens": Int(ge=1),
        "rollout.batch_size": Int(ge=1, why="sequences per generate() call"),
        "rollout.max_prompt_len?": Int(ge=1, null=True),
        "rollout.stop_token_ids?": STOP_TOKENS,
        "rollout.stop?": ListOf(Str(empty=True), null=True),
        "rollout.overlong_prompts?": Enum("drop", "error"),
        **_rollout_engine_table(),
        # optim
        "optim.lr": Float(gt=0),
        "optim.weight_decay?": Float(ge=0),
        "optim.betas?": ListOf(Float(ge=0, lt=1), length=2),
        "optim.eps?": Float(gt=0),
        "optim.warmup_steps?": Int(ge=0),
        "optim.schedule?": Enum("constant", "cosine"),
        "optim.min_lr_ratio?": Float(ge=0, le=1),
        "optim.grad_clip?": Float(ge=0, null=True, why="max global grad norm; 0 = off"),
        **_reward_table(optional=True, train=True),
        # val
        "val.every": Int(ge=0, why="0 = never"),
        "val.at_start": Bool(),
        "val.size": Int(ge=0, why="0 = the whole test split"),
        "val.n": Int(ge=1),
        "val.temperature": Float(ge=0, why="0 = greedy"),
        "val.top_p": Float(gt=0, le=1),
        "val.max_new_tokens": Int(ge=1),
    }


def _rollout_engine_table() -> Table:
    """``rollout.engine`` and ``rollout.vllm`` (conf/vllm/default.yaml), shared by train and eval."""
    return {
        "rollout.engine?": Enum(*ENGINES),
        "rollout.sampler?": Enum(*SAMPLERS, why="the HF engine's decode loop"),
        "rollout.vllm?": Dict(),
        "rollout.vllm.gpu_memory_utilization?": Float(gt=0, le=1),
        "rollout.vllm.kv_cache_memory_bytes?": Int(ge=1, null=True, why="null = from gpu_memory_utilization (GPU), 256 MiB (CPU)"),
        "rollout.vllm.tensor_parallel_size?": Int(ge=1),
        "rollout.vllm.enforce_eager?": Bool(null=True),
        "rollout.vllm.max_num_seqs?": Int(ge=1, null=True),
        "rollout.vllm.sleep?": Bool(),
        "rollout.vllm.sleep_level?": Int(ge=1, le=2),
        "rollout.vllm.prefix_caching?": Bool(),
        "rollout.vllm.sync_bucket_mb?": Float(gt=0),
    }


def benchmark_table(prefix: str = "") -> Table:
    """Fields of a ``conf/benchmark/*.yaml`` file (all optional: also checks ``benchmark_overrides.<name>``)."""
    from rlvr_cli.data.datasets import ANSWER_FORMATS
    from rlvr_cli.data.prompts import TEMPLATES

    return {f"{prefix}{k}?": v for k, v in {
        "name": Str(),
        "extract": EXTRACT,
        "verifier": VERIFIER,
        "source": Enum("file", "synthetic"),
        "hub_id": Str(null=True),
        "split": Str(null=True),
        "subset": Str(null=True),
        "revision": Str(null=True),
        "path": Str(null=True),
        "problem_key": FIELD_KEY,
        "answer_key": FIELD_KEY,
        "id_key": FIELD_KEY,
        "answer_format": Enum(*ANSWER_FORMATS),
        "template": Enum(*TEMPLATES),
        "max_new_tokens": Int(ge=1, null=True),
        "limit": Int(ge=1, null=True, why="null = all"),
        "size": Int(ge=1),
        "synthetic": Dict(null=True),
    }.items()}


def eval_table() -> Table:
    """The schema of ``conf/eval.yaml`` as composed."""
    from rlvr_cli.data.prompts import TEMPLATES

    return {
        "seed": Int(),
        "out_dir?": Str(null=True),
        **_model_table(),
        "benchmarks": AnyOf(Str(), ListOf(Str()), why="names of conf/benchmark/*.yaml"),
        "benchmark_overrides?": Dict(null=True),
        **_rollout_engine_table(),
        "eval.n": Int(ge=1, why="responses per problem"),
        "eval.temperature": Float(ge=0, why="0 = greedy"),
        "eval.top_p": Float(gt=0, le=1),
        "eval.max_new_tokens": Int(ge=1, null=True, why="null = each benchmark's own"),
        "eval.batch_size": Int(ge=1),
        "eval.limit?": Int(ge=1, null=True, why="null = all"),
        "eval.template?": Enum(*TEMPLATES, null=True),
        "eval.max_prompt_len?": Int(ge=1, null=True),
        "eval.device?": DEVICE,
        "eval.save_samples?": Bool(),
        "eval.progress?": Bool(),
        "eval.stop_token_ids?": STOP_TOKENS,
        "eval.stop?": ListOf(Str(empty=True), null=True),
        **_reward_table(optional=False),
        "extrapolate.base": Str(null=True, why="null = off"),
        "extrapolate.gamma?": Float(),
        "extrapolate.tau?": Float(),
        "extrapolate.driver?": Enum(*EXTRAPOLATE_DRIVERS),
        "extrapolate.cand_topk?": Int(ge=0, why="0 = the whole vocabulary"),
        "extrapolate.resample?": Enum(*EXTRAPOLATE_RESAMPLE),
    }


# ---------------------------------------------------------------------------------------- checking
_MISSING = object()


def _get(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def show(v: Any) -> str:
    """A value as the command line writes it: null, true, 'abc', 1e-06, [0.9, 1.5]."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(show(x) for x in v) + "]"
    return repr(v)


def check_table(container: Mapping[str, Any], table: Table) -> list[str]:
    """One line per problem: a value that fails its spec, or a missing key not marked ``?``."""
    problems = []
    for raw, spec in table.items():
        key = raw.rstrip("?")
        value = _get(container, key)
        if value is _MISSING:
            if not raw.endswith("?"):
                problems.append(f"{key} is missing: expected {spec.expect}")
        elif not spec.ok(value):
            problems.append(f"{key}={show(value)}: expected {spec.expect}")
    return problems


def _resolve(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain containers (``hydra`` left out); unresolvable values are UserErrors."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    out = {}
    for k in cfg:
        if k == "hydra":
            continue
        try:
            value = cfg[k]  # resolves an interpolation; a '???' leaf raises MissingMandatoryValue
            out[k] = OmegaConf.to_container(value, resolve=True, throw_on_missing=True) \
                if OmegaConf.is_config(value) else value
        except MissingMandatoryValue as e:
            key = e.full_key or k
            raise UserError(f"{key}='???': expected a value (this config has no default; set {key}=...)") from None
        except OmegaConfBaseException as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{e.full_key or k}: {first}") from None
    return out


def world_size(trainer: Mapping[str, Any], env: Mapping[str, str] | None = None) -> int:
    """Data-parallel ranks the run will have: 1 without DeepSpeed; under a launcher its WORLD_SIZE;
    else ``trainer.gpus * trainer.nodes`` (what ``rlvr train`` will launch)."""
    env = os.environ if env is None else env
    if trainer.get("kind") != "deepspeed":
        return 1
    if all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return int(env["WORLD_SIZE"])
    return int(trainer.get("gpus", 1)) * int(trainer.get("nodes", 1))


def zero3_diagnose_error(every: Any) -> str:
    return (f"trainer.diagnose_every={show(every)}: expected 0 with trainer.zero_stage=3 (ZeRO-3 partitions the "
            f"parameters, so the method's gradient diagnostic cannot take gradients over them; use zero_stage 0-2)")


def _train_rules(c: Mapping[str, Any], world: int | None) -> Iterable[str]:
    """Cross-field rules, on values the table has passed (absent optional keys take the code's defaults)."""
    algo, rollout, trainer, data = c["algo"], c["rollout"], c.get("trainer") or {}, c.get("data") or {}
    micro, mini = algo["micro_batch_size"], algo["mini_batch_size"]
    if micro > mini:
        yield (f"algo.micro_batch_size={micro}: expected an int <= algo.mini_batch_size={mini} "
               f"(a micro-batch is a slice of a mini-batch)")
    pps, g = rollout["prompts_per_step"], algo["group_size"]
    n = pps * g
    if n % mini:
        what = f"an int <= {n}" if mini > n else f"a divisor of {n}"
        yield (f"algo.mini_batch_size={mini}: expected {what}, the responses per step (rollout.prompts_per_step * "
               f"algo.group_size = {pps} * {g}), so that every step splits into whole mini-batches (verl's rule)")
    world = world_size(trainer) if world is None else world
    if world > 1:
        gpus, nodes = trainer.get("gpus", 1), trainer.get("nodes", 1)
        ranks = f"the {world} data-parallel ranks" + (
            f" (trainer.gpus * trainer.nodes = {gpus} * {nodes})" if world == gpus * nodes else " (WORLD_SIZE)")
        if pps % world:
            yield (f"rollout.prompts_per_step={pps}: expected a multiple of {ranks}: "
                   f"each rank takes whole groups, prompts[rank::{world}]")
        if mini % world:
            yield (f"algo.mini_batch_size={mini}: expected a multiple of {ranks}: "
                   f"each rank takes an equal share of every mini-batch")
    if trainer.get("kind") == "deepspeed":
        stage = trainer.get("zero_stage")
        if stage is None:
            yield "trainer.zero_stage is missing: expected an int in [0, 3] (trainer.kind=deepspeed)"
        else:
            if trainer.get("offload_param") and stage != 3:
                yield (f"trainer.offload_param=true: expected false unless trainer.zero_stage=3 (DeepSpeed offloads "
                       f"parameters under ZeRO-3 only; zero_stage={stage})")
            if trainer.get("offload_optimizer") and stage < 1:
                yield ("trainer.offload_optimizer=true: expected false unless trainer.zero_stage >= 1 (ZeRO-Offload "
                       "moves the partitioned optimizer state; zero_stage=0 partitions nothing)")
            if trainer.get("diagnose_every") and stage == 3:
                yield zero3_diagnose_error(trainer["diagnose_every"])
    source = data.get("source", "file")
    if source == "file":
        for key in ("path", "test_path"):
            if key == "test_path" and data.get("test_benchmark"):
                continue  # the benchmark names the source; test_path only replaces it
            if not data.get(key):
                yield f"data.{key}={show(data.get(key))}: expected a file, folder or hub id (data.source=file)"
    elif source == "synthetic":
        for key in ("train_size", "test_size"):
            if data.get(key) is None:
                yield (f"data.{key}={show(data.get(key))}: expected an int >= 1 "
                       f"(data.source=synthetic generates that many)")


def _method_problems(method: Mapping[str, Any] | None) -> list[str]:
    """The method node: ``loss`` overrides are ClipSpec fields with sane values; the other fields have the
    types the method's config dataclass declares; then the method's own checks (``build_method``)."""
    import dataclasses
    import typing

    from rlvr_cli.losses import ClipSpec
    from rlvr_cli.methods import base, build_method

    method = dict(method or {})
    name = method.get("name", "baseline")
    loss = method.get("loss") or {}
    valid = [f.name for f in dataclasses.fields(ClipSpec)]
    unknown = sorted(set(loss) - set(valid))
    if unknown:
        return [f"method.loss.{unknown[0]}={show(loss[unknown[0]])}: expected a setting of the clipped objective: "
                f"{' | '.join(valid)}"]
    problems = check_table({"method": {"loss": loss}}, {**_clip_table("method.loss.", optional=True),
                                                           "method.loss.clip?": Bool()})
    entry = getattr(base, "_REGISTRY", {}).get(name)
    if entry is not None:
        try:
            hints = typing.get_type_hints(entry[1])
        except Exception:  # an annotation that does not evaluate: leave the types to the method
            hints = {}
        table = {f"method.{k}?": s for k, t in hints.items() if k in method and (s := _spec_for(t)) is not None}
        problems += check_table({"method": method}, table)
    if problems:
        return problems
    try:
        build_method(method)
    except (ValueError, TypeError, UserError) as e:
        return [f"method={name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"]
    return []


def _spec_for(annotation: Any) -> Spec | None:
    """A Spec for a dataclass field's type: int, float, bool, str, optionally ``| None``; else None."""
    import types
    import typing

    null = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        null = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            return None
        annotation = args[0]
    return {int: Int, float: Float, bool: Bool, str: lambda null: Str(null=null, empty=True)}.get(
        annotation, lambda null: None)(null=null)


def _raise(problems: list[str]) -> None:
    if problems:
        raise UserError("; ".join(problems))


def validate_train_config(cfg: Any, world: int | None = None) -> None:
    """Check a composed ``rlvr train`` config; raise ``UserError`` (one line, every problem found) if bad.

    ``world``: the data-parallel ranks (default: ``world_size(cfg.trainer)``). Pure: no side effect, so it
    is safe to call again (the CLI checks before the launcher re-entry, ``train_main`` on every rank).
    """
    c = _resolve(cfg)
    problems = check_table(c, train_table())
    _raise(problems)  # the cross-field rules below read values the table has just checked
    problems = list(_train_rules(c, world))
    problems += _method_problems(c.get("method"))
    _raise(problems)


def validate_eval_config(cfg: Any) -> None:
    """Check a composed ``rlvr eval`` config; raise ``UserError`` (one line) if bad."""
    c = _resolve(cfg)
    problems = check_table(c, eval_table())
    overrides = c.get("benchmark_overrides") or {}
    if isinstance(overrides, Mapping):
        for name, node in overrides.items():
            if not isinstance(node, Mapping):
                problems.append(f"benchmark_overrides.{name}={show(node)}: expected a mapping of that benchmark's keys")
                continue
            problems += check_table(c, benchmark_table(f"benchmark_overrides.{name}."))
    _raise(problems)
