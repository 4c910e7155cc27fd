"""The optimizer step. Two engines with one small surface, so the loop does not know which it drives:

- ``TorchEngine`` (``trainer=single``): AdamW + grad clipping on one process (the CPU default).
- ``DeepSpeedEngine`` (``trainer=zero1|zero2|zero3[_offload]``): the same AdamW handed to DeepSpeed ZeRO;
  with ZeRO-Offload, DeepSpeed's CPU Adam (``DeepSpeedCPUAdam``, AdamW mode), which steps the fp32
  master partitions in CPU memory (DeepSpeed refuses a client torch optimizer there). Its op compiles
  once with the system compiler (~50 s) and is cached in ``~/.cache/torch_extensions``.

Surface: ``module`` (the bare HF model), ``backward(loss, last)``, ``step() -> grad norm``, ``zero_grad``,
``set_lr_for_step(step)``, ``lr``, ``state_dict``/``load_state_dict`` (torch engine; DeepSpeed keeps its
own state in its checkpoint folder).

The learning rate follows the *training* step (linear warmup, then constant or cosine), as verl's actor
scheduler does, not the optimizer step: each engine sets it explicitly before a step's updates.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlvr_cli.trainer.config import AlgoConfig, TrainerConfig
from rlvr_cli.typed import load, setting

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """``optim.*``: AdamW and its learning-rate schedule, for either engine."""

    lr: float = setting(gt=0, help="the peak learning rate (the embedded default's 3e-4; real models ~1e-6)")
    weight_decay: float = setting(0.0, ge=0, help="AdamW's decoupled weight decay")
    betas: list[float] = setting([0.9, 0.999], ge=0, lt=1, length=2, help="AdamW's (beta1, beta2)")
    eps: float = setting(1e-8, gt=0, help="AdamW's epsilon")
    warmup_steps: int = setting(0, ge=0, help="linear warmup over this many training steps, then `schedule`")
    schedule: Literal[SCHEDULES] = setting("constant", help="after warmup: constant | cosine (to min_lr_ratio)")
    min_lr_ratio: float = setting(0.0, ge=0, le=1, help="the cosine schedule's final lr / lr")
    grad_clip: float | None = setting(1.0, ge=0, why="max global grad norm; 0 = off", help="max global grad "
                                      "norm (0 or null = off)")


def optim_config(optim: OptimConfig | Mapping[str, Any]) -> OptimConfig:
    return load(OptimConfig, optim, "optim.")


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant", min_ratio: float = 0.0) -> float:
    """LR factor at training step ``step`` (0-based): linear warmup to 1, then constant or cosine."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        u = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * u))
    if schedule != "constant":
        raise ValueError(f"unknown optim.schedule {schedule!r}; valid: constant, cosine")
    return 1.0


def make_adamw(model: torch.nn.Module, optim: OptimConfig | Mapping[str, Any],
               cpu_offload: bool = False) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters. A torch optimizer (not DeepSpeed's FusedAdam), so DeepSpeed
    compiles no op at start-up; under ZeRO-Offload DeepSpeed's CPU Adam with the same hyper-parameters."""
    optim = optim_config(optim)
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = dict(lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay, eps=optim.eps)
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, adamw_mode=True, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


class _Schedule:
    def __init__(self, optim: OptimConfig, total_steps: int):
        self.base_lr, self.total = optim.lr, total_steps
        self.warmup, self.kind, self.min_ratio = optim.warmup_steps, optim.schedule, optim.min_lr_ratio

    def lr_at(self, step: int) -> float:
        return self.base_lr * lr_multiplier(step, self.warmup, self.total, self.kind, self.min_ratio)


class TorchEngine:
    """Plain PyTorch on one process."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig | Mapping[str, Any], total_steps: int):
        optim = optim_config(optim)
        self.model = model
        self.optimizer = make_adamw(model, optim)
        self.optimizer_name = type(self.optimizer).__name__
        self.schedule = _Schedule(optim, total_steps)
        self.grad_clip = optim.grad_clip

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def set_lr_for_step(self, step: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.schedule.lr_at(step)

    def before_forward(self) -> None:
        pass

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        loss.backward()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> float:
        """Clip and apply the accumulated gradients; returns the pre-clip global norm. A non-finite norm
        skips the update (the gradients are dropped) and is returned for the caller to report."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.grad_clip if self.grad_clip and self.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
        if math.isfinite(norm):
            self.optimizer.step()
        self.zero_grad()
        return norm

    def skip_step(self) -> float:
        """Drop the accumulated gradients without an update (a non-finite loss was seen)."""
        self.zero_grad()
        return float("nan")

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def save(self, ckpt_dir, client_state: dict[str, Any]) -> None:
        pass  # optimizer state travels in trainer_state.pt

    def load(self, ckpt_dir) -> None:
        pass


def deepspeed_config(trainer: TrainerConfig, algo: AlgoConfig, optim: OptimConfig | Mapping[str, Any], world: int,
                     dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The DeepSpeed JSON, derived from the GRPO settings (batch sizes are never set twice) and merged
    with ``trainer.deepspeed`` (a passthrough for any other DeepSpeed key). ``dtype`` is the weights'
    dtype: bf16 / fp16 switch on DeepSpeed's mixed-precision mode (fp32 master weights in the
    optimizer; fp16 with dynamic loss scaling)."""
    micro = algo.micro_batch_size
    per_rank_mini = max(1, algo.mini_batch_size // world)
    gas = max(1, math.ceil(per_rank_mini / micro))
    zero: dict[str, Any] = {"stage": trainer.zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if trainer.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if trainer.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if zero["stage"] == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,
        "train_batch_size": micro * gas * world,
        "gradient_clipping": optim_config(optim).grad_clip or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16, "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(cfg, dict(trainer.deepspeed or {}))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def zero3_reference(model: torch.nn.Module, ds_config: dict[str, Any]) -> torch.nn.Module:
    """The frozen reference model partitioned like the policy under ZeRO-3 (a DeepSpeed inference engine:
    no optimizer, parameters sharded over ranks and gathered layer by layer in forward, optionally
    offloaded to CPU as ``trainer.offload_param`` says). Memory: 1/world of the weights per GPU instead
    of a full copy. Returns the wrapped HF module; every rank must run each of its forwards."""
    import deepspeed

    zero: dict[str, Any] = {"stage": 3}
    if "offload_param" in ds_config["zero_optimization"]:
        zero["offload_param"] = ds_config["zero_optimization"]["offload_param"]
    cfg = {"train_micro_batch_size_per_gpu": ds_config["train_micro_batch_size_per_gpu"],
           "zero_optimization": zero, "bf16": ds_config.get("bf16", {"enabled": False}),
           "fp16": ds_config.get("fp16", {"enabled": False}), "steps_per_print": 10**9}
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    engine, *_ = deepspeed.initialize(model=model, config=cfg)
    engine.module.eval()
    return engine.module


class DeepSpeedEngine:
    """DeepSpeed ZeRO-1/2/3 around the same AdamW. Gradient accumulation boundaries are set by the loop
    (mini-batches may hold a varying number of micro-batches after group filtering), and losses arrive
    already normalised by the global mini-batch totals, so DeepSpeed must not rescale them."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig | Mapping[str, Any], total_steps: int,
                 ds_config: dict[str, Any]):
        optim = optim_config(optim)
        import deepspeed

        # Skip the ~60 s shared-memory comm op build on CPU; gloo does the collectives.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.config = ds_config
        offload = ds_config["zero_optimization"].get("offload_optimizer", {}).get("device") == "cpu"
        optimizer = make_adamw(model, optim, cpu_offload=offload)
        self.optimizer_name = type(optimizer).__name__
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.schedule = _Schedule(optim, total_steps)

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def zero_stage(self) -> int:
        return int(self.config["zero_optimization"]["stage"])

    def set_lr_for_step(self, step: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.schedule.lr_at(step)

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def before_forward(self) -> None:
        """What ``DeepSpeedEngine.forward`` does first: close the previous backward's bookkeeping. The loop
        calls the module's parts directly (chunked LM head), so it must do this itself: without it
        ZeRO-3 overwrites, instead of accumulating, the previous micro-batch's gradient partitions."""
        from deepspeed.runtime.base_optimizer import ZeROOptimizer

        if isinstance(self.engine.optimizer, ZeROOptimizer):
            self.engine.optimizer.clear_backward_seen_flag()

    def zero_grad(self) -> None:
        self.engine.zero_grad()

    def step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def skip_step(self) -> float:
        """Close the accumulation boundary without moving the weights (lr 0 for this step). DeepSpeed
        owns the partitioned gradients, so Adam's moments still see the partial gradient: a known
        difference from the single-process engine, which drops it entirely."""
        saved = [g["lr"] for g in self.optimizer.param_groups]
        for g in self.optimizer.param_groups:
            g["lr"] = 0.0
        self.engine.step()
        for g, lr in zip(self.optimizer.param_groups, saved):
            g["lr"] = lr
        return float("nan")

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def save(self, ckpt_dir, client_state: dict[str, Any]) -> None:
        """Model, optimizer and per-rank state in DeepSpeed's own format (every rank calls this)."""
        self.engine.save_checkpoint(str(ckpt_dir / "deepspeed"), tag="state", client_state=client_state)

    def load(self, ckpt_dir) -> None:
        self.engine.load_checkpoint(str(ckpt_dir / "deepspeed"), tag="state")

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Consolidated weights for the HF export (on rank 0; None elsewhere under ZeRO-3)."""
        if self.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return self.module.state_dict()
