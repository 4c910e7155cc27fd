"""GRPO with LoRA adapters (``model.lora.rank > 0``) on the shipped tiny model: every method trains
the adapters and leaves the base bit-identical, the KL reference is the base under the adapters
(one model loaded), gradient checkpointing gives the same update, the checkpoint holds peft's
adapter and a merged ``hf/`` export, and ``rlvr eval model.adapter=`` scores what ``hf/`` scores."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr_cli import lora
from rlvr_cli.commands import train_main
from rlvr_cli.models import load_model
from rlvr_cli.trainer import setup
from rlvr_cli.trainer.loop import GRPOTrainer
from tests.trainer.conftest import compose_train
from tests.trainer.test_loop import _fixed_batch

LORA = ["model.lora.rank=8", "model.lora.alpha=16", "optim.lr=1e-2", "trainer.resume=never"]


def _split(model):
    """(base parameters, adapter parameters), detached copies by name."""
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not lora.is_adapter_param(n)}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if lora.is_adapter_param(n)}
    return base, adapters


def _update_once(trainer):
    batch = _fixed_batch(trainer)
    trainer.method.prepare(batch, trainer._ctx(1))
    return trainer.update(batch, 1)


@pytest.mark.parametrize("method", ["baseline", "clip_cov", "kl_cov", "siren"])
def test_every_method_trains_the_adapters_and_leaves_the_base_bit_identical(tmp_path, method):
    trainer = GRPOTrainer.from_config(compose_train([*LORA, f"method={method}", "algo.mini_batch_size=8"]), tmp_path)
    assert all(lora.is_adapter_param(n) for n, p in trainer.model.named_parameters() if p.requires_grad)
    opt_params = {id(p) for g in trainer.engine.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for n, p in trainer.model.named_parameters() if lora.is_adapter_param(n)}
    base, adapters = _split(trainer.model)
    m = _update_once(trainer)
    assert torch.isfinite(torch.tensor(m["loss/pg"]))
    base_after, adapters_after = _split(trainer.model)
    assert all(torch.equal(base[n], base_after[n]) for n in base)  # bit-identical
    assert max((adapters_after[n] - adapters[n]).abs().max().item() for n in adapters) > 1e-4
    trainer.close()


def test_kl_reference_is_the_base_under_the_adapters_with_one_model_loaded(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(setup, "load_model", lambda *a, **k: loads.append(a) or load_model(*a, **k))
    trainer = GRPOTrainer.from_config(compose_train([*LORA, "algo.kl.enabled=true", "algo.kl.coef=0.1"]), tmp_path)
    assert len(loads) == 1 and trainer.actor.ref_model is None and trainer.actor.has_reference
    _update_once(trainer)  # the adapters move away from 0
    batch = _fixed_batch(trainer)
    ref = trainer.actor.reference(batch)
    base = load_model({"path": "builtin:tiny_arith", "dtype": "float32"}, torch.device("cpu"))
    want = trainer.actor.score(batch, ["logprobs"], model=base)["logprobs"]
    mask = batch.response_mask.bool()
    assert torch.allclose(ref[mask], want[mask], atol=1e-5)
    policy = trainer.actor.score(batch, ["logprobs"])["logprobs"]
    assert (policy[mask] - ref[mask]).abs().max() > 1e-4  # the policy is not the reference any more
    m = trainer.update(batch, 2)
    assert m["loss/kl"] > 0
    trainer.close()


def test_gradient_checkpointing_with_lora_gives_the_same_update(tmp_path):
    """HF enables input gradients for a peft model under checkpointing; with the non-reentrant
    checkpoint the adapters get the same gradient either way."""
    moved = []
    for gc in (False, True):
        trainer = GRPOTrainer.from_config(compose_train([*LORA, f"model.gradient_checkpointing={str(gc).lower()}",
                                             "optim.eps=1.0", "optim.lr=0.05"]), tmp_path / str(gc))
        assert getattr(trainer.model, "is_gradient_checkpointing", False) == gc
        _, before = _split(trainer.model)
        _update_once(trainer)
        _, after = _split(trainer.model)
        moved.append({n: after[n] - before[n] for n in before})
        trainer.close()
    plain, ckpt = moved
    assert max(d.abs().max().item() for d in plain.values()) > 1e-4
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], atol=1e-6), n


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """Two steps of LoRA GRPO with the KL term, a checkpoint at the end."""
    out = tmp_path_factory.mktemp("lora_run")
    train_main(compose_train([*LORA, "algo.kl.enabled=true", "algo.kl.coef=0.05", "method=entropy_bonus"]), out)
    return out


def test_checkpoint_holds_the_adapter_and_a_merged_export_that_differs_only_in_adapted_layers(lora_run):
    ckpt = lora_run / "checkpoints" / "step_000002"
    config = json.loads((ckpt / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    assert "adapter/adapter_model.safetensors" in json.loads((ckpt / "manifest.json").read_text())["files"]
    merged = AutoModelForCausalLM.from_pretrained(ckpt / "hf", dtype=torch.float32).state_dict()
    base = load_model({"path": "builtin:tiny_arith", "dtype": "float32"}, torch.device("cpu")).state_dict()
    assert set(merged) == set(base)
    adapted = {f"{n}.weight" for n in lora.lora_layers(load_model(
        {"path": "builtin:tiny_arith", "dtype": "float32", "lora": {"rank": 8}}, torch.device("cpu")))}
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and changed <= adapted
    row = [json.loads(line) for line in (lora_run / "metrics.jsonl").read_text().splitlines()][-1]
    assert row["loss/kl"] > 0


def test_eval_takes_the_adapter_folder_or_the_merged_export_alike(lora_run, tmp_path):
    from rlvr_cli.eval.run import eval_main
    from tests.eval.test_run import compose_eval

    ckpt = lora_run / "checkpoints" / "step_000002"
    common = ["model.name=t", "eval.n=2", "eval.max_new_tokens=8", "eval.progress=false", "eval.limit=6", "seed=3"]
    a = eval_main(compose_eval([*common, "model.path=builtin:tiny_arith", f"model.adapter={ckpt / 'adapter'}",
                                f"out_dir={tmp_path / 'a'}"]), tmp_path / "a")
    b = eval_main(compose_eval([*common, f"model.path={ckpt / 'hf'}", f"out_dir={tmp_path / 'b'}"]), tmp_path / "b")
    metrics = lambda r: {k: v["metrics"] for k, v in r["benchmarks"].items()}  # noqa: E731
    assert metrics(a) == metrics(b)
