"""LoRA adapters on the policy (``model.lora.*``), through peft as transformers integrates it.

The adapters are injected into the HF model itself (``model.add_adapter``: peft's
``inject_adapter_in_model``), not wrapped in a ``PeftModel``: the module the loop drives keeps its
class, its ``config``, ``model.model`` (the body) and ``lm_head``, so rollout, log-probs and every
method run unchanged (a method sees log-probs and entropies, not parameters). Only the adapter
parameters (``lora_A``/``lora_B``, plus ``modules_to_save``) require grad, so only they enter the
optimizer and DeepSpeed's partitions; the base weights never change.

- **Reference model**: the base is the adapted model with its adapters off (``adapters_off``, peft's
  ``disable_adapter``), so ``algo.kl.enabled=true`` loads no second copy.
- **Merged weights** (``merged_state_dict``): W + s·B·A per adapted linear layer (s = alpha / rank,
  Hu et al. 2021, eq. 3), under the base model's own parameter names: what the vLLM engine is pushed
  and what the checkpoint's ``hf/`` export holds, so plain ``AutoModelForCausalLM.from_pretrained``
  loads the trained policy.
- **Adapter folder**: peft's format (``adapter_config.json``, ``adapter_model.safetensors``), written
  with the checkpoint and read back on resume and by ``rlvr eval model.adapter=<folder>``.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlvr_cli.errors import UserError
from rlvr_cli.typed import load, setting

ADAPTER = "default"  # peft's adapter name
ALL_LINEAR = "all-linear"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """``model.lora``: LoRA adapters through peft (rank 0 = full fine-tuning)."""

    rank: int = setting(0, ge=0, why="0 = full fine-tuning", help="the adapters' rank; 0 = full fine-tuning")
    alpha: float = setting(16.0, gt=0, why="the update is scaled by alpha / rank", help="the update is scaled "
                           "by alpha / rank")
    dropout: float = setting(0.0, ge=0, lt=1, help="dropout on the adapters' input")
    target_modules: str | list[str] = setting(ALL_LINEAR, why="all-linear, module names or a regex",
                                              help="all-linear (every decoder linear layer, not the LM head), "
                                              "module names, or a regex over the dotted name")
    modules_to_save: list[str] | None = setting(None, help="modules trained in full beside the adapters")


@dataclass(frozen=True)
class LoraSpec:
    """``model.lora``: ``rank`` 0 = off. ``target_modules``: ``all-linear`` (every linear layer of the
    decoder, not the LM head: peft's rule), a list of module names (a module matches when its dotted
    name ends with one) or a regular expression (matched against the whole dotted name)."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Any = ALL_LINEAR
    modules_to_save: tuple[str, ...] = ()

    @classmethod
    def from_model_cfg(cls, model_cfg: Any) -> LoraSpec:
        """From a ``models.ModelConfig``'s ``lora`` node (or a plain mapping's)."""
        return cls.of(model_cfg.get("lora") if isinstance(model_cfg, Mapping) else model_cfg.lora)

    @classmethod
    def of(cls, node: LoraConfig | Mapping[str, Any] | None) -> LoraSpec:
        node = LoraConfig() if node is None else load(LoraConfig, node, "model.lora.")
        targets = node.target_modules
        spec = cls(rank=node.rank, alpha=node.alpha, dropout=node.dropout,
                   target_modules=tuple(targets) if isinstance(targets, (list, tuple)) else targets,
                   modules_to_save=tuple(node.modules_to_save or ()))
        spec.check()
        return spec

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def check(self) -> None:
        if self.rank < 0:
            raise UserError(f"model.lora.rank={self.rank}: expected an int >= 0 (0 = no LoRA)")
        if self.enabled and self.alpha <= 0:
            raise UserError(f"model.lora.alpha={self.alpha:g}: expected a number > 0 (the update is scaled by alpha / rank)")
        if not 0 <= self.dropout < 1:
            raise UserError(f"model.lora.dropout={self.dropout:g}: expected a number in [0, 1)")

    def peft_config(self):
        from peft import LoraConfig

        targets = list(self.target_modules) if isinstance(self.target_modules, tuple) else self.target_modules
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          modules_to_save=list(self.modules_to_save) or None, bias="none", task_type="CAUSAL_LM")


def _linear_names(model: torch.nn.Module) -> list[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]


def target_module_names(model: torch.nn.Module, targets: Any) -> list[str]:
    """The dotted names of the linear layers ``targets`` selects (peft's matching rules), or a
    ``UserError`` naming the model's linear layers when it selects none. Works on a meta-device model."""
    linear = _linear_names(model)
    if targets == ALL_LINEAR:
        chosen = linear
    elif isinstance(targets, str):
        chosen = [n for n in linear if re.fullmatch(targets, n)]
    else:
        chosen = [n for n in linear if any(n == t or n.endswith("." + t) for t in targets)]
    if not chosen:
        kinds = sorted({n.rsplit(".", 1)[-1] for n in linear})
        shown = targets if isinstance(targets, str) else list(targets)
        raise UserError(f"model.lora.target_modules={shown} names no linear layer of {type(model).__name__}; "
                        f"its linear layers: {', '.join(kinds) or 'none'} (or all-linear)")
    return chosen


def trainable_parameters(model: torch.nn.Module, spec: LoraSpec) -> int:
    """Adapter parameters LoRA adds to ``model`` (rank·(in + out) per adapted linear layer) plus the
    trainable copies of ``modules_to_save``; from shapes alone, so a meta-device model will do."""
    modules = dict(model.named_modules())
    n = sum(spec.rank * (modules[name].in_features + modules[name].out_features)
            for name in target_module_names(model, spec.target_modules))
    for name in spec.modules_to_save:
        n += sum(p.numel() for mn, m in modules.items() if mn == name or mn.endswith("." + name) for p in m.parameters())
    return n


def apply_lora(model: torch.nn.Module, spec: LoraSpec) -> torch.nn.Module:
    """Inject the adapters into ``model`` (in place) with every base parameter frozen; returns it."""
    target_module_names(model, spec.target_modules)  # one line naming the model's layers, before peft's error
    for name in spec.modules_to_save:
        if not any(n == name or n.endswith("." + name) for n, _ in model.named_modules()):
            raise UserError(f"model.lora.modules_to_save: {name!r} is no module of {type(model).__name__}")
    if not hasattr(model, "add_adapter"):
        raise UserError(f"model.lora.rank={spec.rank}: {type(model).__name__} cannot take a peft adapter")
    try:
        model.add_adapter(spec.peft_config(), adapter_name=ADAPTER)
    except (ValueError, TypeError, NotImplementedError) as e:
        raise UserError(f"model.lora: peft cannot wrap {type(model).__name__}: {str(e).splitlines()[0]}") from e
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_param(name))
    return model


def is_adapter_param(name: str) -> bool:
    return f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name or f".modules_to_save.{ADAPTER}." in name


def has_lora(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "_hf_peft_config_loaded", False))


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{dotted name: peft LoRA layer} of the adapted linear layers."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


@contextlib.contextmanager
def adapters_off(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The base model: every adapter layer bypassed while inside (peft's ``disable_adapter``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    trainable = [p.requires_grad for p in model.parameters()]  # peft's enable_adapters also sets these
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)
        for p, flag in zip(model.parameters(), trainable):
            p.requires_grad_(flag)


def scalings(model: torch.nn.Module) -> dict[str, float]:
    """{dotted name of an adapted layer: its scale s} (alpha / rank, or alpha / sqrt(rank) for rsLoRA)."""
    return {n: float(m.scaling[ADAPTER]) for n, m in lora_layers(model).items() if ADAPTER in m.scaling}


def _base_name(name: str) -> tuple[str | None, str | None]:
    """A parameter name of the adapted model -> (its name in the base model, or None for the adapter's
    own tensors and the originals ``modules_to_save`` replaces; the adapted layer's prefix when it is
    the base weight W that merging changes, else None)."""
    if f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name or ".original_module." in name:
        return None, None
    if ".base_layer." in name:
        prefix, leaf = name.split(".base_layer.", 1)
        return f"{prefix}.{leaf}", prefix if leaf == "weight" else None
    return name.replace(f".modules_to_save.{ADAPTER}.", "."), None


def merge_weight(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """W + s·B·A (W: [out, in], B: [out, r], A: [r, in]; in float32, cast back to W's dtype)."""
    return (w.float() + scale * (b.float() @ a.float())).to(w.dtype)


def merged_state_dict(state: Mapping[str, torch.Tensor], scale: Mapping[str, float],
                      device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """A state dict of an adapted model (peft's names) -> the base model's names with each adapted
    weight merged: ``W + s·B·A`` (B: [out, r], A: [r, in], product in float32, cast back to W's dtype).
    ``modules_to_save`` take their trained copy. Pure: tensors in, tensors out (also for ZeRO-3's
    consolidated state dict); ``device``: where the outputs go (the checkpoint writes from the CPU)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name, prefix = _base_name(key)
        if name is None:
            continue
        if prefix is not None and f"{prefix}.lora_A.{ADAPTER}.weight" in state:
            value = merge_weight(value, state[f"{prefix}.lora_A.{ADAPTER}.weight"],
                                 state[f"{prefix}.lora_B.{ADAPTER}.weight"], scale[prefix])
        out[name] = value if device is None else value.to(device)
    return out


def merged_module_tensors(model: torch.nn.Module, adapted_only: bool = False,
                          gather: Callable[[list[torch.nn.Parameter]], Any] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(base name, tensor) of the live model's merged weights, one parameter at a time (no full copy):
    every parameter with ``adapted_only=False``, else only the adapted layers' merged weights and the
    ``modules_to_save`` copies (the tensors that differ from the base). ``gather``: a context that
    makes partitioned parameters whole (ZeRO-3); each yielded tensor is then a copy."""
    scale, layers = scalings(model), lora_layers(model)
    whole = gather or (lambda params: contextlib.nullcontext())
    for key, p in model.named_parameters(remove_duplicate=False):
        name, prefix = _base_name(key)
        layer = layers.get(prefix) if prefix is not None else None
        if layer is not None and ADAPTER in layer.lora_A:
            a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            with whole([p, a, b]):
                merged = merge_weight(p, a, b, scale[prefix]).detach()
            yield name, merged
        elif name is not None and (not adapted_only or f".modules_to_save.{ADAPTER}." in key):
            with whole([p]):
                tensor = p.detach().clone() if gather else p.detach()
            yield name, tensor


@contextlib.contextmanager
def plain_save(model: torch.nn.Module) -> Iterator[None]:
    """``save_pretrained`` of the merged weights as a plain model (not peft's adapter-only format)."""
    loaded = getattr(model, "_hf_peft_config_loaded", False)
    model._hf_peft_config_loaded = False
    try:
        yield
    finally:
        model._hf_peft_config_loaded = loaded


def save_adapter(model: torch.nn.Module, folder: Path, state: Mapping[str, torch.Tensor] | None = None) -> None:
    """The adapter in peft's format (``adapter_config.json``, ``adapter_model.safetensors``);
    ``state``: the full state dict when the module's own would be partitioned (ZeRO-3)."""
    model.save_pretrained(folder, state_dict=dict(state) if state is not None else None, safe_serialization=True)


def adapter_problem(model: torch.nn.Module, folder: Path) -> str | None:
    """Why the adapter in ``folder`` does not fit ``model`` (a missing file, a layer the model lacks,
    a shape of another base), or None. Reads the adapter's tensors only."""
    from safetensors import safe_open

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        return f"no LoRA adapter in {folder} (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})"
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        return f"{folder} holds a {config.get('peft_type')} adapter; rlvr loads LoRA adapters"
    modules = dict(model.named_modules())
    base_name = config.get("base_model_name_or_path")
    another = f"an adapter for another base model{': ' + base_name if base_name else ''}"
    with safe_open(str(folder / ADAPTER_WEIGHTS), "pt") as f:
        for key in f.keys():
            name = key.removeprefix("base_model.model.")
            for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
                if not name.endswith(part):
                    continue
                prefix = name[: -len(part)]
                layer = modules.get(prefix)
                base = getattr(layer, "base_layer", layer)
                if not isinstance(base, torch.nn.Linear):
                    return f"the adapter in {folder} adapts {prefix}, which {type(model).__name__} does not have ({another})"
                want = base.in_features if dim == 1 else base.out_features
                got = f.get_slice(key).get_shape()[dim]
                if got != want:
                    return (f"the adapter in {folder} does not fit this model: {prefix} has "
                            f"{'in' if dim else 'out'}_features {want}, the adapter {got} ({another})")
    return None


def load_adapter(model: torch.nn.Module, folder: Path, trainable: bool) -> torch.nn.Module:
    """``folder``'s adapter into ``model`` (in place), checked first (``adapter_problem``)."""
    problem = adapter_problem(model, folder)
    if problem:
        raise UserError(problem)
    model.load_adapter(str(folder), adapter_name=ADAPTER, is_trainable=trainable)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable and is_adapter_param(name))
    return model


def merge_into_base(model: torch.nn.Module) -> torch.nn.Module:
    """The adapter folded into the weights (W + s·B·A) and removed: a plain HF model again (eval)."""
    from peft.utils import ModulesToSaveWrapper

    for name, layer in lora_layers(model).items():
        layer.merge(adapter_names=[ADAPTER])
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.modules_to_save[ADAPTER])
    model._hf_peft_config_loaded = False
    model.__dict__.pop("peft_config", None)
    model.requires_grad_(False)
    return model


def summary(model: torch.nn.Module) -> str:
    """``rank 8, alpha 16, float32 adapters on 28 layers, 90,112 trainable of 1,117,440 parameters (8.06%)``."""
    cfg = model.peft_config[ADAPTER]
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    dtypes = {str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters() if is_adapter_param(n)}
    return (f"rank {cfg.r}, alpha {cfg.lora_alpha:g}, {'/'.join(sorted(dtypes))} adapters on "
            f"{len(lora_layers(model))} layers, {trainable:,} trainable of "
            f"{total:,} parameters ({100 * trainable / max(total, 1):.2f}%)")
