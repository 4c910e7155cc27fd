"""``rlvr plan`` (and ``rlvr train ... --plan``): the GPU memory a training run needs per rank, before
it starts, from the model's ``config.json`` alone (no weights are read).

The config is found as the trainer would find the model: ``builtin:<name>`` and local folders
(``models.resolve_model_path``); a hub id from the local hub cache; else the copy of the published
``config.json`` shipped in ``rlvr_cli/assets/model_configs/<org>__<name>/`` (the hub ids of
``conf/model/*.yaml``); else the hub itself (where it can be reached). The model is then built on the
meta device (shapes, no storage): its parameter count, its largest layer and its linear layers (what
LoRA adapts, ``lora.trainable_parameters``) come from the real module tree.

The plan is for a GPU run: ``model.dtype=auto`` is bf16. Per GPU (P parameters, N data-parallel ranks,
L the largest layer's parameters, t LoRA's trainable parameters):

- **model states** (parameters, gradients, optimizer states). DeepSpeed: DeepSpeed's own estimators
  (``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_model_states_mem_needs``: bf16 weights,
  fp32 master weights and Adam moments in its optimizer): ZeRO-2 2P + 18P/N, ZeRO-3 18P/N + 4L,
  offload as DeepSpeed counts it; ZeRO-1 as ZeRO-2 plus its unpartitioned 16-bit gradients
  (2P - 2P/N); ZeRO-0 as ZeRO-2 on one rank. ``trainer=single`` (``trainer/precision.py``): fp32
  master weights 4P, fp32 gradients 4P (update phase only: dropped after each step), AdamW's two fp32
  moments 8P, and the bf16 casts autocast makes of the linear weights, kept for backward
  (``trainer.master_weights=model``: 2P + 2P + 4P, no casts).
- **LoRA** (``model.lora.rank > 0``, or ``model.adapter``: the rank and layers of its
  ``adapter_config.json``): only the adapters train, so the same per-parameter formulas apply to t
  (DeepSpeed's estimators called with t; one process: adapters stored as its precision stores
  trained weights, fp32 under ``master_weights=fp32``), plus the frozen base in the model dtype, 2P
  (ZeRO-3: 2P/N; ZeRO-3 with ``offload_param``: in CPU memory).
- **KL reference** (``algo.kl.enabled``): with LoRA nothing (the base with its adapters off); else a
  full copy in the compute dtype, 2P, partitioned under ZeRO-3 (2P/N, gathered a layer at a time).
- **activations** of the largest micro-batch: ``algo.max_tokens_per_micro_batch`` tokens, else
  ``algo.micro_batch_size`` rows × (``rollout.max_prompt_len`` + ``rollout.max_new_tokens``): the
  padded layout, an upper bound for the packed ones (``algo.use_remove_padding``). What each decoder
  layer saves for backward is listed in ``layer_saved_bytes``; with gradient checkpointing a layer
  keeps only its input and is recomputed in backward. The backward working set (one layer's saved
  set again, recomputed or being consumed, plus the MLP's and the residual stream's gradients) is
  added on top.
- **log-prob / entropy chunks** (``rollout/logprobs.py``): ``trainer.logprob_chunk_size`` tokens ×
  vocabulary at a time, ``logit_chunks``.
- **rollout**: with ``rollout.engine=vllm`` the engine's share, ``rollout.vllm.gpu_memory_utilization``
  × the GPU's memory (vLLM claims that much for its weights, activations and KV cache). On a GPU the
  engine sleeps during the update (``rollout.vllm.sleep``, level 2: weights and KV cache freed,
  ``rollout/vllm_engine.py``), so its share counts in the rollout phase only; awake (``sleep=false``)
  it counts in both. With the HF engine: the KV cache of ``rollout.batch_size`` sequences, the prefill
  working set, and under ZeRO-3 the full weights every rank gathers to generate.
- **runtime**: the CUDA context, cuBLAS/NCCL workspaces and allocator slack, ``RUNTIME_BYTES``.

The peak is the larger of the update phase and the rollout phase (and, under ZeRO-3, loading: every
rank holds the full bf16 model before DeepSpeed partitions it, no ``zero.Init``); it is compared with
``trainer.gpu_memory_gb`` (null: what ``torch.cuda.get_device_properties(0).total_memory`` reports,
or 80 GiB where no GPU is visible). When it does not fit, the verdict names the first change that
makes it fit, tried in order: ZeRO-3 (with several ranks), LoRA (rank 64), gradient checkpointing or a
smaller micro-batch, optimizer offload; where none does alone, the changes that fit together.
``check_before_train`` runs the same plan before a GPU run.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr_cli.errors import UserError
from rlvr_cli.typed import replace_at

if TYPE_CHECKING:  # the typed nodes import torch; the plan imports it only where it needs it
    from rlvr_cli.configs import TrainConfig
    from rlvr_cli.methods import MethodConfig
    from rlvr_cli.models import ModelConfig
    from rlvr_cli.rollout.config import RolloutConfig, VllmConfig
    from rlvr_cli.trainer.config import AlgoConfig, TrainerConfig

GiB = 1 << 30
DEFAULT_GPU_GIB = 80.0  # the plan's GPU where none is visible and trainer.gpu_memory_gb is null
RUNTIME_BYTES = 1 * GiB  # CUDA context, cuBLAS / NCCL workspaces, allocator slack (a rough constant)
TIGHT = 0.05  # headroom under this share of the GPU: "fits, tight"
LORA_RANK = 64  # the rank the verdict proposes
MODEL_CONFIGS = Path(__file__).parent / "assets" / "model_configs"
ADAPTED_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a causal LM: its config's dimensions and, from the meta-device module,
    its parameter count, its largest layer (a module's own parameters: DeepSpeed's rule) and the
    module itself (for LoRA's target layers)."""

    path: str
    source: str  # where the config.json came from
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int | None
    tied: bool
    qk_norm: bool  # per-head RMSNorm on q and k (Qwen3)
    params: int
    linear_params: int  # the weights of the linear layers (the LM head included): what autocast casts
    largest_layer: int
    largest_layer_name: str
    meta: Any = field(repr=False, compare=False, hash=False)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def kv_cache_bytes_per_token(self, dtype_bytes: int) -> int:
        """Keys and values of every layer for one token."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


def shipped_config(hub_id: str) -> Path | None:
    """The shipped copy of a hub model's published config.json (``<org>__<name>``), or None."""
    if hub_id.count("/") != 1:
        return None
    p = MODEL_CONFIGS / hub_id.replace("/", "__") / "config.json"
    return p if p.is_file() else None


def load_config(path: str, trust_remote_code: bool = False):
    """(transformers config, where it came from) for ``model.path``, without weights: a builtin or
    local folder; a hub id from the hub cache, the shipped copy, or the hub (in that order)."""
    from transformers import AutoConfig

    from rlvr_cli.models import resolve_model_path

    src = resolve_model_path(path)
    if Path(src).is_dir():
        if not (Path(src) / "config.json").is_file():
            raise UserError(f"model.path={path}: no config.json in {src}")
        return AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code), f"{src}/config.json"
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True), "hub cache"
    except Exception:  # noqa: BLE001 (not cached: any of transformers' errors)
        pass
    shipped = shipped_config(path)
    if shipped is not None:
        return AutoConfig.from_pretrained(shipped.parent), f"shipped {shipped.relative_to(MODEL_CONFIGS.parent.parent)}"
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), "hub"
    except Exception as e:  # noqa: BLE001
        have = sorted(p.name.replace("__", "/") for p in MODEL_CONFIGS.iterdir() if (p / "config.json").is_file())
        raise UserError(f"model.path={path}: no config.json for the memory plan (not cached, not shipped, hub: "
                        f"{str(e).splitlines()[0][:120]}); shipped: {', '.join(have)}") from None


@functools.lru_cache(maxsize=16)
def model_shape(path: str, trust_remote_code: bool = False) -> ModelShape:
    """The shape of ``model.path``'s model, built on the meta device (cached per path)."""
    import torch
    from transformers import AutoModelForCausalLM

    config, source = load_config(path, trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, ImportError) as e:
        raise UserError(f"model.path={path}: transformers cannot build {type(config).__name__} as a causal LM "
                        f"for the memory plan: {str(e).splitlines()[0][:160]}") from None

    def need(key: str) -> int:
        value = getattr(text, key, None)
        if value is None:
            raise UserError(f"model.path={path}: its config has no {key}; the memory plan needs it")
        return int(value)

    hidden, heads = need("hidden_size"), need("num_attention_heads")
    largest, largest_name = 0, ""
    for name, module in meta.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own > largest:
            largest, largest_name = own, name
    names = [n for n, _ in meta.named_modules()]
    return ModelShape(
        path=path, source=source, model_type=str(getattr(text, "model_type", "?")),
        hidden=hidden, intermediate=need("intermediate_size"), layers=need("num_hidden_layers"), heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads), vocab=need("vocab_size"),
        max_positions=getattr(text, "max_position_embeddings", None),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        qk_norm=any(n.endswith(".q_norm") for n in names),
        params=sum(p.numel() for p in meta.parameters()),  # a tied weight once
        linear_params=sum(m.weight.numel() for m in meta.modules() if isinstance(m, torch.nn.Linear)),
        largest_layer=largest, largest_layer_name=largest_name, meta=meta,
    )


# -------------------------------------------------------------------------------- precision
@dataclass(frozen=True)
class Precision:
    """Bytes per element: ``compute`` the forward's activations (model.dtype; auto = bf16 on a GPU),
    ``weights`` the trained parameters' storage; ``autocast``: fp32 weights run under bf16 autocast
    (``trainer=single`` with ``trainer.master_weights=fp32``, ``trainer/precision.py``)."""

    compute: int
    weights: int
    autocast: bool
    text: str

    @property
    def residual(self) -> int:
        """The residual stream's bytes: the embedding's output dtype, i.e. the weights' under autocast."""
        return self.weights if self.autocast else self.compute


def precision_of(dtype: str, deepspeed: bool, master_weights: str = "fp32") -> Precision:
    """The trainer's own rule (``trainer/precision.py``: ``pick_dtype`` and ``resolve_precision``) as it
    applies on a GPU, in bytes per element: ``model.dtype``, ``trainer.kind == deepspeed``,
    ``trainer.master_weights``."""
    import torch

    from rlvr_cli.models import pick_dtype
    from rlvr_cli.trainer.precision import resolve_precision

    cuda = torch.device("cuda")
    p = resolve_precision(pick_dtype(dtype, cuda), cuda, deepspeed, master_weights)
    text = p.describe() + (", DeepSpeed bf16 mode (fp32 master weights in its optimizer)"
                           if deepspeed and p.compute == torch.bfloat16 else "")
    return Precision(p.compute.itemsize, p.weights.itemsize, p.autocast_enabled, text)


# ------------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class MicroBatch:
    """The largest forward/backward of the update: ``rows`` padded rows of ``seq_len`` token places
    (``tokens`` in all), ``response_tokens`` of them scored by the LM head."""

    rows: int
    seq_len: int
    tokens: int
    response_tokens: int


def micro_batch(algo: AlgoConfig, rollout: RolloutConfig, shape: ModelShape) -> MicroBatch:
    new = rollout.max_new_tokens
    prompt = rollout.max_prompt_len
    if prompt is None:  # no prompt filter: the model's positions bound it
        prompt = max(1, int(shape.max_positions or 4096) - new)
    seq = prompt + new
    budget = algo.max_tokens_per_micro_batch
    if budget:
        rows = max(1, budget // seq)
        tokens = max(budget, seq)  # a row longer than the budget still runs, alone
    else:
        rows = algo.micro_batch_size
        tokens = rows * seq
    return MicroBatch(rows, seq, tokens, rows * new)


@dataclass(frozen=True)
class Adapters:
    """LoRA as the activations see it: the adapted linear layers (dotted names), the rank, and the
    bytes of an adapter input copy when lora_A saves its own (autocast, or adapters in another dtype)."""

    names: tuple[str, ...] = ()
    rank: int = 0
    adapter_bytes: int = 2

    @property
    def enabled(self) -> bool:
        return self.rank > 0


def attention_kind(attn: str | None) -> str:
    attn = str(attn or "sdpa")
    if attn.startswith("flash"):
        return "flash"
    return "eager" if attn == "eager" else "sdpa"


def _copy_bytes(in_bytes: int, prec: Precision, lora: Adapters) -> int | None:
    """Bytes per feature of the copy of its input a linear layer saves for its weight gradient, or
    None where it saves the input tensor itself. Full fine-tune: under autocast a bf16 cast of an fp32
    input (autocast casts activations per call; it caches only weight casts). LoRA (lora_A saves it):
    peft's cast to the adapters' dtype, then autocast's to bf16, wherever either changes the dtype."""
    a = prec.compute
    if not lora.enabled:
        return a if prec.autocast and in_bytes != a else None
    if prec.autocast:
        return None if lora.adapter_bytes == a and in_bytes == a else a
    return None if lora.adapter_bytes == in_bytes else lora.adapter_bytes


def _input_bytes(in_bytes: int, savers: int, prec: Precision, lora: Adapters) -> int:
    """Bytes per feature a linear layers' shared input costs when ``savers`` of the layers reading it
    save it (a frozen layer saves nothing): one copy per layer, or the tensor itself once."""
    if savers == 0:
        return 0
    copy_bytes = _copy_bytes(in_bytes, prec, lora)
    return in_bytes if copy_bytes is None else savers * copy_bytes


def layer_saved_bytes(shape: ModelShape, prec: Precision, attn: str, seq_len: int,
                      adapted: frozenset[str] = frozenset(), lora: Adapters = Adapters(),
                      first: bool = False) -> dict[str, float]:
    """Bytes per token one decoder layer (the Qwen2 / Qwen3 / Llama layout) saves for backward, by
    what saves it, without checkpointing. ``a`` the compute dtype's bytes, ``r`` the residual
    stream's (fp32 under autocast: the embedding's weights are), H hidden, Hq = heads·head_dim,
    Hkv = kv_heads·head_dim, I intermediate, S the row length (the attention mask's width):

    - each RMSNorm: its input in fp32 (saved by ``pow`` and by ``x * rsqrt``) 4H, the 1/rms per token
      4, and the normalised x in the input dtype (saved by ``weight *`` when the norm weight trains) rH;
    - the norm's output, as the linear layers reading it save it (``_input_bytes``): q, k, v after
      input_layernorm, gate and up after post_attention_layernorm;
    - attention: q after RoPE aHq; k and v as the kernel gets them: sdpa with a mask and eager repeat
      the kv heads to every head (aHq each), flash-attention takes them grouped (aHkv each); the output
      aHq, which is also o_proj's input (the kernels' output layout makes the reshape a view); sdpa and
      flash keep the fp32 log-sum-exp per head, 4·heads; sdpa turns the boolean mask into an additive
      one in every layer, a·S per token; eager keeps the fp32 softmax and its cast (4 + a)·heads·S
      instead; RoPE saves only its cos/sin tables (shared by the layers, ``activation_bytes``);
    - Qwen3's q_norm / k_norm: their inputs in fp32 4(Hq + Hkv), 1/rms per head, and the normalised
      values in the compute dtype when the norm weights train;
    - MLP: the gate projection (SiLU's input), SiLU's output and the up projection (the product's
      operands) 3aI, and the product, down_proj's input, aI (when down_proj trains or is adapted);
    - LoRA, per adapted layer: lora_A's output (rank values) saved by lora_B; an adapted o_proj or
      down_proj saves a copy of its input where ``_input_bytes`` says so. In the ``first`` layer
      under LoRA the frozen embedding's output needs no gradient: input_layernorm saves nothing, nor
      does the attention unless q, k or v is adapted.
    """
    a = prec.compute
    r = a if lora.enabled else prec.residual  # LoRA keeps the base (embedding, norms) in the model dtype
    full = not lora.enabled
    h, hq, hkv, inter = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    kind = attention_kind(attn)

    def savers(*leaves: str) -> int:
        return sum(1 for leaf in leaves if full or leaf in adapted)

    def norm() -> float:
        return 4 * h + 4 + (r * h if full else 0)

    out: dict[str, float] = {"input_layernorm": 0 if first and not full else norm(),
                             "q/k/v input": h * _input_bytes(r, savers("q_proj", "k_proj", "v_proj"), prec, lora),
                             "q, k, v": a * (hq + 2 * (hkv if kind == "flash" else hq))}
    if shape.qk_norm:
        out["q_norm, k_norm"] = 4 * (hq + hkv) + 4 * (shape.heads + shape.kv_heads) + (a * (hq + hkv) if full else 0)
    out["attention output"] = a * hq
    if kind == "eager":
        out["softmax (fp32) and its cast"] = (4 + (a if a != 4 else 0)) * shape.heads * seq_len
    else:
        out["log-sum-exp"] = 4 * shape.heads
        if kind == "sdpa":
            out["additive mask"] = a * seq_len
    if first and not full and not adapted & {"q_proj", "k_proj", "v_proj"}:
        for key in ("q, k, v", "q_norm, k_norm", "attention output", "softmax (fp32) and its cast", "log-sum-exp",
                    "additive mask"):
            out.pop(key, None)
        if "o_proj" in adapted:  # lora_A keeps o_proj's input itself: nothing else saved it
            out["o_proj input"] = hq * (_copy_bytes(a, prec, lora) or a)
    elif not full and "o_proj" in adapted:  # the attention output is saved anyway: only a copy adds
        out["o_proj input copy"] = hq * (_copy_bytes(a, prec, lora) or 0)
    out["post_attention_layernorm"] = norm()
    out["gate/up input"] = h * _input_bytes(r, savers("gate_proj", "up_proj"), prec, lora)
    out["mlp: gate, SiLU, up"] = 3 * a * inter
    out["mlp: gate·up (down_proj input)"] = inter * _input_bytes(a, savers("down_proj"), prec, lora)
    if not full:
        out["lora_A outputs"] = len(adapted) * lora.rank * (a if prec.autocast else lora.adapter_bytes)
    return out


@dataclass(frozen=True)
class Activations:
    """Bytes of the update's forward/backward over one micro-batch."""

    saved: int  # saved for backward when the forward ends (checkpointing: the layers' inputs)
    working: int  # the backward working set on top: one layer's saved set + its gradient buffers
    per_layer: int  # one decoder layer's saved set, without checkpointing
    gradient_checkpointing: bool

    @property
    def peak(self) -> int:
        return self.saved + self.working


def _layer_names(lora: Adapters, layers: int) -> list[frozenset[str]]:
    """Per decoder layer, the leaf names of its adapted linear layers."""
    per: list[set[str]] = [set() for _ in range(layers)]
    for name in lora.names:
        m = re.search(r"\.layers\.(\d+)\.(?:.*\.)?([^.]+)$", name)
        if m and int(m.group(1)) < layers:
            per[int(m.group(1))].add(m.group(2))
    return [frozenset(s) for s in per]


def activation_bytes(shape: ModelShape, mb: MicroBatch, prec: Precision, attn: str, checkpointing: bool,
                     lora: Adapters = Adapters()) -> Activations:
    """The micro-batch's activations (``layer_saved_bytes`` per layer), plus what lies outside the
    layers: the token ids the embedding saves (when it trains), the rotary cos/sin tables (saved by
    RoPE, shared by the layers), the final norm, and the LM head's input at the response tokens (when
    the head trains). With checkpointing each layer keeps its input hidden states (rH per token), and
    the arguments the checkpointed layers share stay referenced until the backward."""
    a = prec.compute
    r = a if lora.enabled else prec.residual
    full = not lora.enabled
    t = mb.tokens
    adapted = _layer_names(lora, shape.layers) if lora.enabled else [frozenset()] * shape.layers
    layer_sets = [sum(layer_saved_bytes(shape, prec, attn, mb.seq_len, ad, lora, first=i == 0).values())
                  for i, ad in enumerate(adapted)]
    ids = 8 if full else 0  # int64 token ids, saved by the embedding when it trains
    final_norm = 4 * shape.hidden + 4 + (r * shape.hidden if full else 0)
    outside = t * (ids + 2 * shape.head_dim * r + final_norm)
    outside += mb.response_tokens * shape.hidden * (a if full else 0)
    per_layer = int(max(layer_sets) * t)
    if checkpointing:
        # each layer keeps its input; the arguments every checkpointed layer holds until its recompute:
        # the position ids and the model's mask (boolean for sdpa, additive for eager)
        kind = attention_kind(attn)
        mask = mb.rows * mb.seq_len ** 2 * {"sdpa": 1, "eager": r}.get(kind, 0)
        saved = shape.layers * t * r * shape.hidden + outside + 8 * t + mask
    else:
        saved = sum(layer_sets) * t + outside
    # backward: the layer being differentiated (recomputed under checkpointing; its saved set already
    # counted otherwise, but its gradients are not): the MLP's three [T, I] gradients and the residual
    # stream's gradient and its copy
    grads = t * (3 * a * shape.intermediate + 2 * r * shape.hidden)
    working = (per_layer if checkpointing else 0) + grads
    return Activations(int(saved), int(working), per_layer, checkpointing)


@dataclass(frozen=True)
class LogitChunks:
    """The LM-head chunks of ``policy_token_stats`` over a micro-batch's response tokens."""

    saved: int  # held until the backward: every chunk's saved [C, V] tensors (no chunk checkpointing)
    working: int  # one chunk being computed or differentiated

    @property
    def peak(self) -> int:
        return self.saved + self.working


def logit_chunks(shape: ModelShape, mb: MicroBatch, chunk: int, grad_stats: int, checkpointed: bool,
                 compute: int) -> LogitChunks:
    """Each chunk of C ≤ ``trainer.logprob_chunk_size`` response tokens makes the [C, V] logits in the
    compute dtype, their fp32 temperature-scaled copy (saved by logsumexp), the fp32 softmax when the
    entropy carries a gradient (``grad_stats`` = 2: the scaled logits and the softmax, saved by
    softmax and by their product), and in backward the fp32 gradient of the logits and one more
    [C, V] fp32 temporary (the softmax backward). Checkpointed (``trainer.checkpoint_logits``; auto:
    vocabulary ≥ 32k) a chunk keeps only its inputs and is recomputed in backward, one at a time;
    otherwise every chunk's saved tensors stay until the backward: response tokens × V × 4 × grad_stats."""
    c = min(chunk, max(1, mb.response_tokens))
    working = c * shape.vocab * (compute + 4 * (grad_stats + 2))
    saved = 0 if checkpointed else mb.response_tokens * shape.vocab * 4 * grad_stats
    return LogitChunks(int(saved), int(working))


# ------------------------------------------------------------------------------ model states
def deepspeed_states(total: int, largest: int, stage: int, gpus_per_node: int, nodes: int, offload_optimizer: bool,
                     offload_param: bool) -> tuple[int, int, int, int]:
    """(parameters, gradients, optimizer states, CPU bytes) per GPU from DeepSpeed's estimators; the
    three GPU figures sum to the estimator's GPU figure (``total`` trainable parameters)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    world = gpus_per_node * nodes
    if stage == 3:
        cpu, gpu, largest_mem = estimate_zero3_model_states_mem_needs(
            total, largest, num_gpus_per_node=gpus_per_node, num_nodes=nodes, cpu_offload=offload_optimizer,
            cpu_offload_params=offload_param, zero_init=False)
        half = largest_mem // 2  # the gathered layer's 16-bit weights and its 16-bit gradient
        if offload_optimizer and offload_param:
            return half, gpu - half, 0, int(cpu)
        if offload_optimizer:
            return gpu - half, half, 0, int(cpu)
        params = int(2 * total / world) + half
        grads = int(4 * total / world) + half
        return params, grads, gpu - params - grads, int(cpu)
    ranks = (gpus_per_node, nodes) if stage >= 1 else (1, 1)  # ZeRO-0 partitions nothing
    cpu, gpu = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=ranks[0], num_nodes=ranks[1],
                                                     cpu_offload=offload_optimizer and stage >= 1)
    n = ranks[0] * ranks[1]
    if offload_optimizer and stage >= 1:
        return gpu, 0, 0, int(cpu)
    params = 2 * total
    grads = int(6 * total / n)  # 16-bit and fp32 gradient partitions
    extra = 2 * total - int(2 * total / n) if stage == 1 else 0  # ZeRO-1 keeps the full 16-bit gradients
    return params, grads + extra, gpu - params - grads, int(cpu)


# ------------------------------------------------------------------------------------- plan
@dataclass
class Row:
    item: str
    bytes: int
    phase: str  # all (resident) | update | rollout | load | cpu | total
    note: str = ""


@dataclass
class Plan:
    """Every figure in bytes, per GPU (``cpu_bytes``: per node)."""

    model: str
    config_source: str
    params: int
    largest_layer: int
    trainable: int
    lora_rank: int
    trainer: str
    world: int
    precision: str
    gpu_bytes: int
    gpu_source: str
    micro_batch: dict[str, int]
    parameters: int
    gradients: int
    optimizer: int
    frozen_base: int
    weight_copies: int
    reference: int
    activations: int
    activations_other: int  # with the other gradient-checkpointing setting
    gradient_checkpointing: bool
    logprob_chunks: int
    rollout_engine: str
    vllm: int
    vllm_in_update: int
    rollout_kv: int
    rollout_prefill: int
    gathered: int
    runtime: int
    cpu_bytes: int
    update_bytes: int
    rollout_bytes: int
    load_bytes: int
    peak_bytes: int
    peak_phase: str
    fits: bool
    headroom: int
    verdict: str = ""
    change: list[str] | None = None  # the overrides that make it fit (when it does not)
    rows: list[Row] = field(default_factory=list)

    @property
    def model_states(self) -> int:
        return self.parameters + self.gradients + self.optimizer

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def lora_spec(model_cfg: ModelConfig):
    """``model.lora`` (``LoraSpec``), or, for ``model.adapter`` (an adapter folder trained on: rank 0
    in the config), the adapter's own rank and layers from its ``adapter_config.json``."""
    from rlvr_cli.lora import ADAPTER_CONFIG, LoraSpec

    spec = LoraSpec.from_model_cfg(model_cfg)
    folder = model_cfg.adapter
    if spec.enabled or not folder or not (Path(folder) / ADAPTER_CONFIG).is_file():
        return spec
    adapter = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
    targets = adapter.get("target_modules") or spec.target_modules
    return LoraSpec.of({
        "rank": int(adapter.get("r", 0) or 0), "alpha": float(adapter.get("lora_alpha", spec.alpha) or spec.alpha),
        "target_modules": targets if isinstance(targets, str) else list(targets),
        "modules_to_save": list(adapter.get("modules_to_save") or ())})


def gpu_memory(trainer: TrainerConfig) -> tuple[int, str]:
    """(bytes per GPU, where the figure comes from)."""
    gb = trainer.gpu_memory_gb
    if gb is not None:
        return int(gb * GiB), "trainer.gpu_memory_gb"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), f"cuda:0 {props.name}"
    return int(DEFAULT_GPU_GIB * GiB), "assumed: no GPU here; set trainer.gpu_memory_gb"


def _grad_stats(method: MethodConfig) -> int:
    """[C, V] fp32 tensors a chunk saves for the loss's gradient: the scaled logits (log-probs), plus
    the softmax when the method's loss differentiates the entropy."""
    from rlvr_cli.methods import build_method

    grads = set(build_method(method).needs.update_grad)
    return 1 + int(bool(grads - {"logprobs"}))


def _engine(rollout: RolloutConfig) -> str:
    if rollout.engine == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    return rollout.engine


def _trainer_text(trainer: TrainerConfig) -> str:
    if trainer.kind != "deepspeed":
        return "single"
    off = [k for k in ("optimizer", "param") if getattr(trainer, f"offload_{k}")]
    return f"ZeRO-{trainer.zero_stage}" + (f" (offload {', '.join(off)})" if off else "")


def build_plan(cfg: Any, world: int | None = None, gpu_bytes: int | None = None, suggest: bool = True) -> Plan:
    """The memory plan of a composed ``rlvr train`` config (a ``TrainConfig``, or a DictConfig or plain
    mapping, loaded first)."""
    from rlvr_cli.configs import load_train_config, world_size
    from rlvr_cli.lora import target_module_names, trainable_parameters

    c = load_train_config(cfg, world)
    model_cfg, trainer, algo, rollout = c.model, c.trainer, c.algo, c.rollout
    shape = model_shape(model_cfg.path, model_cfg.trust_remote_code)
    deepspeed = trainer.kind == "deepspeed"
    world = world_size(trainer) if world is None else world
    nodes = trainer.nodes if deepspeed else 1
    gpus_per_node = max(1, world // nodes)
    stage = trainer.zero_stage if deepspeed else -1
    off_opt = trainer.offload_optimizer and deepspeed
    off_param = trainer.offload_param and stage == 3
    total_gpu, gpu_source = (gpu_bytes, "given") if gpu_bytes is not None else gpu_memory(trainer)
    prec = precision_of(model_cfg.dtype, deepspeed, trainer.master_weights)
    a = prec.compute
    spec = lora_spec(model_cfg)
    p = shape.params
    n3 = world if stage == 3 else 1  # ranks the weights are partitioned over

    # --- model states
    cpu = 0
    frozen = 0
    copies = 0
    if spec.enabled:
        trainable = trainable_parameters(shape.meta, spec)
        # the base in the compute dtype (trainer/loop.py); the adapters: DeepSpeed casts the whole module
        # to its 16-bit dtype, one process keeps them as its precision stores trained weights (fp32
        # master weights: fp32 adapters under bf16 autocast)
        lora = Adapters(tuple(target_module_names(shape.meta, spec.target_modules)), spec.rank,
                        a if deepspeed else prec.weights)
        frozen = 0 if off_param else int(a * p / n3)
    else:
        trainable, lora = p, Adapters()
    if deepspeed and a == 2:
        params, grads, optim, cpu = deepspeed_states(trainable, shape.largest_layer, stage, gpus_per_node, nodes,
                                                     off_opt, off_param)
        if spec.enabled and off_param:
            cpu += a * p  # the frozen base sits with the offloaded partitions
    elif deepspeed:  # fp32 under DeepSpeed: no 16-bit copies (the estimators assume them)
        params = 4 * trainable // n3
        grads = 4 * trainable // (world if stage >= 2 else 1)
        optim = 0 if off_opt else 8 * trainable // (world if stage >= 1 else 1)
        cpu = 8 * trainable // (world if stage >= 1 else 1) if off_opt else 0
    else:
        w = lora.adapter_bytes if spec.enabled else prec.weights
        params, grads, optim = w * trainable, w * trainable, 2 * w * trainable
        if prec.autocast:  # bf16 casts of the fp32 linear weights (adapters), cached by autocast and saved
            copies = a * (trainable if spec.enabled else shape.linear_params)
    # --- KL reference
    reference = 0
    if algo.kl.enabled and not spec.enabled:
        reference = 0 if off_param else int(a * p / n3) + (a * shape.largest_layer if stage == 3 else 0)
    # --- activations and the LM-head chunks
    mb = micro_batch(algo, rollout, shape)
    gc = model_cfg.gradient_checkpointing
    attn = model_cfg.attn_implementation or "sdpa"
    act = activation_bytes(shape, mb, prec, attn, gc, lora)
    other = activation_bytes(shape, mb, prec, attn, not gc, lora)
    ckpt_logits = trainer.checkpoint_logits
    ckpt_logits = shape.vocab >= 32_000 if ckpt_logits == "auto" else ckpt_logits
    chunks = logit_chunks(shape, mb, trainer.logprob_chunk_size, _grad_stats(c.method), ckpt_logits, a).peak
    # --- rollout
    engine = _engine(rollout)
    vllm_cfg = rollout.vllm
    vllm = vllm_update = kv = prefill = gathered = 0
    if engine == "vllm":
        if vllm_cfg.kv_cache_memory_bytes:
            vllm = a * p + vllm_cfg.kv_cache_memory_bytes  # its weights + the fixed KV cache
        else:
            vllm = int(vllm_cfg.gpu_memory_utilization * total_gpu)
        vllm_update = 0 if vllm_cfg.sleep else vllm
    else:
        batch = rollout.batch_size
        kv = batch * mb.seq_len * shape.kv_cache_bytes_per_token(a)
        prompts = batch if rollout.sampler == "hf" else math.ceil(batch / algo.group_size)
        prompt_len = mb.seq_len - rollout.max_new_tokens
        # the prefill's largest transients (gate, up, their product) + q/k/v/out, and the sampling
        # logits of every row (fp32, with the filtered copy)
        prefill = prompts * prompt_len * a * (3 * shape.intermediate + 4 * shape.hidden) + batch * shape.vocab * 4 * 2
        if stage == 3:
            gathered = int(a * p * (1 - 1 / world)) if not off_param else a * p
    # --- phases
    # one process drops its gradients after each step (zero_grad(set_to_none)); DeepSpeed keeps its
    # gradient partitions allocated
    grads_resident = grads if deepspeed else 0
    resident = params + grads_resident + optim + frozen + reference
    update = resident + (grads - grads_resident) + copies + act.peak + chunks + vllm_update
    rollout_b = resident + vllm + kv + prefill + gathered
    load = a * p if stage == 3 else 0
    phases = {"update": update, "rollout": rollout_b, "load": load}
    peak_phase = max(phases, key=phases.__getitem__)
    peak = phases[peak_phase] + RUNTIME_BYTES
    plan = Plan(
        model=shape.path, config_source=shape.source, params=p, largest_layer=shape.largest_layer,
        trainable=trainable, lora_rank=spec.rank, trainer=_trainer_text(trainer), world=world,
        precision=prec.text, gpu_bytes=total_gpu, gpu_source=gpu_source, micro_batch=dataclasses.asdict(mb),
        parameters=params, gradients=grads, optimizer=optim, frozen_base=frozen, weight_copies=copies,
        reference=reference, activations=act.peak, activations_other=other.peak, gradient_checkpointing=gc,
        logprob_chunks=chunks, rollout_engine=engine, vllm=vllm, vllm_in_update=vllm_update, rollout_kv=kv,
        rollout_prefill=prefill, gathered=gathered, runtime=RUNTIME_BYTES, cpu_bytes=cpu, update_bytes=update,
        rollout_bytes=rollout_b, load_bytes=load, peak_bytes=peak, peak_phase=peak_phase,
        fits=peak <= total_gpu, headroom=total_gpu - peak,
    )
    plan.rows = _rows(plan, shape, mb, prec, act, other, spec, stage, ckpt_logits, vllm_cfg, c)
    if suggest and not plan.fits:
        plan.change, fitted = _first_fit(c, world, total_gpu)
        plan.verdict = _verdict(plan, fitted)
    else:
        plan.verdict = _verdict(plan, None)
    return plan


def gib(n: float) -> str:
    return f"{n / GiB:.1f}"


def _rows(plan: Plan, shape: ModelShape, mb: MicroBatch, prec: Precision, act: Activations, other: Activations,
          spec, stage: int, ckpt_logits: bool, vllm_cfg: VllmConfig, c: TrainConfig) -> list[Row]:
    n = plan.world
    deepspeed = stage >= 0
    what = "adapter " if spec.enabled else ""
    if deepspeed and prec.compute == 2:
        est = f"DeepSpeed estimate_zero{3 if stage == 3 else 2}_model_states_mem_needs"
        how = {3: f"bf16 partition /{n} + gathered largest layer ({shape.largest_layer_name})",
               2: "bf16, whole", 1: "bf16, whole", 0: "bf16, whole"}[stage]
        if stage == 3 and c.trainer.offload_param:
            how = f"the gathered largest layer ({shape.largest_layer_name}); partitions in CPU memory"
        rows = [Row(f"{what}parameters", plan.parameters, "all", f"{how}; {est}"),
                Row(f"{what}gradients", plan.gradients, "all",
                    "in CPU memory (offload)" if plan.gradients == 0 else
                    "the gathered layer's 16-bit gradient; fp32 partitions in CPU memory"
                    if stage == 3 and c.trainer.offload_optimizer else
                    f"16-bit + fp32, partitioned /{n if stage >= 2 else 1}" + (" (ZeRO-1: 16-bit whole)" if stage == 1 else "")),
                Row(f"{what}optimizer states", plan.optimizer, "all",
                    "in CPU memory (offload)" if plan.optimizer == 0 else
                    f"fp32 master + Adam m, v, partitioned /{n if stage >= 1 else 1}")]
    else:
        w = plan.parameters // max(1, plan.trainable)
        name = {4: "fp32", 2: "bf16"}.get(w, f"{w} B")
        rows = [Row(f"{what}parameters", plan.parameters, "all", f"{name} ({w} B each)"),
                Row(f"{what}gradients", plan.gradients, "update", f"{name}; dropped after each step"),
                Row(f"{what}optimizer states", plan.optimizer, "all", f"AdamW m, v in {name}")]
        if plan.weight_copies:
            rows.append(Row("autocast bf16 weight copies", plan.weight_copies, "update",
                            "cast once per forward, kept for backward"))
    if spec.enabled:
        rows.append(Row("frozen base weights", plan.frozen_base, "all",
                        f"rank {spec.rank}: {plan.trainable / 1e6:.1f}M trainable; base in the model dtype"
                        + (f", partitioned /{n}" if stage == 3 else "")
                        + (" (offloaded)" if plan.frozen_base == 0 else "")))
    if c.algo.kl.enabled:
        rows.append(Row("KL reference model", plan.reference, "all",
                        "LoRA: the base with adapters off, no copy" if spec.enabled else
                        "bf16 copy" + (f", partitioned /{n}" if stage == 3 else ", whole")))
    gc = "on" if act.gradient_checkpointing else "off"
    rows.append(Row("activations", plan.activations, "update",
                    f"{mb.rows} rows x {mb.seq_len} tokens = {mb.tokens} tokens, checkpointing {gc} "
                    f"(saved {gib(act.saved)} + backward {gib(act.working)}); "
                    f"checkpointing {'off' if act.gradient_checkpointing else 'on'}: {gib(other.peak)} GiB"))
    chunk = c.trainer.logprob_chunk_size
    rows.append(Row("log-prob / entropy chunks", plan.logprob_chunks, "update",
                    f"{min(chunk, mb.response_tokens)} tokens x {shape.vocab} vocab, fp32; "
                    f"chunk checkpointing {'on' if ckpt_logits else 'off (every chunk kept)'}"))
    if plan.rollout_engine == "vllm":
        util = vllm_cfg.gpu_memory_utilization
        how = ("its weights + kv_cache_memory_bytes" if vllm_cfg.kv_cache_memory_bytes
               else f"gpu_memory_utilization {util} x {gib(plan.gpu_bytes)} GiB")
        rows.append(Row("vLLM engine", plan.vllm, "rollout", how))
        rows.append(Row("vLLM during the update", plan.vllm_in_update, "update",
                        "awake (sleep=false)" if plan.vllm_in_update else
                        "asleep (level 2: weights and KV cache freed)"))
    else:
        batch = c.rollout.batch_size
        rows.append(Row("HF rollout KV cache", plan.rollout_kv, "rollout",
                        f"{batch} sequences x {mb.seq_len} tokens x "
                        f"{shape.kv_cache_bytes_per_token(prec.compute) // 1024} KiB"))
        rows.append(Row("HF prefill + sampling logits", plan.rollout_prefill, "rollout", "transient"))
        if stage == 3:
            rows.append(Row("ZeRO-3 gathered weights", plan.gathered, "rollout", "generation gathers the full policy"))
    if plan.load_bytes:
        rows.append(Row("loading", plan.load_bytes, "load", "full bf16 copy per GPU before DeepSpeed partitions it"))
    rows.append(Row("CUDA context, workspaces", plan.runtime, "all", "rough constant"))
    if plan.cpu_bytes and c.trainer.offload_optimizer:
        rows.append(Row("CPU memory per node", plan.cpu_bytes, "cpu", "DeepSpeed's estimate; not on the GPU"))
    return rows


def _with(c: TrainConfig, **paths: Any) -> TrainConfig:
    """A copy of ``c`` with ``a__b=value`` set at ``a.b``."""
    return replace_at(c, {dotted.replace("__", "."): value for dotted, value in paths.items()})


Change = tuple[list[str], Any]  # (the overrides as typed, config -> changed config)


def _changes(c: TrainConfig, world: int) -> list[list[Change]]:
    """The verdict's changes, in order, in groups (the options of one kind, mildest first): ZeRO-3
    (several ranks), LoRA, gradient checkpointing then halving the micro-batch, optimizer offload."""
    model, trainer, algo = c.model, c.trainer, c.algo
    deepspeed = trainer.kind == "deepspeed"
    stage = trainer.zero_stage if deepspeed else -1
    groups: list[list[Change]] = []
    if world > 1 and deepspeed and stage != 3:
        groups.append([(["trainer.zero_stage=3"], lambda x: _with(x, trainer__zero_stage=3))])
    if not model.lora.rank:
        groups.append([([f"model.lora.rank={LORA_RANK}"], lambda x: _with(x, model__lora__rank=LORA_RANK))])
    smaller: list[Change] = []
    gc: list[str] = []
    if not model.gradient_checkpointing:
        gc = ["model.gradient_checkpointing=true"]
        smaller.append((list(gc), lambda x: _with(x, model__gradient_checkpointing=True)))
    key = "max_tokens_per_micro_batch" if algo.max_tokens_per_micro_batch else "micro_batch_size"
    size, floor = getattr(algo, key), (1 if key == "micro_batch_size" else 256)
    while size > floor:
        size = max(floor, size // 2)
        smaller.append(([*gc, f"algo.{key}={size}"],
                        lambda x, n=size: _with(x, model__gradient_checkpointing=True, **{f"algo__{key}": n})))
    if smaller:
        groups.append(smaller)
    if not deepspeed:
        groups.append([(["trainer=zero2_offload"], lambda x: _with(
            x, trainer__kind="deepspeed", trainer__zero_stage=2, trainer__offload_optimizer=True,
            trainer__offload_param=False, trainer__gpus=1, trainer__nodes=1))])
    elif not trainer.offload_optimizer:
        ovr = ["trainer.offload_optimizer=true"] if stage >= 2 else \
            ["trainer.zero_stage=2", "trainer.offload_optimizer=true"]
        groups.append([(ovr, lambda x: _with(x, trainer__zero_stage=max(2, stage), trainer__offload_optimizer=True))])
    elif stage == 3 and not trainer.offload_param:
        groups.append([(["trainer.offload_param=true"], lambda x: _with(x, trainer__offload_param=True))])
    return groups


def _first_fit(c: TrainConfig, world: int, total_gpu: int) -> tuple[list[str] | None, Plan | None]:
    """The overrides of the first change whose plan fits, and that plan. Where no single change fits,
    the kinds of change accumulate in the same order (each kind at its strongest until one on top
    fits), then each earlier kind backs off to the mildest option that still fits (or goes); the
    result is ``["together:", ...]``. (None, None) where even all of them together do not fit."""
    groups = _changes(c, world)

    def plan_of(choice: Mapping[int, int]) -> Plan:  # kind -> its option
        changed = c
        for g, o in sorted(choice.items()):
            changed = groups[g][o][1](changed)
        ranks = world if changed.trainer.kind == "deepspeed" else 1
        return build_plan(changed, world=ranks, gpu_bytes=total_gpu, suggest=False)

    def overrides(choice: Mapping[int, int]) -> list[str]:
        out: list[str] = []
        for g, o in sorted(choice.items()):
            out += [x for x in groups[g][o][0] if x not in out]
        return out

    for g, group in enumerate(groups):
        for o in range(len(group)):
            p = plan_of({g: o})
            if p.fits:
                return overrides({g: o}), p
    choice: dict[int, int] = {}
    for g, group in enumerate(groups):
        fit = next(((o, p) for o in range(len(group)) if choice and (p := plan_of({**choice, g: o})).fits), None)
        if fit is None:
            choice[g] = len(group) - 1
            continue
        choice[g], best = fit
        for h in [k for k in sorted(choice) if k != g]:
            for o in [None, *range(choice[h])]:  # drop it, else its mildest option that still fits
                trial = {k: v for k, v in choice.items() if k != h} if o is None else {**choice, h: o}
                if (p := plan_of(trial)).fits:
                    choice, best = trial, p
                    break
        return ["together:", *overrides(choice)], best
    return None, None


def _verdict(plan: Plan, fitted: Plan | None) -> str:
    where = f"{plan.world}x{gib(plan.gpu_bytes)} GiB" + (" (assumed)" if plan.gpu_source.startswith("assumed") else "")
    head = f"peak {gib(plan.peak_bytes)} GiB ({plan.peak_phase})"
    if plan.fits:
        tight = " (tight)" if plan.headroom < TIGHT * plan.gpu_bytes else ""
        return f"plan: fits on {where}: {head}, headroom {gib(plan.headroom)} GiB{tight}"
    line = f"plan: does not fit on {where}: {head} > {gib(plan.gpu_bytes)} GiB per GPU"
    if plan.change and fitted is not None:
        if plan.change[0] == "together:":
            return (f"{line}; no single change fits, together: {' '.join(plan.change[1:])} "
                    f"(peak {gib(fitted.peak_bytes)} GiB)")
        return f"{line}; first change that fits: {' '.join(plan.change)} (peak {gib(fitted.peak_bytes)} GiB)"
    return f"{line}; neither ZeRO-3, LoRA, a smaller micro-batch nor offload makes it fit"


# ------------------------------------------------------------------------------------ output
def render(plan: Plan):
    """The plan as a rich table."""
    from rich.table import Table

    title = (f"memory plan per GPU: {plan.model} ({plan.params / 1e9:.2f}B parameters"
             + (f", LoRA rank {plan.lora_rank}" if plan.lora_rank else ", full fine-tune")
             + f"), trainer {plan.trainer}, {plan.world} rank{'s' if plan.world > 1 else ''}, {plan.precision}")
    table = Table(title=title, caption=f"config.json: {plan.config_source}; GPU: {gib(plan.gpu_bytes)} GiB "
                                       f"({plan.gpu_source}); rollout: {plan.rollout_engine}", title_justify="left")
    table.add_column("item", style="cyan")
    table.add_column("GiB", justify="right")
    table.add_column("phase")
    table.add_column("how it is counted")
    for row in plan.rows:
        table.add_row(row.item, gib(row.bytes), row.phase, row.note)
    table.add_section()
    table.add_row("update phase", gib(plan.update_bytes + plan.runtime), "", "resident + update rows")
    table.add_row("rollout phase", gib(plan.rollout_bytes + plan.runtime), "", "resident + rollout rows")
    table.add_row("[bold]peak", f"[bold]{gib(plan.peak_bytes)}", plan.peak_phase,
                  f"of {gib(plan.gpu_bytes)} GiB: headroom {gib(plan.headroom)} GiB")
    return table


def print_plan(cfg: Any) -> Plan:
    """``rlvr plan``: the table and the verdict line."""
    from rlvr_cli.progress import console

    plan = build_plan(cfg)
    console.print(render(plan))
    print(plan.verdict, flush=True)  # one line, never wrapped (greppable)
    return plan


def check_before_train(cfg: Any) -> str | None:
    """Before a GPU run (or where ``trainer.gpu_memory_gb`` is set): print the plan's verdict (rank 0)
    and refuse, with a ``UserError``, a run the plan says cannot fit, unless
    ``trainer.ignore_memory_plan=true``. Returns the verdict, or None where no plan was made (no GPU,
    or the plan itself failed: that never stops a run)."""
    import os

    import torch

    from rlvr_cli.configs import load_train_config

    c = load_train_config(cfg)
    if c.trainer.gpu_memory_gb is None and not torch.cuda.is_available():
        return None
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        plan = build_plan(c)
    except Exception as e:  # noqa: BLE001 (the plan is advice: a model it cannot read still trains)
        if main:
            print(f"plan: skipped ({str(e).splitlines()[0] if str(e) else type(e).__name__})", flush=True)
        return None
    if main:
        print(plan.verdict, flush=True)
    if not plan.fits and not c.trainer.ignore_memory_plan:
        raise UserError(f"{plan.verdict.removeprefix('plan: ')} (rlvr plan shows the table; "
                        f"trainer.ignore_memory_plan=true starts it anyway)")
    return plan.verdict
