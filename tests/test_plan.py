"""The memory plan (rlvr_cli/plan.py, ``rlvr plan``): DeepSpeed's estimators for the model states, a
plan for every shipped model and trainer, the verdict for a 7B model on one or eight 80 GiB GPUs, the
command line, the check before a GPU run, and the activation estimate against what a real forward of
a tiny model saves for backward (torch.autograd.graph.saved_tensors_hooks)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlvr_cli import plan as P
from rlvr_cli.cli import _register_resolvers
from rlvr_cli.paths import CONF_DIR, group_options
from rlvr_cli.errors import UserError
from rlvr_cli.lora import LoraSpec, apply_lora, target_module_names

_register_resolvers()
GB80 = "trainer.gpu_memory_gb=80"  # independent of the machine's GPU (or its absence)
# the published parameter counts (hub model cards: 7.61B, 3.09B, 1.54B, 8.19B)
PUBLISHED = {"Qwen/Qwen2.5-Math-7B": 7_615_616_512, "Qwen/Qwen2.5-7B": 7_615_616_512,
             "Qwen/Qwen2.5-3B": 3_085_938_688, "Qwen/Qwen2.5-1.5B": 1_543_714_304,
             "Qwen/Qwen2.5-Math-1.5B": 1_543_714_304, "Qwen/Qwen3-8B-Base": 8_190_735_360}
TOLERANCE = 0.35  # the activation estimate against the measured bytes (it lands within ~1%: see below)


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def _plan(*overrides) -> P.Plan:
    return P.build_plan(_compose([GB80, *overrides]))


# ----------------------------------------------------------------------------------- configs
def test_every_hub_model_of_conf_model_has_a_shipped_config_with_the_published_size():
    hub_ids = {OmegaConf.load(p).path for p in (CONF_DIR / "model").glob("*.yaml")}
    hub_ids = {h for h in hub_ids if not h.startswith("builtin:")}
    assert hub_ids == set(PUBLISHED)
    for hub in hub_ids:
        assert P.shipped_config(hub) is not None, hub
        shape = P.model_shape(hub)
        assert shape.params == PUBLISHED[hub], hub
    q3 = P.model_shape("Qwen/Qwen3-8B-Base")
    assert q3.qk_norm and q3.head_dim == 128 and q3.kv_heads == 8 and not q3.tied
    assert P.model_shape("Qwen/Qwen2.5-3B").tied and not P.model_shape("Qwen/Qwen2.5-7B").tied


def test_a_model_the_plan_cannot_find_is_one_line():
    with pytest.raises(UserError, match=r"model.path=nobody/nothing: no config.json for the memory plan"):
        P.model_shape("nobody/nothing")


# ----------------------------------------------------------------------- DeepSpeed's estimators
@pytest.mark.parametrize("model", ["qwen2.5-math-7b", "qwen2.5-7b"])
@pytest.mark.parametrize("trainer,gpus", [("zero2", 1), ("zero2", 8), ("zero2_offload", 8), ("zero3", 1),
                                          ("zero3", 8), ("zero3_offload", 8)])
def test_model_states_are_deepspeeds_estimates(model, trainer, gpus):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cfg = _compose([f"model={model}", f"trainer={trainer}", f"trainer.gpus={gpus}", GB80])
    plan = P.build_plan(cfg)
    shape = P.model_shape(cfg.model.path)
    t = cfg.trainer
    if t.zero_stage == 3:
        _, gpu, _ = estimate_zero3_model_states_mem_needs(shape.params, shape.largest_layer, gpus, 1,
                                                         cpu_offload=t.offload_optimizer,
                                                         cpu_offload_params=t.offload_param, zero_init=False)
    else:
        _, gpu = estimate_zero2_model_states_mem_needs(shape.params, gpus, 1, cpu_offload=t.offload_optimizer)
    assert plan.model_states == gpu
    assert plan.params == shape.params == PUBLISHED[cfg.model.path]
    assert shape.largest_layer_name == "model.embed_tokens" and shape.largest_layer == 152064 * 3584


def test_lora_model_states_apply_the_estimators_formula_to_the_adapters_plus_the_frozen_base():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cfg = _compose(["model=qwen2.5-math-7b", "trainer=zero3", "trainer.gpus=8", "model.lora.rank=64", GB80])
    plan = P.build_plan(cfg)
    shape = P.model_shape(cfg.model.path)
    # rank 64 on every linear layer of the decoder: 64 x (in + out), 28 layers
    per_layer = 64 * ((3584 + 3584) * 2 + (3584 + 512) * 2 + (3584 + 18944) * 3)
    assert plan.trainable == 28 * per_layer
    _, gpu, _ = estimate_zero3_model_states_mem_needs(plan.trainable, shape.largest_layer, 8, 1, cpu_offload=False,
                                                     cpu_offload_params=False, zero_init=False)
    assert plan.model_states == gpu
    assert plan.frozen_base == 2 * shape.params // 8
    single = _plan("model=qwen2.5-math-7b", "model.lora.rank=64")  # fp32 adapters: 4 + 4 + 8 bytes each
    assert single.model_states == 16 * single.trainable and single.frozen_base == 2 * shape.params


def test_an_adapter_folder_is_planned_with_its_own_rank_and_layers(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32,
                                                             "target_modules": ["v_proj", "q_proj"]}))
    plan = _plan("model=qwen2.5-math-7b", f"model.adapter={tmp_path}")
    assert plan.lora_rank == 16 and plan.trainable == 28 * 16 * ((3584 + 3584) + (3584 + 512))


def test_the_kl_reference_costs_a_copy_without_lora_and_nothing_with_it():
    p = P.model_shape("Qwen/Qwen2.5-Math-7B").params
    assert _plan("model=qwen2.5-math-7b", "algo.kl.enabled=true").reference == 2 * p
    zero3 = _plan("model=qwen2.5-math-7b", "algo.kl.enabled=true", "trainer=zero3", "trainer.gpus=8")
    assert zero3.reference == 2 * p // 8 + 2 * P.model_shape("Qwen/Qwen2.5-Math-7B").largest_layer
    assert _plan("model=qwen2.5-math-7b", "algo.kl.enabled=true", "model.lora.rank=64").reference == 0


def test_single_gpu_full_fine_tune_states_are_fp32_master_weights_grads_and_adam():
    plan = _plan("model=qwen2.5-math-7b")
    p = plan.params
    assert (plan.parameters, plan.gradients, plan.optimizer) == (4 * p, 4 * p, 8 * p)
    assert plan.weight_copies == 2 * P.model_shape("Qwen/Qwen2.5-Math-7B").linear_params  # autocast's bf16 casts
    half = _plan("model=qwen2.5-math-7b", "trainer.master_weights=model")
    assert (half.parameters, half.gradients, half.optimizer, half.weight_copies) == (2 * p, 2 * p, 4 * p, 0)


def test_vllm_counts_its_share_in_the_rollout_and_nothing_asleep_in_the_update():
    plan = _plan("model=qwen2.5-math-7b", "model.lora.rank=64", "rollout.engine=vllm",
                 "rollout.vllm.gpu_memory_utilization=0.4")
    assert plan.vllm == int(0.4 * 80 * P.GiB) and plan.vllm_in_update == 0
    assert plan.rollout_bytes >= plan.vllm and plan.rollout_kv == 0
    awake = _plan("model=qwen2.5-math-7b", "model.lora.rank=64", "rollout.engine=vllm", "rollout.vllm.sleep=false")
    assert awake.vllm_in_update == awake.vllm > 0


# ----------------------------------------------------------------------- every model x trainer
@pytest.mark.parametrize("model", group_options("model"))
@pytest.mark.parametrize("trainer", group_options("trainer"))
def test_the_plan_prints_for_every_model_and_trainer(model, trainer):
    from rich.console import Console

    plan = _plan(f"model={model}", f"trainer={trainer}")
    console = Console(record=True, width=200)
    console.print(P.render(plan))
    text = console.export_text()
    for word in ("parameters", "gradients", "optimizer states", "activations", "log-prob", "peak"):
        assert word in text, word
    assert plan.verdict.startswith(("plan: fits", "plan: does not fit")) and "\n" not in plan.verdict
    assert plan.peak_bytes == max(plan.update_bytes, plan.rollout_bytes, plan.load_bytes) + plan.runtime
    assert json.loads(plan.to_json())["peak_bytes"] == plan.peak_bytes


@pytest.mark.parametrize("recipe", [r for r in group_options("recipes") if not r.startswith("lab/")])
def test_every_recipe_fits_the_gpus_its_header_names(recipe):
    """What ``check_before_train`` would say on 80 GB GPUs for each recipe's documented command line
    (its ``Run:`` overrides: ranks, vLLM): none is refused."""
    import re

    from rlvr_cli.paths import REPO_ROOT

    header = (REPO_ROOT / "recipes" / f"{recipe}.yaml").read_text()
    launch = re.search(rf"rlvr train \+recipes={re.escape(recipe)}(.*)", header)
    overrides = [t for t in (launch.group(1).split() if launch else []) if "=" in t]
    plan = P.build_plan(_compose([f"+recipes={recipe}", *overrides, GB80]))
    assert plan.fits, plan.verdict


# ----------------------------------------------------------------------------------- verdicts
def test_a_7b_full_fine_tune_does_not_fit_one_80gb_gpu_and_lora_does():
    full = _plan("model=qwen2.5-math-7b")
    assert not full.fits and full.model_states > 80 * P.GiB
    assert full.change == ["model.lora.rank=64"], full.verdict  # ZeRO-3 needs several ranks: LoRA first
    assert "does not fit" in full.verdict and "first change that fits: model.lora.rank=64" in full.verdict
    lora = _plan("model=qwen2.5-math-7b", "model.lora.rank=64")
    assert lora.fits and lora.headroom > 0 and lora.verdict.startswith("plan: fits on 1x80.0 GiB")
    # without checkpointing the activations alone pass 80 GiB; the verdict then turns checkpointing on
    nogc = _plan("model=qwen2.5-math-7b", "model.lora.rank=64", "model.gradient_checkpointing=false")
    assert not nogc.fits and nogc.change[0] == "model.gradient_checkpointing=true", nogc.verdict


def test_several_ranks_try_zero3_first_and_eight_gpus_fit_a_7b_full_fine_tune():
    zero2 = P.build_plan(_compose(["model=qwen2.5-math-7b", "trainer=zero2", "trainer.gpus=4",
                                   "trainer.gpu_memory_gb=64"]))
    assert not zero2.fits and zero2.change == ["trainer.zero_stage=3"], zero2.verdict
    zero3 = _plan("model=qwen2.5-math-7b", "trainer=zero3", "trainer.gpus=8")
    assert zero3.fits, zero3.verdict
    assert zero3.parameters < 3.5 * P.GiB and zero3.gathered > 0  # partitions, and generation's full gather


def test_offload_is_named_when_the_earlier_changes_are_spent():
    # LoRA already on (with the LM head and the embedding trained in full), checkpointing on, one row
    # per micro-batch: the optimizer states are what is left to move
    common = ["model=qwen2.5-math-7b", "model.lora.rank=64", "model.lora.modules_to_save=[lm_head,embed_tokens]",
              "algo.micro_batch_size=1"]
    zero3 = P.build_plan(_compose([*common, "trainer=zero3", "trainer.gpus=2", "trainer.gpu_memory_gb=24"]))
    assert not zero3.fits and zero3.change == ["trainer.offload_optimizer=true"], zero3.verdict
    single = P.build_plan(_compose([*common, "trainer.gpu_memory_gb=32"]))
    assert not single.fits and single.change == ["trainer=zero2_offload"], single.verdict


def test_changes_combine_when_none_fits_alone():
    plan = P.build_plan(_compose(["model=qwen3-8b-base", "trainer.gpu_memory_gb=40"]))
    assert plan.change[0] == "together:" and "model.lora.rank=64" in plan.change, plan.verdict
    assert "no single change fits, together: model.lora.rank=64 algo.micro_batch_size=" in plan.verdict
    hopeless = P.build_plan(_compose(["model=qwen2.5-math-7b", "trainer.gpu_memory_gb=8"]))
    assert hopeless.change is None and "neither ZeRO-3, LoRA" in hopeless.verdict


# ---------------------------------------------------------------------------- check_before_train
def test_check_before_train_refuses_in_one_line_and_can_be_overridden():
    with pytest.raises(UserError) as e:
        P.check_before_train(_compose(["model=qwen2.5-math-7b", GB80]))
    msg = str(e.value)
    assert "\n" not in msg and "does not fit" in msg and "trainer.ignore_memory_plan=true" in msg
    verdict = P.check_before_train(_compose(["model=qwen2.5-math-7b", GB80, "trainer.ignore_memory_plan=true"]))
    assert verdict is not None and "does not fit" in verdict
    assert "fits" in P.check_before_train(_compose([GB80]))  # the embedded default


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the plan runs without trainer.gpu_memory_gb")
def test_no_plan_on_a_cpu_run_unless_asked():
    assert P.check_before_train(_compose(["model=qwen2.5-math-7b"])) is None


def test_train_main_stops_at_the_plan_before_loading_or_writing(tmp_path):
    from rlvr_cli.commands import train_main

    out = tmp_path / "run"
    with pytest.raises(UserError, match="does not fit"):
        train_main(_compose(["model=qwen2.5-math-7b", GB80]), out)
    assert not out.exists()


def test_the_new_trainer_keys_are_in_every_trainer_config_and_checked():
    from rlvr_cli.configs import load_train_config

    for trainer in group_options("trainer"):
        cfg = _compose([f"trainer={trainer}"])
        assert cfg.trainer.gpu_memory_gb is None and cfg.trainer.ignore_memory_plan is False
    with pytest.raises(UserError, match=r"trainer.gpu_memory_gb=-1: expected null or a float > 0"):
        load_train_config(_compose(["trainer.gpu_memory_gb=-1"]), world=1)
    with pytest.raises(UserError, match=r"trainer.ignore_memory_plan='yes': expected true or false"):
        load_train_config(_compose(["trainer.ignore_memory_plan=yes"]), world=1)


# ----------------------------------------------------------------------------------- the CLI
def _cli(capsys, *args) -> tuple[int, str, str]:
    """``rlvr <args>`` in this process: (exit status, stdout, stderr)."""
    from rlvr_cli.cli import main

    saved = sys.argv[:]
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rlvr_plan_prints_the_table_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, "plan", "model=qwen2.5-math-7b", "trainer=zero3", "trainer.gpus=8", GB80)
    assert code == 0, err[-2000:]
    assert "memory plan per GPU" in out and "optimizer states" in out and "peak" in out
    assert "\nplan: fits on 8x80.0 GiB: peak " in out
    assert list(tmp_path.iterdir()) == []  # no run folder, no .hydra/, no log


def test_rlvr_train_dash_dash_plan_plans_and_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, "train", "model=qwen2.5-math-7b", "--plan", GB80, f"out_dir={tmp_path / 'run'}")
    assert code == 0, err[-2000:]
    assert "plan: does not fit on 1x80.0 GiB" in out and "first change that fits: model.lora.rank=64" in out
    assert list(tmp_path.iterdir()) == []


def test_rlvr_plan_bad_value_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "plan", "trainer.gpu_memory_gb=0")
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "trainer.gpu_memory_gb=0: expected null or a float > 0" in err


@pytest.mark.slow
def test_rlvr_plan_as_typed(tmp_path):
    """The installed entry point in a fresh process (exit status, stdout, no files)."""
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "plan", "model=qwen2.5-math-7b", "model.lora.rank=64",
                        GB80], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "frozen base weights" in r.stdout and "plan: fits on 1x80.0 GiB" in r.stdout
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- activations, measured on CPU
TINY = "builtin:tiny_arith"


def _saved_bytes(model: torch.nn.Module, fn, autocast: bool = False, layer_kwargs: bool = False):
    """(bytes saved for backward while ``fn`` runs: unique storages, parameters excluded, its output).
    ``layer_kwargs``: also the tensors every decoder layer gets as keyword arguments (mask, cos/sin,
    position ids), which a checkpointed layer keeps referenced until its recompute (non-reentrant
    checkpointing stores them in its closure, not through the saved-tensor hooks)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    def pre(_module, _args, kwargs):
        for v in kwargs.values():
            for x in (v if isinstance(v, tuple) else (v,)):
                if isinstance(x, torch.Tensor):
                    seen.setdefault(x.untyped_storage().data_ptr(), x.untyped_storage().nbytes())

    handle = model.model.layers[0].register_forward_pre_hook(pre, with_kwargs=True) if layer_kwargs else None
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        out = fn()
    if handle is not None:
        handle.remove()
    return sum(seen.values()), out


def _batch(rows=4, prompt=32, response=16, seed=0):
    """Left-padded prompts + right-padded responses, as the trainer scores them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (rows, prompt + response), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :7], mask[2, :3] = 0, 0
    resp = torch.ones(rows, response, dtype=torch.long)
    resp[1, 12:], resp[3, 5:] = 0, 0
    mask[:, prompt:] = resp
    return ids, mask, resp


def _tiny(dtype=torch.float32, attn="sdpa", lora_rank=0, targets="all-linear", adapter_dtype=None, gc=False,
          config_dir=None):
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlvr_cli.models import resolve_model_path

    if config_dir is None:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(TINY), dtype=dtype, attn_implementation=attn)
    else:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir), attn_implementation=attn)
        model = model.to(dtype)
    model.train()
    lora = P.Adapters()
    if lora_rank:
        names = tuple(target_module_names(model, targets))
        apply_lora(model, LoraSpec(rank=lora_rank, target_modules=targets))
        for name, p in model.named_parameters():
            if adapter_dtype is not None and "lora_" in name:
                p.data = p.data.to(adapter_dtype)
        adapter_bytes = next(p for n, p in model.named_parameters() if "lora_A" in n).dtype.itemsize
        lora = P.Adapters(names, lora_rank, adapter_bytes)
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, lora


# (model dtype, bf16 autocast, gradient checkpointing, attention, LoRA rank, LoRA targets, adapter dtype)
CASES = {
    "fp32": (torch.float32, False, False, "sdpa", 0, None, None),
    "fp32 checkpointed": (torch.float32, False, True, "sdpa", 0, None, None),
    "bf16 (DeepSpeed)": (torch.bfloat16, False, False, "sdpa", 0, None, None),
    "bf16 checkpointed": (torch.bfloat16, False, True, "sdpa", 0, None, None),
    "fp32 master + bf16 autocast (single)": (torch.float32, True, False, "sdpa", 0, None, None),
    "autocast checkpointed": (torch.float32, True, True, "sdpa", 0, None, None),
    "eager fp32": (torch.float32, False, False, "eager", 0, None, None),
    "eager bf16": (torch.bfloat16, False, False, "eager", 0, None, None),
    "LoRA fp32": (torch.float32, False, False, "sdpa", 8, "all-linear", None),
    "LoRA q,v": (torch.float32, False, False, "sdpa", 8, ("q_proj", "v_proj"), None),
    "LoRA bf16 (DeepSpeed)": (torch.bfloat16, False, False, "sdpa", 8, "all-linear", None),
    "LoRA bf16 base, fp32 adapters, autocast": (torch.bfloat16, True, False, "sdpa", 8, "all-linear", torch.float32),
    "LoRA o,down, fp32 adapters, autocast": (torch.bfloat16, True, False, "sdpa", 8, ("o_proj", "down_proj"),
                                             torch.float32),
    "LoRA bf16 checkpointed": (torch.bfloat16, False, True, "sdpa", 8, "all-linear", None),
}


def _estimate_body(shape, model, lora, dtype, autocast, gc, attn, ids):
    """The plan's estimate for the body's forward over ``ids`` (no LM head: response tokens 0), plus the
    bf16 weight casts autocast caches and the linear layers save (``Plan.weight_copies``) when they are
    saved, i.e. without checkpointing."""
    a = 2 if autocast else dtype.itemsize
    prec = P.Precision(a, dtype.itemsize, autocast, "")
    rows, seq = ids.shape
    est = P.activation_bytes(shape, P.MicroBatch(rows, seq, rows * seq, 0), prec, attn, gc, lora).saved
    if autocast and not gc:
        est += 2 * sum(m.weight.numel() for m in model.model.modules() if isinstance(m, torch.nn.Linear)
                       and m.weight.requires_grad and m.weight.dtype != torch.bfloat16)
    return est


@pytest.mark.parametrize("case", list(CASES))
def test_activation_estimate_matches_what_the_forward_saves(case):
    """The body's forward (what ``policy_token_stats`` runs, with the trainer's mask and positions): the
    estimate is within TOLERANCE of the bytes saved for backward. Measured on 4 rows x 48 tokens of
    the shipped tiny model (the estimate is exact but where noted): fp32 10,637,568 B, bf16 5,771,520,
    fp32 + bf16 autocast 8,794,368 (with the weight casts), eager fp32 11,067,648; checkpointed fp32
    652,032 (with the layers' shared arguments); LoRA rank 8 fp32 9,824,256; the autocast LoRA cases
    +0.1% / +0.04% (some first-layer lora_A weight casts are not saved: that layer's input needs no
    gradient)."""
    from rlvr_cli.rollout.logprobs import position_ids_from_mask

    dtype, autocast, gc, attn, rank, targets, adapter_dtype = CASES[case]
    model, lora = _tiny(dtype, attn, rank, targets or "all-linear", adapter_dtype, gc)
    ids, mask, _ = _batch()
    body = model.model
    got, hidden = _saved_bytes(model, lambda: body(input_ids=ids, attention_mask=mask,
                                                    position_ids=position_ids_from_mask(mask),
                                                    use_cache=False).last_hidden_state, autocast, layer_kwargs=gc)
    hidden.float().pow(2).mean().backward()  # the graph is whole
    est = _estimate_body(P.model_shape(TINY), model, lora, dtype, autocast, gc, attn, ids)
    assert abs(est - got) <= TOLERANCE * got, (case, est, got)
    assert abs(est - got) <= 0.01 * got, (case, est, got)  # in fact: within 1%


def test_qwen3_activation_estimate_with_qk_norm(tmp_path):
    """A tiny random Qwen3 (q_norm / k_norm per head) read by the plan from its config.json alone."""
    from transformers import Qwen3Config

    from rlvr_cli.rollout.logprobs import position_ids_from_mask

    Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, head_dim=24, max_position_embeddings=128).save_pretrained(tmp_path)
    shape = P.model_shape(str(tmp_path))
    assert shape.qk_norm and shape.head_dim == 24 and shape.q_dim == 96
    for dtype in (torch.float32, torch.bfloat16):
        model, lora = _tiny(dtype, config_dir=tmp_path)
        ids, mask, _ = _batch()
        got, _ = _saved_bytes(model, lambda: model.model(input_ids=ids, attention_mask=mask,
                                                         position_ids=position_ids_from_mask(mask),
                                                         use_cache=False).last_hidden_state)
        est = _estimate_body(shape, model, lora, dtype, False, False, "sdpa", ids)
        assert abs(est - got) <= 0.01 * got, (dtype, est, got)


@pytest.mark.parametrize("entropy_grad", [False, True])
def test_the_whole_update_forward_matches_activations_plus_the_logit_chunks(entropy_grad):
    """``policy_token_stats`` as the update calls it (padded rows, log-probs and entropy, chunks of 16
    response tokens, no chunk checkpointing: the tiny vocabulary is under 32k): the body's activations,
    the LM head's input and every chunk's saved fp32 logits (and softmax when the entropy has a grad)."""
    from rlvr_cli.rollout.logprobs import policy_token_stats

    model, _ = _tiny(torch.float32)
    ids, mask, resp = _batch()
    grads = ("logprobs", "entropy") if entropy_grad else ("logprobs",)
    got, out = _saved_bytes(model, lambda: policy_token_stats(model, ids, mask, resp, 32, 1.0, ("logprobs", "entropy"),
                                                              grads, chunk_size=16, packing="off"))
    (out["logprobs"].sum() + out["entropy"].sum()).backward()
    shape = P.model_shape(TINY)
    rows, seq = ids.shape[0], ids.shape[1] - 1  # the body sees all but the last token
    mb = P.MicroBatch(rows, seq, rows * seq, int(resp.sum()))
    prec = P.Precision(4, 4, False, "")
    est = (P.activation_bytes(shape, mb, prec, "sdpa", False).saved
           + P.logit_chunks(shape, mb, 16, 1 + entropy_grad, False, 4).saved)
    assert abs(est - got) <= TOLERANCE * got, (est, got)
    assert abs(est - got) <= 0.05 * got, (est, got)  # the gathers' index tensors and small [M] vectors


def test_checkpointing_cuts_the_7b_activations_to_the_layer_inputs():
    shape = P.model_shape("Qwen/Qwen2.5-Math-7B")
    mb = P.MicroBatch(64, 576, 64 * 576, 64 * 64)
    prec = P.precision_of("auto", deepspeed=True)
    off = P.activation_bytes(shape, mb, prec, "sdpa", False)
    on = P.activation_bytes(shape, mb, prec, "sdpa", True)
    layer = P.layer_saved_bytes(shape, prec, "sdpa", 576)
    assert off.per_layer == on.per_layer == int(sum(layer.values()) * mb.tokens)
    assert off.saved > 28 * on.per_layer * 0.99 and on.saved < 3 * on.per_layer
    assert on.peak < off.peak / 5
