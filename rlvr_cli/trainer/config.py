"""The training loop's config nodes: ``algo.*`` (conf/algo/*.yaml: GRPO's advantage, clipped objective,
aggregation and batch sizes), ``trainer.*`` (conf/trainer/*.yaml: process, DeepSpeed, checkpoints,
stopping) and ``val.*``."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlvr_cli.losses import AGG_MODES, ClipSpec, KLConfig
from rlvr_cli.rollout.config import RolloutCorrectionConfig
from rlvr_cli.typed import setting, show

GROUP = ("GRPO's baseline is the mean of a prompt's group: one response per prompt has nothing to compare "
         "with, and filter_zero_std_groups drops every such group")
RESUME_WORDS = ("auto", "never", "none")


@dataclass(frozen=True, kw_only=True)
class FilterGroupsConfig:
    """``algo.filter_groups``: DAPO's dynamic sampling (sample again until the batch holds enough groups
    whose rewards differ)."""

    enabled: bool = setting(False, help="refill the batch with groups whose rewards are not all equal")
    max_num_gen_batches: int = setting(10, ge=0, why="0 = no limit", help="sampling rounds per step at most "
                                       "(0 = no limit)")


@dataclass(frozen=True, kw_only=True)
class AlgoConfig:
    """``algo.*``: the GRPO algorithm, orthogonal to the method (conf/algo: grpo, dapo, dr_grpo)."""

    name: str = setting("grpo", help="the algorithm's name (conf/algo/<name>.yaml; in the run's name)")
    group_size: int = setting(ge=2, why=GROUP, help="responses per prompt (G); the advantage is relative to "
                              "the group")
    norm_adv_by_std: bool = setting(help="divide the advantage by the group's std (GRPO); false = Dr. GRPO")
    adv_eps: float = setting(gt=0, why="added to the group std before dividing", help="added to the group "
                             "std before dividing")
    filter_zero_std_groups: bool = setting(help="drop groups whose rewards are all equal (their advantage is 0)")
    filter_groups: FilterGroupsConfig = setting(FilterGroupsConfig(), help="DAPO's dynamic sampling")
    rollout_correction: RolloutCorrectionConfig = setting(RolloutCorrectionConfig(), help="importance "
                                                          "weights for the sampler-trainer mismatch")
    clip_ratio_low: float = setting(ge=0, le=1, why="r is clipped below at 1 - clip_ratio_low",
                                    help="r is clipped below at 1 - clip_ratio_low")
    clip_ratio_high: float = setting(ge=0, why="r is clipped above at 1 + clip_ratio_high",
                                     help="r is clipped above at 1 + clip_ratio_high (DAPO's clip-higher)")
    clip_ratio_c: float | None = setting(gt=1, why="the dual-clip constant c > 1; null = off", help="the "
                                         "dual-clip constant c > 1 for negative advantages; null = off")
    log_ratio_clamp: float | None = setting(gt=0, why="clamp on |log r|; null = off", help="clamp on "
                                            "|log r| before exp; null = off")
    loss_agg_mode: Literal[AGG_MODES] = setting(help="how token losses aggregate: token-mean (DAPO) | "
                                                "seq-mean-token-sum | seq-mean-token-mean (GRPO) | ...-norm")
    loss_scale_factor: float | None = setting(None, gt=0, why="null = rollout.max_new_tokens",
                                              help="the constant of the -norm modes (Dr. GRPO); null = "
                                              "rollout.max_new_tokens")
    ppo_epochs: int = setting(ge=1, help="passes over each step's batch")
    mini_batch_size: int = setting(ge=1, why="responses per optimizer step", help="responses per optimizer step")
    micro_batch_size: int = setting(ge=1, why="responses per forward/backward", help="responses per "
                                    "forward/backward (gradient accumulation inside a mini-batch)")
    max_tokens_per_micro_batch: int | None = setting(None, ge=1, why="null = algo.micro_batch_size responses",
                                                     help="token budget of a packed micro-batch; null = "
                                                     "micro_batch_size responses")
    use_remove_padding: bool = setting(True, help="pack the responses of a micro-batch without padding "
                                       "(verl's use_remove_padding)")
    old_logprob_pass: Literal["auto", "always"] = setting("auto", help="auto: skip the no-grad scoring pass "
                                                          "when the update is strictly on-policy | always")
    kl: KLConfig = setting(help="the KL penalty to the initial policy")

    def clip_spec(self) -> ClipSpec:
        """The clipped objective's settings (before a method's ``loss:`` overrides)."""
        return ClipSpec(clip_ratio_low=self.clip_ratio_low, clip_ratio_high=self.clip_ratio_high,
                        clip_ratio_c=self.clip_ratio_c, log_ratio_clamp=self.log_ratio_clamp)

    def problems(self, at: str) -> Iterator[str]:
        if self.micro_batch_size > self.mini_batch_size:
            yield (f"{at}micro_batch_size={self.micro_batch_size}: expected an int <= {at}mini_batch_size="
                   f"{self.mini_batch_size} (a micro-batch is a slice of a mini-batch)")


def _device_ok(v: Any) -> bool:
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


DEVICE = dict(check=_device_ok, expect="auto or a torch device (cpu, cuda, cuda:N, ...)")
RESUME = dict(check=_resume_ok, expect="auto | never | an existing checkpoint or run folder")


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """``trainer.*`` (conf/trainer: single, zero1/2/3, offload): the process, DeepSpeed, checkpoints, stops."""

    kind: Literal["single", "deepspeed"] = setting("single", help="single (one process) | deepspeed "
                                                   "(ZeRO over trainer.gpus x trainer.nodes ranks)")
    device: str = setting("auto", **DEVICE, help="auto (cuda if available, else cpu) or a torch device")
    max_steps: int = setting(ge=1, help="training steps")
    save_every: int = setting(ge=0, why="0 = only at the end", help="steps between checkpoints (0 = only at "
                              "the end)")
    keep_last: int | None = setting(None, ge=1, why="null = keep all", help="checkpoints kept (null = all)")
    resume: Any = setting("auto", **RESUME, help="auto (the run folder's latest verified checkpoint) | never | "
                          "a checkpoint or run folder")
    max_nonfinite_steps: int = setting(3, ge=1, help="consecutive steps with a non-finite loss or gradient "
                                       "(each skipped) before the run stops")
    stop_mode: Literal["step", "now"] = setting("step", why="what a stop signal (SIGTERM, SIGINT, SIGUSR1) ends",
                                                help="a stop signal (SIGTERM, SIGINT, SIGUSR1) ends the step "
                                                "(checkpoint after it) | now (abandon it, checkpoint the last)")
    logprob_chunk_size: int = setting(1024, ge=1, help="tokens per chunk of the log-prob / entropy head "
                                      "(no full-vocabulary fp32 tensor for the batch)")
    checkpoint_logits: bool | Literal["auto"] = setting("auto", expect="auto, true or false", help="recompute "
                                                        "each logit chunk in the backward (auto: on a GPU)")
    num_threads: int | None = setting(None, ge=1, help="torch CPU threads; null = torch's default")
    progress: bool = setting(True, help="a live progress bar (off: one line per step)")
    master_weights: Literal["fp32", "model"] = setting("fp32", help="the optimizer's weights: fp32 masters "
                                                       "over bf16 compute | model (the model's dtype)")
    dist_backend: str = setting("auto", help="torch.distributed backend: auto (nccl on GPU, gloo on CPU) | "
                                "nccl | gloo")
    zero_stage: int | None = setting(None, ge=0, le=3, help="DeepSpeed's ZeRO stage (trainer.kind=deepspeed)")
    offload_optimizer: bool = setting(False, help="ZeRO-Offload: the optimizer states on the CPU (stage >= 1)")
    offload_param: bool = setting(False, help="ZeRO-3 only: the parameters on the CPU")
    gpus: int = setting(1, ge=1, why="processes per node", help="processes (GPUs) per node")
    nodes: int = setting(1, ge=1, help="nodes (multi-node needs trainer.hostfile)")
    hostfile: str | None = setting(None, help="DeepSpeed hostfile ('host slots=N' lines) for nodes > 1")
    master_port: int = setting(29500, ge=1, le=65535, help="the rendezvous port")
    deepspeed: dict[str, Any] | None = setting(None, help="any other DeepSpeed JSON key, merged over the "
                                               "derived config")
    gpu_memory_gb: float | None = setting(None, gt=0, why="GiB per GPU for the memory plan; null = the GPU's",
                                          help="GiB per GPU the memory plan checks against; null = the GPU's")
    ignore_memory_plan: bool = setting(False, help="train even when the memory plan says it cannot fit")
    diagnose_every: int = setting(0, ge=0, why="steps between method/grad_ratio diagnostics; 0 = off",
                                  help="steps between the method's gradient diagnostic (method/grad_ratio); "
                                  "0 = off")

    def problems(self, at: str) -> Iterator[str]:
        if self.kind != "deepspeed":
            return
        stage = self.zero_stage
        if stage is None:
            yield f"{at}zero_stage is missing: expected an int in [0, 3] ({at}kind=deepspeed)"
            return
        if self.offload_param and stage != 3:
            yield (f"{at}offload_param=true: expected false unless {at}zero_stage=3 (DeepSpeed offloads "
                   f"parameters under ZeRO-3 only; zero_stage={stage})")
        if self.offload_optimizer and stage < 1:
            yield (f"{at}offload_optimizer=true: expected false unless {at}zero_stage >= 1 (ZeRO-Offload "
                   "moves the partitioned optimizer state; zero_stage=0 partitions nothing)")
        if self.diagnose_every and stage == 3:
            yield zero3_diagnose_error(self.diagnose_every)


def zero3_diagnose_error(every: Any) -> str:
    return (f"trainer.diagnose_every={show(every)}: expected 0 with trainer.zero_stage=3 (ZeRO-3 partitions the "
            f"parameters, so the method's gradient diagnostic cannot take gradients over them; use zero_stage 0-2)")


@dataclass(frozen=True, kw_only=True)
class ValConfig:
    """``val.*``: validation on the held-out split during training."""

    every: int = setting(ge=0, why="0 = never", help="validate every N training steps (0 = never), and at the end")
    at_start: bool = setting(help="validate before the first step")
    size: int = setting(ge=0, why="0 = the whole test split", help="held-out problems used (0 = all)")
    n: int = setting(ge=1, help="responses per problem")
    temperature: float = setting(ge=0, why="0 = greedy", help="sampling temperature (0 = greedy)")
    top_p: float = setting(gt=0, le=1, help="nucleus sampling threshold")
    max_new_tokens: int = setting(ge=1, help="response budget in tokens")
