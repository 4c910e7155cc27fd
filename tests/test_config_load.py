"""The composed config is loaded into each component's typed node at start (rlvr_cli/configs.py): every
shipped config and recipe passes, every rule rejects a bad value with one line naming the key, the value
and what is expected."""
from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from rlvr_cli.paths import CONF_DIR, REPO_ROOT, group_options
from rlvr_cli.configs import load_eval_config, load_train_config
from rlvr_cli.configs import world_size
from rlvr_cli.data.config import BenchmarkConfig
from rlvr_cli.typed import load
from rlvr_cli.errors import UserError

TRAIN_GROUPS = ["model", "data", "algo", "method", "trainer", "logger"]


def _compose(overrides, name="train"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def _train_error(overrides, world=1) -> str:
    with pytest.raises(UserError) as e:
        load_train_config(_compose(overrides), world=world)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _eval_error(overrides) -> str:
    with pytest.raises(UserError) as e:
        load_eval_config(_compose(overrides, "eval"))
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------- shipped configs pass
@pytest.mark.parametrize("group,option", [(g, o) for g in TRAIN_GROUPS for o in group_options(g)])
def test_every_train_option_passes(group, option):
    extra = ["data.path=x.jsonl"] if option == "jsonl" else []
    cfg = _compose([f"{group}={option}", *extra])
    load_train_config(cfg, world=world_size(OmegaConf.to_container(cfg.trainer), env={}))


@pytest.mark.parametrize("recipe", group_options("recipes"))
def test_every_recipe_passes_with_the_ranks_of_its_launch_command(recipe):
    cfg = _compose([f"+recipes={recipe}"])
    load_train_config(cfg, world=1)
    header = (REPO_ROOT / "recipes" / f"{recipe}.yaml").read_text()
    launch = re.search(rf"rlvr train \+recipes={re.escape(recipe)}(.*)", header).group(1)
    overrides = re.findall(r"(trainer\.(?:gpus|nodes)=\d+)", launch)
    if overrides:
        cfg = _compose([f"+recipes={recipe}", *overrides])
        trainer = OmegaConf.to_container(cfg.trainer)
        load_train_config(cfg, world=world_size(trainer, env={}))


def test_eval_default_and_every_benchmark_pass():
    load_eval_config(_compose([], "eval"))
    for name in group_options("benchmark"):
        load_eval_config(_compose([f"benchmarks=[{name}]"], "eval"))
        bench = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "benchmark" / f"{name}.yaml"))
        assert load(BenchmarkConfig, bench).name == name


def test_accepted_values():
    load_train_config(_compose([
        "optim.lr=1e-6", "optim.betas=[0.9,0.95]", "optim.grad_clip=0", "optim.schedule=cosine", "optim.min_lr_ratio=1",
        "rollout.temperature=0.6", "rollout.top_p=1", "val.temperature=0", "val.every=0", "val.size=0",
        "algo.kl.type=k3+", "algo.clip_ratio_c=null", "algo.log_ratio_clamp=null", "algo.loss_scale_factor=64",
        "trainer.resume=never", "trainer.keep_last=null", "trainer.checkpoint_logits=false", "trainer.device=cpu",
        "model.dtype=bf16", "seed=-3", "optim.lr=1",  # an int for a float field
    ]), world=1)
    load_train_config(_compose(["method=clip_cov"]), world=1)  # method.loss clip_ratio_low = 1.0 (r in [0, 2])


def test_keys_being_added_elsewhere_are_checked_and_may_be_absent():
    good = ["++rollout.stop_token_ids=[151645,'<|im_end|>']", "++rollout.stop=['</answer>']",
            "++model.stop_tokens=['<|im_end|>']", "++trainer.master_weights=model", "++rollout.overlong_prompts=drop"]
    load_train_config(_compose(good), world=1)
    cases = {"++trainer.master_weights=fp16": "trainer.master_weights='fp16': expected one of fp32 | model",
             "++rollout.overlong_prompts=truncate": "rollout.overlong_prompts='truncate': expected one of drop | error",
             "++rollout.stop_token_ids=[-1]": "rollout.stop_token_ids=[-1]: expected",
             "++rollout.stop=abc": "rollout.stop='abc': expected"}
    for override, msg in cases.items():
        assert msg in _train_error([override])
    c = OmegaConf.to_container(_compose([]), resolve=True)
    for node, key in (("rollout", "stop_token_ids"), ("rollout", "stop"), ("model", "stop_tokens"),
                      ("trainer", "master_weights"), ("rollout", "overlong_prompts"), ("rollout", "max_prompt_len"),
                      ("trainer", "keep_last"), ("model", "dtype"), ("optim", "betas")):
        c[node].pop(key, None)
    load_train_config(c, world=1)


def test_a_missing_required_key_is_named():
    c = OmegaConf.to_container(_compose([]), resolve=True)
    del c["algo"]["group_size"]
    with pytest.raises(UserError, match=r"^algo\.group_size is missing: expected an int >= 2"):
        load_train_config(c, world=1)


def test_unknown_keys_are_hydras_job():
    with pytest.raises(ConfigCompositionException):
        _compose(["optim.lrr=1"])


# --------------------------------------------------------------------------------- each rule rejects
@pytest.mark.parametrize("override,expected", [
    ("optim.lr=abc", "optim.lr='abc': expected a float > 0"),
    ("optim.lr=0", "optim.lr=0: expected a float > 0"),
    ("optim.lr=inf", "optim.lr=inf: expected a float > 0"),
    ("optim.betas=[0.9,1.5]", "optim.betas=[0.9, 1.5]: expected a list of 2 items, each a float in [0, 1)"),
    ("optim.betas=[0.9]", "optim.betas=[0.9]: expected a list of 2 items"),
    ("optim.eps=0", "optim.eps=0: expected a float > 0"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1: expected a float >= 0"),
    ("optim.warmup_steps=-1", "optim.warmup_steps=-1: expected an int >= 0"),
    ("optim.schedule=linear", "optim.schedule='linear': expected one of constant | cosine"),
    ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio=1.5: expected a float in [0, 1]"),
    ("optim.grad_clip=-1", "optim.grad_clip=-1: expected null or a float >= 0"),
    ("rollout.temperature=-1", "rollout.temperature=-1: expected a float > 0 (0 or less samples greedily"),
    ("rollout.temperature=0", "rollout.temperature=0: expected a float > 0"),
    ("rollout.top_p=0", "rollout.top_p=0: expected a float in (0, 1]"),
    ("rollout.top_p=1.1", "rollout.top_p=1.1: expected a float in (0, 1]"),
    ("rollout.max_new_tokens=0", "rollout.max_new_tokens=0: expected an int >= 1"),
    ("rollout.max_new_tokens=8.5", "rollout.max_new_tokens=8.5: expected an int >= 1"),
    ("rollout.max_new_tokens=8e3", "rollout.max_new_tokens=8000.0: expected an int >= 1"),
    ("rollout.prompts_per_step=abc", "rollout.prompts_per_step='abc': expected an int >= 1"),
    ("rollout.batch_size=0", "rollout.batch_size=0: expected an int >= 1"),
    ("rollout.max_prompt_len=0", "rollout.max_prompt_len=0: expected null or an int >= 1"),
    ("val.temperature=-0.5", "val.temperature=-0.5: expected a float >= 0"),
    ("val.top_p=0", "val.top_p=0: expected a float in (0, 1]"),
    ("val.every=-1", "val.every=-1: expected an int >= 0"),
    ("val.n=0", "val.n=0: expected an int >= 1"),
    ("val.at_start=maybe", "val.at_start='maybe': expected true or false"),
    ("algo.group_size=1", "algo.group_size=1: expected an int >= 2 (GRPO's baseline"),
    ("algo.group_size=true", "algo.group_size=true: expected an int >= 2"),
    ("algo.clip_ratio_low=-0.1", "algo.clip_ratio_low=-0.1: expected a float in [0, 1]"),
    ("algo.clip_ratio_low=1.5", "algo.clip_ratio_low=1.5: expected a float in [0, 1]"),
    ("algo.clip_ratio_high=-0.1", "algo.clip_ratio_high=-0.1: expected a float >= 0"),
    ("algo.clip_ratio_c=1", "algo.clip_ratio_c=1: expected null or a float > 1"),
    ("algo.log_ratio_clamp=0", "algo.log_ratio_clamp=0: expected null or a float > 0"),
    ("algo.loss_agg_mode=mean", "algo.loss_agg_mode='mean': expected one of token-mean | seq-mean-token-sum"),
    ("algo.kl.type=k4", "algo.kl.type='k4': expected one of k1 |"),
    ("algo.kl.coef=-1", "algo.kl.coef=-1: expected a float >= 0"),
    ("algo.ppo_epochs=0", "algo.ppo_epochs=0: expected an int >= 1"),
    ("algo.adv_eps=0", "algo.adv_eps=0: expected a float > 0"),
    ("algo.norm_adv_by_std=1", "algo.norm_adv_by_std=1: expected true or false"),
    ("algo.mini_batch_size=0", "algo.mini_batch_size=0: expected an int >= 1"),
    ("algo.loss_scale_factor=0", "algo.loss_scale_factor=0: expected null or a float > 0"),
    ("model.dtype=fp8", "model.dtype='fp8': expected one of auto | float32"),
    ("model.trust_remote_code=yes", "model.trust_remote_code='yes': expected true or false"),
    ("data.template=foo", "data.template='foo': expected one of chat | qwen_math | dapo | plain"),
    ("data.train_size=0", "data.train_size=0: expected null or an int >= 1"),
    ("trainer.max_steps=0", "trainer.max_steps=0: expected an int >= 1"),
    ("trainer.save_every=-1", "trainer.save_every=-1: expected an int >= 0"),
    ("trainer.keep_last=0", "trainer.keep_last=0: expected null or an int >= 1"),
    ("trainer.resume=/no/such/run", "trainer.resume='/no/such/run': expected auto | never | an existing"),
    ("trainer.device=cdua", "trainer.device='cdua': expected auto or a torch device"),
    ("trainer.num_threads=0", "trainer.num_threads=0: expected null or an int >= 1"),
    ("trainer.checkpoint_logits=sometimes", "trainer.checkpoint_logits='sometimes': expected auto, true or false"),
    ("reward.timeout_s=0", "reward.timeout_s=0: expected a float > 0"),
    ("reward.num_workers=0", "reward.num_workers=0: expected an int >= 1"),
    ("reward.extract=last", "reward.extract='last': expected one of auto | strict | gsm8k | boxed | boxed_all | answer_line"),
    ("reward.extract=[boxed,nope]", "reward.extract=['boxed', 'nope']: expected one of auto | strict | gsm8k | boxed"),
    ("reward.rel_tol=2", "reward.rel_tol=2: expected a float in [0, 1)"),
    ("reward.weights=[a]", "reward.weights=['a']: expected null or a list, each item a float"),
    ("seed=1.5", "seed=1.5: expected an int"),
    ("logger=wandb logger.mode=sometimes", "logger.mode='sometimes': expected one of offline | online"),
    ("trainer=zero2 trainer.zero_stage=4", "trainer.zero_stage=4: expected null or an int in [0, 3]"),
    ("trainer=zero2 trainer.gpus=0", "trainer.gpus=0: expected an int >= 1"),
    ("trainer=zero2 trainer.master_port=70000", "trainer.master_port=70000: expected an int in [1, 65535]"),
])
def test_each_rule_rejects_a_bad_value_naming_key_value_and_expectation(override, expected):
    assert expected in _train_error(override.split())


def test_several_problems_are_joined_on_one_line():
    msg = _train_error(["optim.lr=abc", "algo.group_size=1"])
    assert "optim.lr='abc'" in msg and "algo.group_size=1" in msg and "; " in msg


# -------------------------------------------------------------------------------- cross-field rules
def test_micro_batch_must_fit_in_a_mini_batch():
    msg = _train_error(["algo.micro_batch_size=512"])
    assert msg.startswith("algo.micro_batch_size=512: expected an int <= algo.mini_batch_size=256")


def test_step_responses_split_into_whole_mini_batches():
    msg = _train_error(["algo.mini_batch_size=96"])
    assert msg.startswith("algo.mini_batch_size=96: expected a divisor of 256")
    assert "rollout.prompts_per_step * algo.group_size = 32 * 8" in msg
    msg = _train_error(["rollout.prompts_per_step=4", "algo.group_size=4"])  # 16 responses, mini-batch 256
    assert msg.startswith("algo.mini_batch_size=256: expected an int <= 16")
    load_train_config(_compose(["rollout.prompts_per_step=4", "algo.group_size=4", "algo.mini_batch_size=8",
                                    "algo.micro_batch_size=4"]), world=1)


def test_deepspeed_ranks_take_whole_groups_and_equal_mini_batch_shares():
    msg = _train_error(["trainer=zero2", "trainer.gpus=3"], world=None)
    assert "rollout.prompts_per_step=32: expected a multiple of the 3 data-parallel ranks" in msg
    assert "trainer.gpus * trainer.nodes = 3 * 1" in msg
    assert "algo.mini_batch_size=256: expected a multiple of the 3 data-parallel ranks" in msg
    msg = _train_error(["trainer=zero2", "rollout.prompts_per_step=36", "algo.mini_batch_size=96"], world=8)
    assert msg.startswith("rollout.prompts_per_step=36: expected a multiple of the 8 data-parallel ranks")
    load_train_config(_compose(["trainer=zero3", "trainer.gpus=8"]), world=8)
    # under a launcher its WORLD_SIZE is the number of ranks; without DeepSpeed there is one
    trainer = {"kind": "deepspeed", "gpus": 1, "nodes": 1}
    assert world_size(trainer, {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}) == 4
    assert world_size({**trainer, "gpus": 8, "nodes": 2}, {}) == 16
    assert world_size({"kind": "single", "gpus": 8}, {"WORLD_SIZE": "8", "RANK": "0", "LOCAL_RANK": "0"}) == 1


def test_offload_needs_the_zero_stage_deepspeed_supports():
    msg = _train_error(["trainer=zero2", "trainer.offload_param=true"])
    assert msg.startswith("trainer.offload_param=true: expected false unless trainer.zero_stage=3")
    msg = _train_error(["trainer=zero1", "trainer.zero_stage=0", "trainer.offload_optimizer=true"])
    assert msg.startswith("trainer.offload_optimizer=true: expected false unless trainer.zero_stage >= 1")
    load_train_config(_compose(["trainer=zero1", "trainer.offload_optimizer=true"]), world=1)
    load_train_config(_compose(["trainer=zero3_offload"]), world=1)


def test_the_gradient_diagnostic_is_a_count_of_steps_and_refused_under_zero3():
    assert _train_error(["trainer.diagnose_every=-1"]).startswith("trainer.diagnose_every=-1: expected an int >= 0")
    msg = _train_error(["trainer=zero3", "trainer.diagnose_every=5"])
    assert msg.startswith("trainer.diagnose_every=5: expected 0 with trainer.zero_stage=3 (ZeRO-3 partitions")
    for trainer in ("single", "zero1", "zero2", "zero2_offload"):
        load_train_config(_compose([f"trainer={trainer}", "trainer.diagnose_every=5"]), world=1)
    load_train_config(_compose(["trainer=zero3", "trainer.diagnose_every=0"]), world=1)
    assert _compose([]).trainer.diagnose_every == 0  # off by default


def test_data_sources_need_their_fields():
    assert _train_error(["data=jsonl"]).startswith("data.path='???': expected a value")
    assert _train_error(["data=jsonl", "data.path=x.jsonl", "data.test_path=null"]).startswith(
        "data.test_path=null: expected a file")
    assert _train_error(["data.train_size=null"]).startswith("data.train_size=null: expected an int >= 1")


# --------------------------------------------------------------------------------------- method node
def test_method_fields_are_checked_by_the_methods_own_config():
    assert _train_error(["method=siren", "method.nucleus=x"]) == \
        "method.nucleus='x': expected one of strict | inclusive"
    assert _train_error(["method=siren", "method.rho=abc"]) == "method.rho='abc': expected a float in [0, 1]"
    assert _train_error(["method=siren", "method.top_k=2.5"]) == "method.top_k=2.5: expected an int >= 1"
    assert _train_error(["method=high_entropy", "method.rho=2"]).startswith("method=high_entropy: high_entropy.rho")
    assert _train_error(["method=clip_cov", "method.lb=6"]).startswith("method=clip_cov: clip_cov needs lb < ub")


def test_method_loss_overrides_are_clip_settings():
    assert _train_error(["++method.loss.clip_ratio=0.3"]).startswith(
        "method.loss.clip_ratio=0.3: expected a setting of the clipped objective: clip_ratio_low |")
    assert _train_error(["method=clip_cov", "method.loss.clip_ratio_c=0.5"]).startswith(
        "method.loss.clip_ratio_c=0.5: expected null or a float > 1")
    assert _train_error(["method=kl_cov", "method.loss.clip=sometimes"]).startswith(
        "method.loss.clip='sometimes': expected true or false")


# ------------------------------------------------------------------------------------ train_main, eval
def test_train_main_validates_before_writing_anything(tmp_path):
    from rlvr_cli.commands import train_main

    cfg = _compose(["optim.lr=abc"])
    with pytest.raises(UserError, match=r"^optim\.lr='abc': expected a float > 0$"):
        train_main(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_validation_is_pure_and_repeatable():
    cfg = _compose(["method=siren"])
    before = OmegaConf.to_yaml(cfg)
    for _ in range(3):
        load_train_config(cfg, world=1)
    assert OmegaConf.to_yaml(cfg) == before


@pytest.mark.parametrize("override,expected", [
    ("eval.n=0", "eval.n=0: expected an int >= 1"),
    ("eval.n=abc", "eval.n='abc': expected an int >= 1"),
    ("eval.temperature=-1", "eval.temperature=-1: expected a float >= 0"),
    ("eval.top_p=0", "eval.top_p=0: expected a float in (0, 1]"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens=0: expected null or an int >= 1"),
    ("eval.batch_size=0", "eval.batch_size=0: expected an int >= 1"),
    ("eval.limit=0", "eval.limit=0: expected null or an int >= 1"),
    ("eval.template=foo", "eval.template='foo': expected null or one of chat"),
    ("eval.device=gpu0", "eval.device='gpu0': expected auto or a torch device"),
    ("reward.timeout_s=-1", "reward.timeout_s=-1: expected a float > 0"),
    ("extrapolate.driver=x", "extrapolate.driver='x': expected one of rl | base"),
    ("extrapolate.cand_topk=-1", "extrapolate.cand_topk=-1: expected an int >= 0"),
    ("+benchmark_overrides.arith.limit=0", "benchmark_overrides.arith.limit=0: expected null or an int >= 1"),
    ("+benchmark_overrides.arith=5", "benchmark_overrides.arith=5: expected a mapping"),
    ("model.dtype=half", "model.dtype='half': expected one of auto"),
])
def test_eval_rules(override, expected):
    assert expected in _eval_error([override])


@pytest.mark.parametrize("override,named", [
    ("rollout.engine=sglang", "rollout.engine='sglang': expected one of hf | vllm | auto"),
    ("rollout.vllm.gpu_memory_utilization=1.5", "rollout.vllm.gpu_memory_utilization"),
    ("algo.rollout_correction.mode=tis", "token_truncate"),
    ("algo.max_tokens_per_micro_batch=0", "algo.max_tokens_per_micro_batch"),
    ("algo.filter_groups.max_num_gen_batches=-1", "algo.filter_groups.max_num_gen_batches"),
])
def test_rollout_engine_values_are_checked_in_one_line(override, named):
    with pytest.raises(UserError, match=re.escape(named)):
        load_train_config(_compose([override]))


def test_replace_at_sets_dotted_keys_on_a_copy():
    from rlvr_cli.typed import replace_at

    c = load_train_config(_compose([]), world=1)
    d = replace_at(c, {"trainer.zero_stage": 3, "model.lora.rank": 8, "seed": 5})
    assert (d.trainer.zero_stage, d.model.lora.rank, d.seed) == (3, 8, 5)
    assert (c.trainer.zero_stage, c.model.lora.rank, c.seed) == (None, 0, 0)  # the original is untouched
    assert d.rollout is c.rollout and d.model.lora is not c.model.lora
