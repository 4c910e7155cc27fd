"""The whole run's typed config: the composed YAML (Hydra) loaded into each component's node, checked at
start (``rlvr train``, ``train_main``, ``rlvr plan``, ``rlvr eval``) before anything loads.

    conf/*.yaml --Hydra compose--> DictConfig --resolve--> plain dict --load--> TrainConfig / EvalRunConfig
                                                                                 |-> rollout: RolloutConfig
                                                                                 |-> algo:    AlgoConfig ...

Each node is declared beside its component (``rollout/config.py``, ``trainer/config.py``, ``models.py``, ...);
this module only composes them, adds the rules that span nodes (batch divisibility, data-parallel ranks),
and loads the method node into the method's own config dataclass. A bad value is one line naming the key,
the value and what is expected (``typed.ConfigError``, a ``UserError``: the CLI exits 2).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rlvr_cli.data.config import BenchmarkConfig, DataConfig
from rlvr_cli.errors import UserError
from rlvr_cli.eval.config import EvalConfig
from rlvr_cli.losses import ClipSpec
from rlvr_cli.methods import MethodConfig, build_method
from rlvr_cli.methods.base import method_config_class
from rlvr_cli.models import ModelConfig
from rlvr_cli.rewards import RewardConfig
from rlvr_cli.rewards.functions import RewardTermsConfig
from rlvr_cli.rollout.config import EngineConfig, ExtrapolateConfig, RolloutConfig
from rlvr_cli.tracking import LoggerConfig
from rlvr_cli.trainer.config import AlgoConfig, TrainerConfig, ValConfig
from rlvr_cli.trainer.engine import OptimConfig
from rlvr_cli.typed import ConfigError, check_value, field_names, load, setting, show


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """``rlvr train`` (conf/train.yaml and its groups), every node typed."""

    seed: int = setting(help="the run's seed (rank r samples with seed + r)")
    exp_name: str = setting("run", help="the run's name: its folder is runs/<exp_name>")
    out_dir: str | None = setting(None, help="write the run here instead of runs/<exp_name>")
    model: ModelConfig = setting(help="the policy (conf/model)")
    data: DataConfig = setting(help="train and held-out prompts (conf/data)")
    algo: AlgoConfig = setting(help="GRPO (conf/algo)")
    method: MethodConfig = setting(MethodConfig(), help="the entropy-control method (conf/method)")
    trainer: TrainerConfig = setting(help="process, DeepSpeed, checkpoints (conf/trainer)")
    logger: LoggerConfig = setting(LoggerConfig(), help="metrics besides metrics.jsonl (conf/logger)")
    rollout: RolloutConfig = setting(help="what the step samples")
    optim: OptimConfig = setting(help="AdamW and its schedule")
    reward: RewardTermsConfig = setting(RewardTermsConfig(), help="grading and the reward terms")
    val: ValConfig = setting(help="validation during training")


@dataclass(frozen=True, kw_only=True)
class EvalRunConfig:
    """``rlvr eval`` (conf/eval.yaml), every node typed."""

    seed: int = setting(help="the sampling seed")
    out_dir: str | None = setting(None, help="write the results here instead of runs/eval/<model>_<time>")
    model: ModelConfig = setting(help="the policy (conf/model, or model.path=<dir|hub id>)")
    benchmarks: str | list[str] = setting(why="names of conf/benchmark/*.yaml", help="benchmarks to evaluate, "
                                          "in order: names of conf/benchmark/*.yaml")
    benchmark_overrides: dict[str, Any] | None = setting(None, help="per-benchmark changes to those files: "
                                                         "+benchmark_overrides.<name>.<key>=<value>")
    rollout: EngineConfig = setting(EngineConfig(), help="who samples")
    eval: EvalConfig = setting(help="sampling per benchmark")
    reward: RewardConfig = setting(RewardConfig(), help="grading (a benchmark's own extract/verifier wins)")
    extrapolate: ExtrapolateConfig = setting(help="Δlog p test-time extrapolation (off unless base is set)")


# ------------------------------------------------------------------------------------------ resolve
def resolve(cfg: Any) -> dict[str, Any]:
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


def world_size(trainer: TrainerConfig | Mapping[str, Any], env: Mapping[str, str] | None = None) -> int:
    """Data-parallel ranks the run will have: 1 without DeepSpeed; under a launcher its WORLD_SIZE;
    else ``trainer.gpus * trainer.nodes`` (what ``rlvr train`` will launch)."""
    env = os.environ if env is None else env
    get = trainer.get if isinstance(trainer, Mapping) else lambda key, default: getattr(trainer, key)
    if get("kind", "single") != "deepspeed":
        return 1
    if all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return int(env["WORLD_SIZE"])
    return int(get("gpus", 1)) * int(get("nodes", 1))


# --------------------------------------------------------------------------------------------- train
def load_train_config(cfg: Any, world: int | None = None) -> TrainConfig:
    """A composed ``rlvr train`` config (DictConfig or plain mapping) as a ``TrainConfig``, or a
    ``UserError`` (one line, every problem found). ``world``: the data-parallel ranks (default:
    ``world_size(cfg.trainer)``). Pure: safe to call again (the CLI checks before the launcher re-entry,
    ``train_main`` on every rank). A ``TrainConfig`` passes through."""
    if isinstance(cfg, TrainConfig):
        return cfg
    c = resolve(cfg)
    method_node = c.pop("method", None)
    problems: list[str] = []
    try:
        root = load(TrainConfig, c)
    except ConfigError as e:
        problems, root = e.problems, None
    method = _load_method(method_node, problems)
    if problems:
        raise ConfigError(problems)
    root = dataclasses.replace(root, method=method)
    problems = list(_train_rules(root, world))
    if problems:
        raise ConfigError(problems)
    return root


def _train_rules(c: TrainConfig, world: int | None) -> Iterator[str]:
    """The rules that span nodes, on values their nodes have passed."""
    mini, pps, g = c.algo.mini_batch_size, c.rollout.prompts_per_step, c.algo.group_size
    n = pps * g
    if n % mini:
        what = f"an int <= {n}" if mini > n else f"a divisor of {n}"
        yield (f"algo.mini_batch_size={mini}: expected {what}, the responses per step (rollout.prompts_per_step * "
               f"algo.group_size = {pps} * {g}), so that every step splits into whole mini-batches (verl's rule)")
    yield from c.data.source_problems("data.")
    world = world_size(c.trainer) if world is None else world
    if world > 1:
        gpus, nodes = c.trainer.gpus, c.trainer.nodes
        ranks = f"the {world} data-parallel ranks" + (
            f" (trainer.gpus * trainer.nodes = {gpus} * {nodes})" if world == gpus * nodes else " (WORLD_SIZE)")
        if pps % world:
            yield (f"rollout.prompts_per_step={pps}: expected a multiple of {ranks}: "
                   f"each rank takes whole groups, prompts[rank::{world}]")
        if mini % world:
            yield (f"algo.mini_batch_size={mini}: expected a multiple of {ranks}: "
                   f"each rank takes an equal share of every mini-batch")


def _load_method(node: Mapping[str, Any] | None, problems: list[str]) -> MethodConfig | None:
    """The method node as its method's config dataclass: ``loss`` overrides are clip settings with sane
    values, the other fields have their declared types, then the method's own checks (``__post_init__``)."""
    node = dict(node or {})
    name = node.get("name", "baseline")
    loss = node.get("loss") or {}
    valid = field_names(ClipSpec)
    unknown = sorted(set(loss) - set(valid))
    if unknown:
        problems.append(f"method.loss.{unknown[0]}={show(loss[unknown[0]])}: expected a setting of the clipped "
                        f"objective: {' | '.join(valid)}")
        return None
    found = [p for k, v in loss.items()
             if (p := check_value(AlgoConfig if k != "clip" else ClipSpec, k, v, f"method.loss.{k}"))]
    if found:
        problems.extend(found)
        return None
    try:
        config = load(method_config_class(name), node, "method.")
        build_method(config)  # the method's own checks beyond its config's
    except ConfigError as e:
        problems.extend(e.problems)
        return None
    except (ValueError, TypeError, UserError) as e:
        problems.append(f"method={name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return None
    return config


# ---------------------------------------------------------------------------------------------- eval
def load_eval_config(cfg: Any) -> EvalRunConfig:
    """A composed ``rlvr eval`` config as an ``EvalRunConfig``, or a ``UserError`` (one line)."""
    if isinstance(cfg, EvalRunConfig):
        return cfg
    c = resolve(cfg)
    problems: list[str] = []
    try:
        root = load(EvalRunConfig, c)
    except ConfigError as e:
        problems, root = e.problems, None
    overrides = c.get("benchmark_overrides") or {}
    for name, node in (overrides.items() if isinstance(overrides, Mapping) else ()):
        if not isinstance(node, Mapping):
            problems.append(f"benchmark_overrides.{name}={show(node)}: expected a mapping of that benchmark's keys")
            continue
        for key, value in node.items():
            at = f"benchmark_overrides.{name}.{key}"
            if key not in field_names(BenchmarkConfig):
                problems.append(f"{at}: unknown key; valid: {', '.join(field_names(BenchmarkConfig))}")
            elif problem := check_value(BenchmarkConfig, key, value, at):
                problems.append(problem)
    if problems:
        raise ConfigError(problems)
    return root
