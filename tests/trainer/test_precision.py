"""The real-model path on a CPU: bf16 with fp32 master weights, gradient checkpointing in the loss
forward, dropout off. The embedded model in bf16 stands in for a Qwen model on a GPU."""
from __future__ import annotations

import pytest
import torch

from rlvr_cli.trainer.engine import deepspeed_config
from rlvr_cli.trainer.loop import GRPOTrainer
from tests.trainer.conftest import compose_train
from tests.trainer.test_loop import _fixed_batch

REAL_LR = ["optim.lr=1e-6", "trainer.resume=never"]  # the README's real-model learning rate


def _changed_fraction(before, model) -> float:
    """Share of weight entries that moved, compared in the dtype they are stored in."""
    changed = sum(int((a != b).sum()) for a, b in zip(before, model.parameters()))
    return changed / sum(p.numel() for p in model.parameters())


def test_bf16_on_one_process_keeps_fp32_master_weights_and_trains_at_lr_1e6(tmp_path):
    """bf16 weights stepped by AdamW at lr 1e-6 round nearly every update away (a weight of 0.02 has
    a bf16 spacing of ~1e-4); fp32 master weights move, while the forwards still compute in bf16."""
    trainer = GRPOTrainer.from_config(compose_train(["model.dtype=bfloat16", *REAL_LR]), tmp_path / "mixed")
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    seen = []
    hook = trainer.model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    batch = _fixed_batch(trainer)
    trainer.update(batch, 1)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # sampling, scoring and the loss forward ran in bf16
    assert _changed_fraction(before, trainer.model) > 0.5
    trainer.close()


def test_master_weights_model_keeps_bf16_weights_and_they_barely_move(tmp_path):
    """The opt-in memory saver shows what the default avoids."""
    trainer = GRPOTrainer.from_config(compose_train(["model.dtype=bfloat16", "trainer.master_weights=model", *REAL_LR]), tmp_path)
    assert {p.dtype for p in trainer.model.parameters()} == {torch.bfloat16}
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.update(_fixed_batch(trainer), 1)
    assert _changed_fraction(before, trainer.model) < 0.2
    trainer.close()


def test_deepspeed_gets_its_bf16_mode_for_bf16_weights():
    from rlvr_cli.configs import load_train_config

    c = load_train_config(compose_train(["trainer=zero2", "algo.micro_batch_size=2"]), world=2)
    ds = deepspeed_config(c.trainer, c.algo, c.optim, 2, torch.bfloat16)
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert not deepspeed_config(c.trainer, c.algo, c.optim, 2, torch.float32)["bf16"]["enabled"]


def test_gradient_checkpointing_runs_in_the_loss_forward_and_not_while_sampling(tmp_path):
    """HF checkpoints a layer only in train mode: the policy is in train mode for every gradient
    forward, in eval mode (no checkpointing, no dropout) for sampling and no-grad scoring."""
    trainer = GRPOTrainer.from_config(compose_train(["model.gradient_checkpointing=true", *REAL_LR]), tmp_path)
    layers = trainer.model.model.layers
    calls = []
    for layer in layers:
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, _f=inner, **k: (calls.append(1), _f(*a, **k))[1]
    batch = _fixed_batch(trainer)  # generate + score
    assert calls == [] and not trainer.model.training
    trainer.update(batch, 1)
    assert len(calls) >= len(layers)  # every layer, every micro-batch of the update
    trainer.close()


def test_checkpointed_update_equals_the_plain_one(tmp_path):
    """The plain update may share each group's prompt forward (not allowed under checkpointing), so
    the two differ by float rounding: Adam with a large eps (~SGD) keeps that rounding at its size
    instead of turning a near-zero gradient entry into a ±lr step."""
    weights = []
    for ckpt in (False, True):
        trainer = GRPOTrainer.from_config(compose_train([f"model.gradient_checkpointing={str(ckpt).lower()}", "optim.lr=0.05",
                                             "optim.eps=1.0", "trainer.resume=never"]), tmp_path / str(ckpt))
        trainer.update(_fixed_batch(trainer), 1)
        weights.append([p.detach().clone() for p in trainer.model.parameters()])
        trainer.close()
    for a, b in zip(*weights):
        assert torch.allclose(a, b, atol=1e-6)


def test_dropout_is_off_in_train_mode(tmp_path):
    from rlvr_cli.models import disable_dropout
    from tests.conftest import tiny_qwen2

    model = tiny_qwen2()
    model.model.layers[0].self_attn.attention_dropout = 0.1
    model.extra = torch.nn.Dropout(0.3)
    assert disable_dropout(model) == 2
    assert model.extra.p == 0.0 and model.model.layers[0].self_attn.attention_dropout == 0.0


@pytest.mark.parametrize("dtype", ["float16", "fp16"])
def test_fp16_without_loss_scaling_is_refused(tmp_path, dtype):
    from rlvr_cli.errors import UserError

    with pytest.raises(UserError, match="loss scaling"):
        GRPOTrainer.from_config(compose_train([f"model.dtype={dtype}", "trainer.resume=never"]), tmp_path)
