"""The optimizer step: AdamW with linear warmup and gradient clipping on one process (``trainer=single``).

The DeepSpeed engine (``trainer=zero1|zero2|zero3``) offers the same small surface, so the loop does not
know which one it drives: ``backward``, ``step``, ``zero_grad``, ``lr``, ``state_dict``/``load_state_dict``.
"""
from __future__ import annotations

import math
from typing import Any

import torch


def warmup_lambda(warmup_steps: int, total_steps: int, schedule: str = "constant", min_ratio: float = 0.0):
    """LR multiplier per training step: linear warmup to 1, then constant or cosine to ``min_ratio``."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            u = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * u))
        return 1.0

    return f


class TorchEngine:
    """Plain PyTorch: the default on a CPU and for one GPU without DeepSpeed."""

    def __init__(self, model: torch.nn.Module, optim: dict[str, Any], total_steps: int):
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=optim["lr"], betas=tuple(optim.get("betas", (0.9, 0.999))),
            weight_decay=optim.get("weight_decay", 0.0), eps=optim.get("eps", 1e-8),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            warmup_lambda(optim.get("warmup_steps", 0), total_steps, optim.get("schedule", "constant"),
                          optim.get("min_lr_ratio", 0.0)),
        )
        self.grad_clip = optim.get("grad_clip", 1.0)

    @property
    def module(self) -> torch.nn.Module:
        """The bare HF model (for generation, scoring and saving)."""
        return self.model

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> float:
        """Clip and apply the accumulated gradients. Returns the pre-clip norm; a non-finite norm skips
        the update (gradients are dropped) and is returned as-is for the caller to report."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.grad_clip if self.grad_clip and self.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
        if math.isfinite(norm):
            self.optimizer.step()
        self.zero_grad()
        return norm

    def scheduler_step(self) -> None:
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
