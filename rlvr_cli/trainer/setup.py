"""The composition root: a run's parts built from its typed config, one ``setup_*`` per part (torchtune's
``_setup_model`` / ``_setup_optimizer`` / ``_setup_data`` recipe shape), in the order they depend on
each other. ``build_run`` is the wiring diagram; ``GRPOTrainer`` receives the ``RunParts`` it returns.

    process (device, ranks, seed) -> tokenizer -> data -> method -> rewards -> resume point
      -> policy (precision, model, optimizer engine) -> reference -> actor -> stop tokens
      -> resumed state (engine, RNG, sampler, method) -> rollout engine -> tracker
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rlvr_cli import dist as ddp
from rlvr_cli.configs import TrainConfig, load_train_config
from rlvr_cli.data.datasets import LoadReport, PromptSampler, load_prompts
from rlvr_cli.errors import UserError
from rlvr_cli.lora import LoraSpec, summary as lora_summary
from rlvr_cli.losses import ClipSpec
from rlvr_cli.methods import Method, build_method
from rlvr_cli.models import ModelConfig, load_model, load_tokenizer, pick_device, pick_dtype
from rlvr_cli.rewards import build_grader
from rlvr_cli.rewards.functions import build_rewards
from rlvr_cli.rollout.engines import build_engine
from rlvr_cli.rollout.stopping import StopCriteria, resolve_stop
from rlvr_cli.trainer import checkpoint as ckpt
from rlvr_cli.trainer.actor import Actor
from rlvr_cli.trainer.config import TrainerConfig, zero3_diagnose_error
from rlvr_cli.trainer.engine import DeepSpeedEngine, TorchEngine, deepspeed_config, zero3_reference
from rlvr_cli.trainer.precision import Precision, resolve_precision
from rlvr_cli.tracking import build_tracker
from rlvr_cli.typed import to_dict


@dataclass(frozen=True)
class Process:
    device: torch.device
    distributed: bool  # DeepSpeed over a process group
    rank: int
    world: int


@dataclass(frozen=True)
class Data:
    train_prompts: list
    train_report: LoadReport  # what loading kept and skipped
    test_prompts: list
    test_report: LoadReport
    sampler: PromptSampler


@dataclass(frozen=True)
class Policy:
    precision: Precision
    engine: TorchEngine | DeepSpeedEngine  # the module, its optimizer and schedule
    lora: bool  # adapters train over a frozen base


@dataclass(frozen=True)
class Resumed:
    """The trainer's counters from the checkpoint it resumes from."""

    step: int
    bad_streak: int
    prev_entropy: float | None
    metrics: dict[str, float] | None  # the step's metrics, if the run was killed before logging them


@dataclass(frozen=True)
class RunParts:
    cfg: TrainConfig
    out_dir: Path
    process: Process
    tokenizer: Any
    data: Data
    method: Method
    algo_clip: ClipSpec  # plain GRPO's clip settings: the "without the method" loss of the diagnostic
    clip: ClipSpec  # with the method's overrides: the loss the update uses
    grader: Any
    reward_terms: list
    resume_from: Path | None
    policy: Policy
    actor: Actor
    stop: StopCriteria
    resumed: Resumed | None
    rollout: Any  # a rollout engine (rollout.engines)
    tracker: Any


def build_run(cfg: TrainConfig | DictConfig, out_dir: str | Path) -> RunParts:
    """Every part of a training run, from its config (loaded and checked first)."""
    cfg, out_dir = load_train_config(cfg), Path(out_dir)
    process = setup_process(cfg.trainer, cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    data = setup_data(cfg, tokenizer)
    method = build_method(cfg.method)
    algo_clip = cfg.algo.clip_spec()
    clip = dataclasses.replace(algo_clip, **method.clip_overrides)
    grader = build_grader(cfg.reward)
    reward_terms = build_rewards(cfg.reward, cfg.rollout.max_new_tokens)
    resume_from = setup_resume(cfg.trainer, out_dir, process)
    policy = setup_policy(cfg, process, resume_from)
    actor = setup_actor(cfg, process, policy)
    stop = resolve_stop(policy.engine.module, tokenizer, [*(cfg.model.stop_tokens or []),
                        *(cfg.rollout.stop_token_ids or [])], cfg.rollout.stop or [])
    ddp.print0(f"policy: {policy.precision.describe()} on {process.device}"
               + (", gradient checkpointing" if cfg.model.gradient_checkpointing else "")
               + (f", LoRA ({lora_summary(policy.engine.module)})" if policy.lora else "")
               + f"; optimizer: {policy.engine.optimizer_name}")
    resumed = restore(resume_from, process, policy.engine, data.sampler, method) if resume_from else None
    rollout = setup_rollout(cfg, process, policy, actor, tokenizer, stop)
    ddp.print0(f"rollout: {rollout.name}")
    tracker = build_tracker(cfg.logger, to_dict(cfg), out_dir, resumed.step if resumed else None, process.rank)
    return RunParts(cfg, out_dir, process, tokenizer, data, method, algo_clip, clip, grader, reward_terms,
                    resume_from, policy, actor, stop, resumed, rollout, tracker)


def setup_process(trainer: TrainerConfig, seed: int) -> Process:
    """Threads, device, the process group under DeepSpeed, and the seed (rank r samples with seed + r)."""
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    device = pick_device(trainer.device)
    distributed = trainer.kind == "deepspeed"
    if distributed:
        ddp.init_distributed(device, trainer.dist_backend)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
    rank, world = ddp.rank(), ddp.world_size()
    torch.manual_seed(seed + rank)  # ranks sample different responses
    return Process(device, distributed, rank, world)


def setup_data(cfg: TrainConfig, tokenizer) -> Data:
    """Train and held-out prompts (overlong ones dropped and counted, or refused) and the train sampler."""
    overlong = dict(max_prompt_len=cfg.rollout.max_prompt_len, overlong=cfg.rollout.overlong_prompts)
    train, train_report = load_prompts(cfg.data, tokenizer, "train", **overlong)
    test, test_report = load_prompts(cfg.data, tokenizer, "test", **overlong)
    test = test[: cfg.val.size] if cfg.val.size else test
    return Data(train, train_report, test, test_report, PromptSampler(train, cfg.seed))


def setup_resume(trainer: TrainerConfig, out_dir: Path, process: Process) -> Path | None:
    """The checkpoint to resume from. Rank 0 verifies (hashes) and chooses; the other ranks take the
    same step, so the files are read once, not once per rank."""
    chosen = ckpt.resolve_resume(trainer.resume, out_dir, hashes=process.rank == 0)
    if process.world == 1:
        return chosen
    step = ddp.all_max(ckpt.step_of(chosen) if chosen is not None and process.rank == 0 else -1)
    root = chosen.parent if chosen is not None else out_dir / "checkpoints"
    return None if step < 0 else root / f"step_{step:06d}"


def setup_policy(cfg: TrainConfig, process: Process, resume_from: Path | None) -> Policy:
    """The policy in its precision, inside its optimizer engine (torch, or DeepSpeed ZeRO-1/2/3).

    LoRA: the base from model.path (frozen, in the compute dtype) and the adapter (fresh, model.adapter,
    or the checkpoint's on resume); else the full policy (the checkpoint's hf/ export on resume)."""
    model_cfg, trainer = cfg.model, cfg.trainer
    compute = pick_dtype(model_cfg.dtype, process.device)
    precision = resolve_precision(compute, process.device, process.distributed, trainer.master_weights)
    lora = LoraSpec.from_model_cfg(model_cfg).enabled or bool(model_cfg.adapter)
    resume_adapter = resume_from / "adapter" if resume_from and lora else None
    policy_path = str(resume_from / "hf") if resume_from and not lora else None
    model = load_model(model_cfg, process.device, policy_path,
                       dtype=precision.compute if lora else precision.weights,
                       adapter=resume_adapter, merge_adapter=False,
                       adapter_dtype=precision.weights)  # fp32 adapters over a bf16 base on one GPU
    if not process.distributed:
        engine = TorchEngine(model, cfg.optim, trainer.max_steps)
    else:
        ds = deepspeed_config(trainer, cfg.algo, cfg.optim, process.world, precision.weights)
        engine = DeepSpeedEngine(model, cfg.optim, trainer.max_steps, ds)
    if trainer.diagnose_every and isinstance(engine, DeepSpeedEngine) and engine.zero_stage == 3:
        raise UserError(zero3_diagnose_error(trainer.diagnose_every))  # e.g. a stage set in trainer.deepspeed
    return Policy(precision, engine, lora)


def setup_reference(model_cfg: ModelConfig, process: Process, policy: Policy) -> torch.nn.Module:
    """The frozen initial policy for the KL term (always the config's model, also after resume), in
    the compute dtype; partitioned over the ranks under ZeRO-3, a full copy per rank otherwise."""
    ref = load_model(dataclasses.replace(model_cfg, gradient_checkpointing=False), process.device,
                     dtype=policy.precision.compute)
    ref.eval().requires_grad_(False)
    engine = policy.engine
    if isinstance(engine, DeepSpeedEngine) and engine.zero_stage == 3:
        ref = zero3_reference(ref, engine.config)
        ddp.print0(f"KL reference: ZeRO-3 partitioned over {process.world} ranks")
    return ref


def setup_actor(cfg: TrainConfig, process: Process, policy: Policy) -> Actor:
    """Forwards, log-probs and the optimizer step; with the KL reference when ``algo.kl`` is on (LoRA:
    the base itself, adapters off)."""
    algo, kl = cfg.algo, cfg.algo.kl.enabled
    engine = policy.engine
    ref_model = setup_reference(cfg.model, process, policy) if kl and not policy.lora else None
    return Actor(
        engine, policy.precision, process.device, algo.micro_batch_size, cfg.rollout.temperature,
        cfg.trainer.logprob_chunk_size, cfg.trainer.checkpoint_logits,
        ref_model, ref_adapters_off=kl and policy.lora,
        zero3=isinstance(engine, DeepSpeedEngine) and engine.zero_stage == 3,
        max_tokens_per_micro_batch=algo.max_tokens_per_micro_batch, remove_padding=algo.use_remove_padding,
    )


def restore(resume_from: Path, process: Process, engine, sampler: PromptSampler, method: Method) -> Resumed:
    """The checkpoint's state into the parts that hold it (engine, RNG, sampler, method), before the
    rollout engine takes the weights."""
    state = ckpt.load_state(resume_from, process.rank)
    step = int(state["step"])
    engine.load_state_dict(state["engine"])
    engine.load(resume_from)
    ckpt.set_rng_state(state["rng"])
    sampler.load_state_dict(state["sampler"])
    method.load_state_dict(state["method"])
    ddp.print0(f"[yellow]resumed from {resume_from} at step {step}")
    return Resumed(step, state.get("bad_streak", 0), state.get("prev_entropy"), state.get("metrics"))


def setup_rollout(cfg: TrainConfig, process: Process, policy: Policy, actor: Actor, tokenizer, stop):
    """The engine that samples (HF on the trainer's module, or a colocated vLLM)."""
    r, module = cfg.rollout, policy.engine.module
    limit = int(getattr(module.config, "max_position_embeddings", None) or 1 << 20)
    # prompt + response budget for the vLLM engine, within the model's positions
    max_model_len = min(limit, (r.max_prompt_len or limit) + max(r.max_new_tokens, cfg.val.max_new_tokens))
    return build_engine(
        r.engine, model=module, tokenizer=tokenizer, policy=actor.sampling,
        batch_size=r.batch_size, device=process.device, dtype=policy.precision.compute,
        max_model_len=max_model_len, vllm_cfg=r.vllm, seed=cfg.seed,
        weights_version=lambda: actor.updates, zero3=actor.zero3, sampler=r.sampler,
    )
