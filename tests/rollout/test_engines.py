"""Choosing the rollout engine (rollout.engine=hf|vllm|auto)."""
from __future__ import annotations

import pytest
import torch

from rlvr_cli.errors import UserError
from rlvr_cli.rollout import engines


def test_auto_is_vllm_only_on_a_gpu_with_vllm_installed(monkeypatch):
    monkeypatch.setattr(engines, "vllm_available", lambda: True)
    assert engines.resolve_engine("auto", torch.device("cpu")) == "hf"
    assert engines.resolve_engine("auto", torch.device("cuda", 0)) == "vllm"
    assert engines.resolve_engine("vllm", torch.device("cpu")) == "vllm"
    monkeypatch.setattr(engines, "vllm_available", lambda: False)
    assert engines.resolve_engine("auto", torch.device("cuda", 0)) == "hf"


def test_vllm_without_the_package_and_unknown_names_are_one_line(monkeypatch):
    monkeypatch.setattr(engines, "vllm_available", lambda: False)
    with pytest.raises(UserError, match=r"pip install -e '\.\[vllm\]'"):
        engines.resolve_engine("vllm", torch.device("cpu"))
    with pytest.raises(UserError, match="valid: hf, vllm, auto"):
        engines.resolve_engine("sglang", torch.device("cpu"))


def test_tensor_parallel_is_refused_in_one_line():
    from rlvr_cli.rollout.vllm_engine import VLLMEngine

    with pytest.raises(UserError, match="tensor_parallel_size > 1 is not supported"):
        VLLMEngine(None, None, device=torch.device("cpu"), dtype=torch.float32, max_model_len=8,
                   cfg={"tensor_parallel_size": 2})
