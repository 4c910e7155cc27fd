"""Checkpoints: RNG state (every generator sampling draws from, CUDA's included), manifests that
verify, safe loading, a full disk, ``rlvr checkpoints``."""
from __future__ import annotations

import dataclasses

import errno
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rlvr_cli.errors import UserError
from rlvr_cli.trainer import checkpoint as ckpt
from tests.trainer.conftest import compose_train


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


# --------------------------------------------------------------------------------------------
# Checkpoints that verify themselves, safe loading, a full disk
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from rlvr_cli.trainer.loop import GRPOTrainer

    t = GRPOTrainer.from_config(compose_train(["trainer.resume=never", "trainer.keep_last=null"]), tmp_path_factory.mktemp("run"))
    yield t
    t.close()


def _save(trainer, out, step, keep_last=None):
    trainer.out_dir, trainer.step = out, step
    trainer.trainer_cfg = dataclasses.replace(trainer.trainer_cfg, keep_last=keep_last)
    return trainer.save({"reward/mean": 0.25 * step})


def test_a_checkpoint_lists_every_file_with_size_and_hash_and_verifies(trainer, tmp_path):
    path = _save(trainer, tmp_path, 1)
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    assert {"trainer_state.pt", "rng_rank0.pt", "hf/model.safetensors", "hf/config.json"} <= set(manifest["files"])
    assert manifest["world_size"] == 1 and manifest["config_hash"]
    assert ckpt.verify(path) is None
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
def test_resume_auto_skips_a_damaged_newest_checkpoint_for_the_intact_one_before_it(trainer, tmp_path, caplog, damage):
    """A full disk or a node crash leaves a complete-looking folder with a short or corrupt file: the
    manifest catches it, resume=auto warns naming the file and takes the previous checkpoint."""
    older, newest = _save(trainer, tmp_path, 1), _save(trainer, tmp_path, 2)
    bad = newest / "trainer_state.pt"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:1000])
    elif damage == "flip_byte":  # same size: only the hash sees it
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
    else:
        bad.unlink()
    with caplog.at_level(logging.WARNING):
        assert ckpt.resolve_resume("auto", tmp_path) == older
    assert "skipping damaged checkpoint step_000002" in caplog.text and str(bad) in caplog.text
    with pytest.raises(UserError, match="damaged checkpoint: .*trainer_state.pt"):  # named by hand: an error
        ckpt.resolve_resume(str(newest), tmp_path)
    rows = {r["step"]: r for r in ckpt.describe(tmp_path)}
    assert rows[1]["status"] == "verified" and rows[2]["status"] == "damaged"


def test_a_write_killed_before_the_rename_is_invisible_and_cleaned_up_by_the_next_save(trainer, tmp_path):
    older = _save(trainer, tmp_path, 1)
    stale = tmp_path / "checkpoints" / ".tmp_step_000002"
    (stale / "hf").mkdir(parents=True)
    (stale / "trainer_state.pt").write_bytes(b"half")
    assert ckpt.resolve_resume("auto", tmp_path) == older
    _save(trainer, tmp_path, 3)
    assert not stale.exists()


def test_a_full_disk_leaves_the_last_checkpoint_intact_and_says_so(trainer, tmp_path, monkeypatch):
    older = _save(trainer, tmp_path, 1)
    real_save = torch.save

    def disk_full(obj, path, *args, **kwargs):
        if str(path).endswith("trainer_state.pt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(ckpt.CheckpointWriteError, match="step 2 not written \\(disk full.*step_000001, is untouched"):
        _save(trainer, tmp_path, 2, keep_last=1)
    assert ckpt.checkpoint_dirs(tmp_path) == [older] and ckpt.verify(older) is None  # not pruned
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))  # the partial write is gone


def test_keep_last_keeps_the_newest_checkpoints(trainer, tmp_path):
    for step in (1, 2, 3):
        _save(trainer, tmp_path, step, keep_last=2)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step_000002", "step_000003"]


def test_non_finite_weights_are_never_saved(trainer, tmp_path):
    p = next(trainer.model.parameters())
    keep = p.data.clone()
    try:
        p.data[0] = float("nan")
        with pytest.raises(UserError, match="non-finite values"):
            _save(trainer, tmp_path, 1)
    finally:
        p.data.copy_(keep)
    assert ckpt.checkpoint_dirs(tmp_path) == []


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/rlvr_pickle_ran_" + str(os.getpid()), "w"))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_not_executed(trainer, tmp_path):
    path = _save(trainer, tmp_path, 1)
    marker = Path("/tmp/rlvr_pickle_ran_" + str(os.getpid()))
    marker.unlink(missing_ok=True)
    torch.save({"step": 1, "evil": _Payload()}, path / "trainer_state.pt")
    with pytest.raises(UserError, match="refusing to load .*trainer_state.pt.*weights_only=True"):
        ckpt.load_state(path)
    assert not marker.exists()


def test_trainer_state_and_rng_load_with_weights_only(trainer, tmp_path):
    """Optimizer state, sampler, method and RNG states are tensors and plain values: nothing pickled."""
    path = _save(trainer, tmp_path, 1)
    state = ckpt.load_state(path)
    assert state["step"] == 1 and state["metrics"] == {"reward/mean": 0.25}
    np.random.seed(3)
    ckpt.set_rng_state(state["rng"])
    a = (np.random.rand(3), random.random(), torch.rand(2))
    ckpt.set_rng_state(ckpt.load_state(path)["rng"])
    b = (np.random.rand(3), random.random(), torch.rand(2))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])


def test_rng_files_written_before_this_version_still_load(tmp_path):
    """Older checkpoints kept NumPy's state as an array: still read (arrays only, no other objects)."""
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = np.random.rand(2)
    torch.save(legacy, tmp_path / "rng_rank0.pt")
    torch.save({"step": 3}, tmp_path / "trainer_state.pt")
    ckpt.set_rng_state(ckpt.load_state(tmp_path)["rng"])
    assert np.array_equal(np.random.rand(2), expected)


def test_rlvr_checkpoints_lists_steps_sizes_and_which_resume_takes(trainer, tmp_path, capsys):
    from rlvr_cli.cli import main

    _save(trainer, tmp_path, 1)
    newest = _save(trainer, tmp_path, 2)
    (newest / "hf" / "model.safetensors").write_bytes(b"x")
    main(["checkpoints", str(tmp_path)])
    out = capsys.readouterr().out
    assert "verified" in out and "damaged" in out and "model.safetensors" in out
    line_of_1 = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith("1 "))
    assert "←" in line_of_1  # resume=auto takes step 1
    with pytest.raises(SystemExit) as e:
        main(["checkpoints", str(tmp_path / "nowhere")])
    assert e.value.code == 2


def test_a_checkpoint_copied_under_another_name_still_resumes_by_path(trainer, tmp_path):
    import shutil

    best = tmp_path / "best"
    shutil.copytree(_save(trainer, tmp_path / "run", 1), best)
    assert ckpt.resolve_resume(str(best), tmp_path) == best


def test_a_failed_checkpoint_write_is_one_line_and_a_non_zero_exit(capsys):
    from rlvr_cli.commands import _guard

    def fail():
        raise ckpt.CheckpointWriteError("checkpoint step 2 not written (disk full: /x); the last checkpoint, "
                                        "step_000001, is untouched")

    with pytest.raises(SystemExit) as e:
        _guard(fail)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rlvr: error: checkpoint step 2 not written (disk full")
