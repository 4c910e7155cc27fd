"""Loading a policy: a hub id, a local folder, or ``builtin:<name>`` for a model shipped in the package."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rlvr_cli.errors import UserError
from rlvr_cli.lora import LoraConfig
from rlvr_cli.rollout.config import STOP_TOKENS_WHY
from rlvr_cli.typed import load, setting

ASSETS = Path(__file__).parent / "assets"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
DTYPE_NAMES = ("auto", *DTYPES)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """``model.*`` (conf/model/*.yaml): the policy, shared by ``rlvr train`` and ``rlvr eval``."""

    name: str = setting("model", help="the model's name (in eval's run folder and results)")
    path: str = setting(help="a hub id, a local folder, or builtin:<name> (a model shipped in the package)")
    tokenizer: str | None = setting(None, help="the tokenizer's folder or hub id; null = path's")
    dtype: Literal[DTYPE_NAMES] = setting("auto", help="the weights' dtype: auto (bf16 on GPU, fp32 on CPU) | "
                                          "float32 | bfloat16 | float16 (and fp32 | bf16 | fp16)")
    attn_implementation: str | None = setting(None, help="transformers' attention (sdpa, eager, "
                                              "flash_attention_2); null = its default")
    trust_remote_code: bool = setting(False, help="run the model repository's own code")
    gradient_checkpointing: bool = setting(False, help="recompute activations in the backward (less memory)")
    disable_dropout: bool = setting(True, help="dropout off: train-mode forwards score what the sampler "
                                    "drew (TRL's disable_dropout)")
    stop_tokens: list[int | str] | None = setting(None, ge=0, why=STOP_TOKENS_WHY, help="tokens that end a "
                                                  "response besides the model's EOS (ids or token strings)")
    lora: LoraConfig | None = setting(LoraConfig(), help="LoRA adapters (peft); rank 0 = full fine-tuning")
    adapter: str | None = setting(None, why="a LoRA adapter folder (adapter_config.json)", help="a LoRA "
                                  "adapter folder (peft format, e.g. <run>/checkpoints/step_N/adapter) on top of path")


def model_config(model: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    return load(ModelConfig, model, "model.")


def resolve_model_path(path: str) -> str:
    """``builtin:tiny_arith`` -> the shipped folder; a path that looks local must exist; else a hub id."""
    if path.startswith("builtin:"):
        p = ASSETS / path.split(":", 1)[1]
        if not (p / "config.json").is_file():
            have = sorted(d.name for d in ASSETS.iterdir() if (d / "config.json").is_file()) if ASSETS.is_dir() else []
            raise UserError(f"no built-in model {path!r}; available: {', '.join('builtin:' + h for h in have) or 'none'}")
        return str(p)
    p = Path(path).expanduser()
    if path.startswith((".", "/", "~")) and not p.exists():
        raise UserError(f"model folder not found: {path}")
    return str(p) if p.exists() else path


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPU, fp32 on CPU (bf16 backward is 15–35x slower on an AVX2 CPU)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown model.dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_tokenizer(model_cfg: ModelConfig | Mapping[str, Any]):
    from transformers import AutoTokenizer

    model_cfg = model_config(model_cfg)
    path = resolve_model_path(model_cfg.tokenizer or model_cfg.path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _live_dropouts(model: torch.nn.Module):
    """(module, attribute) of every dropout that is on: ``nn.Dropout.p`` and the float
    ``attention_dropout`` / ``dropout`` attributes HF attention layers apply in train mode."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            yield module, "p"
        for attr in ("attention_dropout", "dropout"):
            value = getattr(module, attr, None)
            if isinstance(value, float) and not isinstance(value, bool) and value > 0:
                yield module, attr


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout of the model to 0; returns how many were on. The gradient forwards run in
    train mode (gradient checkpointing needs it), and a live dropout would make the ratio π/π_old ≠ 1
    on-policy and the log-probs differ from the sampler's (TRL's ``disable_dropout``, on by default)."""
    live = list(_live_dropouts(model))
    for module, attr in live:
        setattr(module, attr, 0.0)
    return len(live)


def has_dropout(model: torch.nn.Module) -> bool:
    """Whether a train-mode forward differs from an eval-mode one through dropout."""
    return next(_live_dropouts(model), None) is not None


def load_model(model_cfg: ModelConfig | Mapping[str, Any], device: torch.device, path: str | None = None, dtype: torch.dtype | None = None,
               adapter: str | Path | None = None, merge_adapter: bool = True, adapter_dtype: torch.dtype | None = None):
    """The causal LM from ``path`` (default: the config's) in eval mode, its weights in ``dtype``
    (default: the config's ``dtype``), with the config's attention; dropout off unless
    ``model.disable_dropout=false``; gradient checkpointing enabled when configured (it runs only
    in train mode, i.e. in the loss forwards).

    LoRA (``rlvr_cli/lora.py``): an adapter folder (``adapter``, else ``model.adapter``) is loaded on
    top, merged into the weights (``merge_adapter``: a plain model, for eval) or kept as a trainable
    adapter (training, resume); else ``model.lora.rank > 0`` injects a fresh adapter. Either way the
    base weights are frozen. ``adapter_dtype``: the adapter parameters' dtype (default: peft's, fp32
    over a bf16 base)."""
    from transformers import AutoModelForCausalLM

    from rlvr_cli import lora

    model_cfg = model_config(model_cfg)
    spec = lora.LoraSpec.from_model_cfg(model_cfg)  # a bad model.lora value fails before any weight loads
    src = resolve_model_path(path or model_cfg.path)
    adapter = adapter or model_cfg.adapter
    if adapter and not (Path(adapter) / lora.ADAPTER_CONFIG).is_file():
        raise UserError(f"model.adapter={adapter}: no LoRA adapter there (expected {lora.ADAPTER_CONFIG} and "
                        f"{lora.ADAPTER_WEIGHTS}: a checkpoint's adapter/ folder)")
    kwargs: dict[str, Any] = {"dtype": dtype or pick_dtype(model_cfg.dtype, device),
                              "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(src, **kwargs).to(device)
    if model_cfg.disable_dropout:
        disable_dropout(model)
    if adapter:
        model = lora.load_adapter(model, Path(adapter), trainable=not merge_adapter)
        if merge_adapter:
            model = lora.merge_into_base(model)
    elif spec.enabled:
        lora.apply_lora(model, spec)
    if adapter_dtype is not None and lora.has_lora(model):
        for name, p in model.named_parameters():
            if lora.is_adapter_param(name):
                p.data = p.data.to(adapter_dtype)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.eval()
