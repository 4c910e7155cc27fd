"""Checkpointed RNG state: every generator sampling draws from, CUDA's included."""
from __future__ import annotations

import random

import torch

from rlvr_cli.trainer import checkpoint as ckpt


def test_rng_state_round_trips_on_cpu():
    state = ckpt.rng_state()
    a = (random.random(), torch.rand(3))
    ckpt.set_rng_state(state)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_cuda_generators_are_saved_and_restored(monkeypatch):
    """HF sampling on a GPU draws from the CUDA generator: a resume that restores only the CPU one
    samples different responses from the unbroken run. (No GPU here: the CUDA calls are recorded.)"""
    saved = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    state = ckpt.rng_state()
    assert state["cuda"] is saved
    ckpt.set_rng_state(state)
    assert restored == [saved]


def test_cuda_state_on_a_machine_without_that_gpu_warns_and_resumes(monkeypatch, caplog):
    state = {**ckpt.rng_state(), "cuda": [torch.zeros(4, dtype=torch.uint8)]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt.set_rng_state(state)
    assert "will not repeat the unbroken run exactly" in caplog.text
