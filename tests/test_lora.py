"""LoRA (rlvr_cli/lora.py): the merge by hand, which parameters train, the reference under the
adapters, the adapter folder and its checks, on the shipped tiny model (CPU, seconds)."""
from __future__ import annotations

import torch
import pytest
from transformers import AutoModelForCausalLM

from rlvr_cli import lora
from rlvr_cli.errors import UserError
from rlvr_cli.models import load_model

CPU = torch.device("cpu")
TINY = {"path": "builtin:tiny_arith", "dtype": "float32"}


def _lora_model(rank=4, alpha=8, **kw):
    model = load_model({**TINY, "lora": {"rank": rank, "alpha": alpha, **kw}}, CPU)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if ".lora_B." in name:  # peft starts B at 0 (the adapted model is the base): move it
            p.data.normal_(0, 0.05)
    return model


def test_merged_weight_is_w_plus_scale_b_a_by_hand():
    """One 2x2 layer, rank 1: W + s·B·A with s = alpha / rank = 2."""
    state = {
        "l.base_layer.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "l.base_layer.bias": torch.tensor([0.5, -0.5]),
        "l.lora_A.default.weight": torch.tensor([[1.0, 2.0]]),  # [r=1, in=2]
        "l.lora_B.default.weight": torch.tensor([[3.0], [-1.0]]),  # [out=2, r=1]
        "norm.weight": torch.tensor([1.0, 1.0]),
        "head.modules_to_save.default.weight": torch.tensor([[7.0]]),
        "head.original_module.weight": torch.tensor([[0.0]]),
    }
    out = lora.merged_state_dict(state, {"l": 2.0})
    # B·A = [[3, 6], [-1, -2]]; W + 2·B·A = [[7, 12], [-2, -3]]
    assert torch.equal(out["l.weight"], torch.tensor([[7.0, 12.0], [-2.0, -3.0]]))
    assert torch.equal(out["l.bias"], torch.tensor([0.5, -0.5]))
    assert torch.equal(out["head.weight"], torch.tensor([[7.0]]))  # the trained copy, not the original
    assert sorted(out) == ["head.weight", "l.bias", "l.weight", "norm.weight"]


def test_only_adapters_train_and_their_count_is_rank_times_in_plus_out():
    model = _lora_model(rank=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    base = load_model(TINY, CPU)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora.trainable_parameters(base, lora.LoraSpec(rank=4))
    # all-linear: every linear layer of the decoder (q, k, v, o, gate, up, down), never the LM head
    kinds = {n.split(".")[-1] for n in lora.lora_layers(model)}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_reference_with_adapters_off_is_the_base_model_and_grads_stay_on_adapters():
    model, base = _lora_model(), load_model(TINY, CPU)
    x = torch.tensor([[1, 5, 9, 3, 7, 2]])
    with torch.no_grad():
        adapted = model(x).logits
        with lora.adapters_off(model):
            ref = model(x).logits
        plain = base(x).logits
    assert (adapted - plain).abs().max() > 1e-2  # the adapter changes the policy
    assert torch.allclose(ref, plain, atol=1e-6)  # and off, it is the base model exactly
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if lora.is_adapter_param(n)}


def test_live_merge_equals_the_state_dict_merge_and_the_export_loads_as_a_plain_model(tmp_path):
    model = _lora_model()
    merged = lora.merged_state_dict(model.state_dict(), lora.scalings(model))
    live = dict(lora.merged_module_tensors(model))
    assert set(live) >= set(merged) and all(torch.equal(live[k], merged[k]) for k in merged)
    adapted_only = dict(lora.merged_module_tensors(model, adapted_only=True))
    assert set(adapted_only) == {f"{n}.weight" for n in lora.lora_layers(model)}
    with lora.plain_save(model):
        model.save_pretrained(tmp_path / "hf", state_dict=merged)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    x = torch.tensor([[4, 8, 15, 16, 23, 42]])
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, model(x).logits, atol=1e-5)


def test_adapter_folder_round_trips_for_eval_and_resume(tmp_path):
    model = _lora_model()
    lora.save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    x = torch.tensor([[3, 1, 4, 1, 5, 9]])
    with torch.no_grad():
        want = model(x).logits
        merged = load_model({**TINY, "adapter": str(tmp_path / "adapter")}, CPU)  # eval: merged, plain
        assert not lora.has_lora(merged) and not lora.lora_layers(merged)
        assert torch.allclose(merged(x).logits, want, atol=1e-5)
        resumed = load_model(TINY, CPU, adapter=tmp_path / "adapter", merge_adapter=False)  # training
        assert torch.equal(resumed(x).logits, want)
    assert any(p.requires_grad for p in resumed.parameters())


@pytest.mark.parametrize("node,message", [
    ({"rank": -1}, "model.lora.rank=-1: expected an int >= 0"),
    ({"rank": 4, "target_modules": ["qkv_proj"]}, "names no linear layer of Qwen2ForCausalLM; its linear layers: "
                                                  "down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"),
    ({"rank": 4, "modules_to_save": ["score"]}, "'score' is no module"),
    ({"rank": 4, "alpha": 0}, "model.lora.alpha=0"),
])
def test_bad_lora_settings_are_one_line(node, message, monkeypatch):
    loads = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a) or _real(*a, **k))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model({**TINY, "lora": node}, CPU)
    if node["rank"] < 0 or node.get("alpha") == 0:
        assert loads == []  # refused before any weight is loaded


_real = AutoModelForCausalLM.from_pretrained


def test_an_adapter_for_another_base_is_refused_by_name(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    lora.apply_lora(other, lora.LoraSpec(rank=2))
    lora.save_adapter(other, tmp_path / "other")
    with pytest.raises(UserError, match=r"does not fit this model: model\.layers\.0\.\S+ has in_features"):
        load_model({**TINY, "adapter": str(tmp_path / "other")}, CPU)
    with pytest.raises(UserError, match="no LoRA adapter there"):
        load_model({**TINY, "adapter": str(tmp_path)}, CPU)
