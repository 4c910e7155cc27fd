"""How the policy's weights are stored and how its matmuls are computed.

``model.dtype`` is the *compute* dtype (``auto``: bf16 on GPU, fp32 on CPU). The optimizer must step
fp32 weights: an lr of 1e-6 against a bf16 weight of magnitude 0.02 (spacing ~1.2e-4) rounds every
update away, so a plain bf16 AdamW trains almost nothing.

- ``trainer=single``: fp32 master weights, bf16 autocast for the forward passes (what torchtune,
  accelerate and TRL do on one GPU). ``trainer.master_weights=model`` stores the weights in the compute
  dtype instead (half the memory, and the rounding above: for memory experiments only).
- DeepSpeed: the weights in the compute dtype and DeepSpeed's bf16 mode, whose optimizer keeps the
  fp32 master copy (partitioned under ZeRO); no autocast.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from rlvr_cli.errors import UserError

MASTER_WEIGHTS = ("fp32", "model")


@dataclass(frozen=True)
class Precision:
    weights: torch.dtype  # the dtype the parameters are stored in
    compute: torch.dtype  # the dtype of the forward's matmuls
    device_type: str = "cpu"

    @property
    def autocast_enabled(self) -> bool:
        return self.compute != self.weights

    def autocast(self):
        """Autocast to the compute dtype when the weights are kept wider; else a no-op."""
        if not self.autocast_enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute)

    def describe(self) -> str:
        name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
        if self.autocast_enabled:
            return f"{name(self.weights)} weights, {name(self.compute)} autocast"
        return f"{name(self.weights)}"


def resolve_precision(compute: torch.dtype, device: torch.device, deepspeed: bool, master_weights: str = "fp32") -> Precision:
    if master_weights not in MASTER_WEIGHTS:
        raise UserError(f"trainer.master_weights={master_weights!r}; valid: {', '.join(MASTER_WEIGHTS)}")
    if deepspeed or compute == torch.float32:
        return Precision(compute, compute, device.type)
    if compute == torch.float16:  # fp32 master weights or not: fp16 gradients underflow without a scaler
        raise UserError("model.dtype=float16 with trainer=single needs loss scaling: use bfloat16, or a DeepSpeed "
                        "trainer (zero1/2/3), whose fp16 mode scales the loss")
    if master_weights == "model":
        return Precision(compute, compute, device.type)
    return Precision(torch.float32, compute, device.type)
