"""Checkpoints: HF-format weights (loadable with ``from_pretrained``) + everything needed to resume.

Layout: ``<out_dir>/checkpoints/step_000010/{hf/, trainer_state.pt}``. A checkpoint is written to a
temporary folder and renamed, so a run killed mid-save never leaves a half checkpoint that resume trusts.
"""
from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr_cli.errors import UserError

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict[str, Any]:
    """Every generator sampling can draw from: Python, NumPy, torch's CPU generator and, where there
    is a GPU, every CUDA device's generator (HF sampling on GPU draws from the CUDA one)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(saved):
            torch.cuda.set_rng_state_all(saved)
        else:  # resuming elsewhere still works; only the sampling sequence differs from an unbroken run
            log.warning("checkpoint has RNG state for %d CUDA device(s), this process sees %d: CUDA sampling will not "
                        "repeat the unbroken run exactly", len(saved), torch.cuda.device_count() if torch.cuda.is_available() else 0)


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "trainer_state.pt").is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(out_dir: Path, step: int, engine, tokenizer, state: dict[str, Any],
                    keep_last: int | None = None, rank: int = 0) -> Path:
    """Every rank calls this. Rank 0 writes the HF export and ``trainer_state.pt``; each rank writes its
    RNG state; the engine writes its own state (DeepSpeed: model/optimizer partitions per rank)."""
    from rlvr_cli import dist as ddp

    root = Path(out_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "hf").mkdir(parents=True)
    ddp.barrier()
    engine.save(tmp, {"step": step})
    weights = engine.full_state_dict() if hasattr(engine, "full_state_dict") else None
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        engine.module.save_pretrained(tmp / "hf", safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp / "hf")
        torch.save(state, tmp / "trainer_state.pt")
    ddp.barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if keep_last:
            for old in checkpoint_dirs(out_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    ddp.barrier()
    return final


def resolve_resume(resume: str | None, out_dir: Path) -> Path | None:
    """``None``/``never``: start fresh; ``auto``: latest checkpoint in ``out_dir`` if any; else a path
    to a checkpoint folder (or a run folder, whose latest checkpoint is taken)."""
    if resume in (None, "", "never", "none", False):
        return None
    if resume == "auto":
        found = checkpoint_dirs(out_dir)
        return found[-1] if found else None
    p = Path(str(resume)).expanduser()
    if (p / "trainer_state.pt").is_file():
        return p
    found = checkpoint_dirs(p)
    if found:
        return found[-1]
    raise UserError(f"trainer.resume={resume}: no checkpoint found there (expected {p}/checkpoints/step_*/trainer_state.pt)")


def load_state(ckpt: Path, rank: int = 0) -> dict[str, Any]:
    """The trainer state, with this rank's RNG state (a resume needs the same world size)."""
    state = torch.load(Path(ckpt) / "trainer_state.pt", map_location="cpu", weights_only=False)
    rng_file = Path(ckpt) / f"rng_rank{rank}.pt"
    if not rng_file.is_file():
        raise UserError(f"{ckpt} has no RNG state for rank {rank}: resume with the world size it was saved with")
    state["rng"] = torch.load(rng_file, map_location="cpu", weights_only=False)
    return state
