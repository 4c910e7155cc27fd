"""A colocated vLLM engine: one ``vllm.LLM`` inside each training process (TRL's colocate mode,
verl's hybrid engine), pushed the trainer's weights after every optimizer step without a restart.

- **Start**: the engine is built from a folder holding only the policy's ``config.json`` and
  tokenizer, with ``load_format="dummy"``; its weights come from the trainer (also after a resume),
  so a hub id, a local folder and ``builtin:`` models start the same way and the model's
  ``generation_config`` never reaches the sampler (``generation_config="vllm"``).
- **Weight sync** (``push_weights``): the trainer's parameters in buckets of ``sync_bucket_mb``,
  streamed into vLLM's in-place ``reload_weights`` (same process: no copy through a socket), then
  the prefix cache is reset (its KV was computed with the old weights). Under ZeRO-3 each bucket is
  gathered, loaded and released in turn, so at most one bucket exists in full on top of the
  partitions. Names come from ``named_parameters(remove_duplicate=False)``, so a tied ``lm_head.weight``
  travels with the embedding it shares (a push without it leaves vLLM's output layer stale when the
  engine does not tie them itself).
- **Sleep** (GPU): after sampling the engine drops its KV cache and weights (``sleep(level=2)``);
  before the next sampling it wakes the weights, takes the push, then wakes the KV cache (TRL's
  order). On CPU sleep is a no-op in vLLM, so it is skipped.
- **Sampling**: one request per response with its own seed, drawn from torch's global generator
  (seeded and checkpointed by the trainer: a resumed run samples what the uninterrupted one would);
  temperature, top-p, no top-k/min-p/penalties, ``max_tokens``, stop token ids and stop strings;
  ``logprobs_mode="processed_logprobs"`` so the reported log-probs are of the distribution sampled
  (logits / temperature), the same quantity the trainer's log-softmax computes.

Known traps handled here (``../shared/docs/environment.md``): the in-process engine needs
``VLLM_ENABLE_V1_MULTIPROCESSING=0``; vLLM replaces ``torch.set_num_threads`` with a no-op and drops
torch to one thread on CPU (both restored after start); ``LLM(seed=)`` reseeds the caller's global RNG
(its state is saved and restored); ``torch.compile`` start-up is skipped on CPU (``enforce_eager``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from rlvr_cli import dist as ddp
from rlvr_cli.errors import UserError
from rlvr_cli.lora import has_lora, merged_module_tensors
from rlvr_cli.rollout.config import SamplingSpec, VllmConfig
from rlvr_cli.rollout.stopping import response_mask
from rlvr_cli.typed import load
from rlvr_cli.types import Prompt, Rollouts

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _prepare_env(device: torch.device) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if device.type == "cpu":
        os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")


@contextlib.contextmanager
def _kept_process_state():
    """vLLM's start changes the caller's RNGs (``seed=``) and torch's thread count / setter: undo both."""
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    rng = (torch.get_rng_state(), random.getstate(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    np_state = None
    with contextlib.suppress(ImportError):
        import numpy as np

        np_state = np.random.get_state()
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        set_threads(threads)
        torch.set_rng_state(rng[0])
        random.setstate(rng[1])
        if rng[2] is not None:
            torch.cuda.set_rng_state_all(rng[2])
        if np_state is not None:
            import numpy as np

            np.random.set_state(np_state)


@contextlib.contextmanager
def _quiet(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def weight_buckets(model: torch.nn.Module, bucket_bytes: int, zero3: bool = False) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """The model's full parameters as lists of (HF name, tensor) of about ``bucket_bytes`` each.

    Tied parameters appear under every name (``lm_head.weight`` with ``model.embed_tokens.weight``).
    Under ZeRO-3 a bucket's partitions are gathered for the duration of its ``yield`` only; the
    tensors must be consumed (copied into the engine) before the next bucket is requested."""
    named = list(model.named_parameters(remove_duplicate=False))
    bucket: list[tuple[str, torch.nn.Parameter]] = []
    size = 0
    for i, (name, p) in enumerate(named):
        bucket.append((name, p))
        size += (p.ds_numel if zero3 and hasattr(p, "ds_numel") else p.numel()) * p.element_size()
        if size >= bucket_bytes or i == len(named) - 1:
            if zero3:
                import deepspeed

                unique = list({id(q): q for _, q in bucket}.values())
                with deepspeed.zero.GatheredParameters(unique, modifier_rank=None):
                    yield [(n, q.data) for n, q in bucket]
            else:
                yield [(n, q.detach()) for n, q in bucket]
            bucket, size = [], 0


@contextlib.contextmanager
def _gathered(params: list[torch.nn.Parameter]):
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def _stream(buckets: Iterator[list[tuple[str, torch.Tensor]]], copy: bool) -> Iterator[tuple[str, torch.Tensor]]:
    for bucket in buckets:
        for name, tensor in bucket:
            # under ZeRO-3 the gathered tensor is released after its bucket: hand over a copy
            yield name, tensor.clone() if copy else tensor


class VLLMEngine:
    """``rollout.engine=vllm``. ``weights_version()`` is the trainer's optimizer-step count: the
    engine pushes weights before sampling whenever it changed (and once at start)."""

    name = "vllm"

    def __init__(self, model: torch.nn.Module, tokenizer, *, device: torch.device, dtype: torch.dtype,
                 max_model_len: int, cfg: VllmConfig | Mapping[str, Any], seed: int = 0,
                 weights_version: Callable[[], int] | None = None, zero3: bool = False):
        cfg = load(VllmConfig, cfg, "rollout.vllm.")
        if cfg.tensor_parallel_size != 1:
            # the ranks of a TP group would have to sample the same prompts; the loop gives each rank its own
            raise UserError("rollout.vllm.tensor_parallel_size > 1 is not supported yet: each rank runs its own "
                            "engine on its own prompts (tensor_parallel_size=1)")
        _prepare_env(device)
        self.model, self.tokenizer, self.device, self.zero3 = model, tokenizer, device, zero3
        self.weights_version = weights_version or (lambda: 0)
        self.cfg, self.seed = cfg, seed
        self.bucket_bytes = int(cfg.sync_bucket_mb * 2**20)
        self.sleep_enabled = cfg.sleep and device.type == "cuda"
        self.sleeping = False
        self.synced_version: int | None = None
        self.sync_s = 0.0  # seconds of the last push
        self.sync_s_total = 0.0  # of every push so far (the loop books each step's share as timing_s/weight_sync)
        self.folder = tempfile.mkdtemp(prefix="rlvr_vllm_")
        model.config.save_pretrained(self.folder)  # config only: the weights come from the trainer
        tokenizer.save_pretrained(self.folder)
        with _kept_process_state():
            from vllm import LLM

            self.llm = LLM(**self._engine_kwargs(dtype, max_model_len))
        self.push_weights()

    def _engine_kwargs(self, dtype: torch.dtype, max_model_len: int) -> dict[str, Any]:
        c, cpu = self.cfg, self.device.type == "cpu"
        kw: dict[str, Any] = dict(
            model=self.folder, tokenizer=self.folder, load_format="dummy", dtype=DTYPE_NAMES[dtype],
            max_model_len=int(max_model_len), seed=self.seed, generation_config="vllm",
            logprobs_mode="processed_logprobs", enable_prefix_caching=c.prefix_caching,
            enforce_eager=cpu if c.enforce_eager is None else c.enforce_eager,
            gpu_memory_utilization=c.gpu_memory_utilization, tensor_parallel_size=c.tensor_parallel_size,
        )
        if cpu:
            # a partly prefilled request discards its sampled token and rewinds its seeded generator,
            # which a CPU generator cannot ("CPU Generator does not use offset"): prefill whole prompts
            kw["enable_chunked_prefill"] = False
        if c.max_num_seqs:
            kw["max_num_seqs"] = c.max_num_seqs
        kv = c.kv_cache_memory_bytes or (256 * 2**20 if cpu else None)
        if kv:
            kw["kv_cache_memory_bytes"] = int(kv)
        if self.sleep_enabled:
            kw["enable_sleep_mode"] = True
        if ddp.world_size() > 1:
            kw["distributed_executor_backend"] = "external_launcher"  # one engine per training rank
        return kw

    # ------------------------------------------------------------------------------------ weights
    @torch.no_grad()
    def push_weights(self) -> float:
        """Copy the trainer's current weights into the engine; returns the seconds it took."""
        t0 = time.perf_counter()
        # one reload call over a lazy stream: vLLM's layerwise reload loads each of its layers when
        # all of that layer's tensors have arrived (q/k/v fused, kernel-format repacking on CPU)
        if has_lora(self.model):
            # LoRA: the merged weights under the base's names; after the first push only the adapted
            # layers change, so only their merged tensors travel (TRL's colocate path merges and pushes)
            weights = merged_module_tensors(self.model, adapted_only=self.synced_version is not None,
                                            gather=_gathered if self.zero3 else None)
        else:
            weights = _stream(weight_buckets(self.model, self.bucket_bytes, self.zero3), copy=self.zero3)
        with _quiet("vllm.model_executor.model_loader.reload"):  # "RotaryEmbedding: Failed to load" (no weights)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.synced_version = self.weights_version()
        self.sync_s = time.perf_counter() - t0
        self.sync_s_total += self.sync_s
        return self.sync_s

    def _ready(self) -> None:
        """Awake, with the trainer's current weights."""
        stale = self.synced_version != self.weights_version()
        if self.sleeping:
            self.llm.wake_up(tags=["weights"])
        if stale or self.sleeping:  # level-2 sleep discarded the weights: push them again
            self.push_weights()
        if self.sleeping:
            self.llm.wake_up(tags=["kv_cache"])
            self.sleeping = False

    def sleep(self) -> None:
        if self.sleep_enabled and not self.sleeping:
            self.llm.sleep(level=self.cfg.sleep_level)
            self.sleeping = True

    # ----------------------------------------------------------------------------------- sampling
    def sampling_params(self, spec: SamplingSpec, seed: int):
        from vllm import SamplingParams

        greedy = spec.temperature <= 0
        return SamplingParams(
            n=1, temperature=0.0 if greedy else float(spec.temperature), top_p=1.0 if greedy else float(spec.top_p),
            top_k=0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
            max_tokens=int(spec.max_new_tokens), stop_token_ids=list(spec.stop.token_ids),
            stop=list(spec.stop.strings) or None, include_stop_str_in_output=True, logprobs=0, seed=int(seed),
            skip_special_tokens=False, detokenize=bool(spec.stop.strings),
        )

    def generate(self, prompts: list[Prompt], n: int, spec: SamplingSpec) -> Rollouts:
        """B prompts -> B*n responses, prompt-major, with ``rollout_logprobs`` [B*n, T]."""
        self._ready()
        tok = self.tokenizer
        tok.truncation_side = "left"
        enc = tok([p.text for p in prompts], add_special_tokens=False, truncation=spec.max_prompt_len is not None,
                  max_length=spec.max_prompt_len)["input_ids"]
        base = int(torch.randint(0, 2**31 - 1, (1,)))  # torch's seeded generator decides the seeds
        requests = [{"prompt_token_ids": list(ids)} for ids in enc for _ in range(n)]
        params = [self.sampling_params(spec, (base + i) % (2**31 - 1)) for i in range(len(requests))]
        outs = self.llm.generate(requests, params, use_tqdm=False)
        samples = [o.outputs[0] for o in outs]
        return self._rollouts(prompts, enc, n, samples, spec)

    def _rollouts(self, prompts, enc, n, samples, spec) -> Rollouts:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        p_len = max(len(ids) for ids in enc)
        t_len = max(1, max(len(s.token_ids) for s in samples))
        N = len(samples)
        prompt_ids = torch.full((len(enc), p_len), pad, dtype=torch.long)
        prompt_mask = torch.zeros((len(enc), p_len), dtype=torch.long)
        for i, ids in enumerate(enc):  # left padding, as the HF engine
            prompt_ids[i, p_len - len(ids):] = torch.tensor(ids, dtype=torch.long)
            prompt_mask[i, p_len - len(ids):] = 1
        responses = torch.full((N, t_len), pad, dtype=torch.long)
        logprobs = torch.zeros((N, t_len), dtype=torch.float32)
        for i, s in enumerate(samples):
            ids = list(s.token_ids)
            responses[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            if s.logprobs:
                logprobs[i, : len(ids)] = torch.tensor([float(d[t].logprob) for d, t in zip(s.logprobs, ids)])
        mask, truncated = response_mask(responses, spec.stop, tok)
        responses = torch.where(mask.bool(), responses, torch.full_like(responses, pad))
        prompt_ids, prompt_mask = prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0)
        return Rollouts(
            input_ids=torch.cat([prompt_ids, responses], 1), attention_mask=torch.cat([prompt_mask, mask], 1),
            response_mask=mask, prompt_len=p_len, group_ids=torch.arange(len(prompts)).repeat_interleave(n),
            texts=tok.batch_decode(responses, skip_special_tokens=True), truncated=truncated, prompts=prompts,
            rollout_logprobs=logprobs * mask,
        )

    def close(self) -> None:
        """Shut the engine down now, while the process group it shares still exists (its finaliser at
        interpreter exit would find it destroyed); vLLM's shutdown then leaves that group itself."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        shutil.rmtree(self.folder, ignore_errors=True)
