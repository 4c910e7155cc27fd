"""Checkpoints: HF-format weights (loadable with ``from_pretrained``) + everything needed to resume.

Layout: ``<out_dir>/checkpoints/step_000010/{hf/, trainer_state.pt, rng_rank<r>.pt, manifest.json}``,
plus ``adapter/`` (peft's format) with ``model.lora`` (``hf/`` then holds the merged model).

A checkpoint verifies itself. It is written to a temporary folder; the manifest (every file's size
and sha256, the world size, the config hash) is written last; files and folders are fsynced; then
the folder is renamed into place. So a run killed at any point leaves either no ``step_*`` folder or
one whose manifest says whether every byte is still there. ``trainer.resume=auto`` skips a damaged
checkpoint with one warning and takes the newest intact one; a checkpoint named by hand that fails
is an error naming the file.

Everything is loaded with ``torch.load(weights_only=True)``: trainer state and RNG states are
tensors and plain Python values, so a checkpoint someone sent you cannot run code when opened.
(DeepSpeed's own partitions, under ``deepspeed/``, are read by DeepSpeed's loader.)
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr_cli.errors import UserError

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
# fault injection for the kill-anywhere tests: "<step>:<phase>" SIGKILLs this process at that phase
# of that step's checkpoint write (phases: engine, hf, state, manifest, renamed)
FAULT_KILL_CHECKPOINT_ENV = "RLVR_FAULT_KILL_CHECKPOINT"
_HASH_CHUNK = 1 << 22


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous one is intact."""


# ----------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Every generator sampling can draw from: Python, NumPy, torch's CPU generator and, where there
    is a GPU, every CUDA device's generator (HF sampling on GPU draws from the CUDA one). Plain values
    and tensors only (NumPy's key as a tensor), so it loads with ``weights_only=True``."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        key = numpy_state["state"]["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        numpy_state = {**numpy_state, "state": {**numpy_state["state"], "key": key.astype(np.uint32)}}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(saved):
            torch.cuda.set_rng_state_all(saved)
        else:  # resuming elsewhere still works; only the sampling sequence differs from an unbroken run
            log.warning("checkpoint has RNG state for %d CUDA device(s), this process sees %d: CUDA sampling will not "
                        "repeat the unbroken run exactly", len(saved), torch.cuda.device_count() if torch.cuda.is_available() else 0)


# ----------------------------------------------------------------------------------------- files
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path, fsync: bool = False) -> str:
    """The file's sha256; with ``fsync``, its data is also forced to disk (the writer's pass)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, world_size: int, config_hash: str | None) -> None:
    """Hash and fsync every file, then write the manifest and fsync it and every folder."""
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p, fsync=True)}
             for p in _files(folder)}
    manifest = {"format": 1, "world_size": world_size, "config_hash": config_hash, "files": files}
    with (folder / MANIFEST).open("w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    for sub in sorted({p.parent for p in folder.rglob("*")} | {folder}, key=lambda p: -len(p.parts)):
        _fsync_dir(sub)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fault(step: int, phase: str) -> None:
    if os.environ.get(FAULT_KILL_CHECKPOINT_ENV) == f"{step}:{phase}":
        os.kill(os.getpid(), signal.SIGKILL)


def step_of(ckpt: Path) -> int:
    """The step a ``step_<N>`` checkpoint folder holds."""
    return int(_STEP_DIR.match(Path(ckpt).name).group(1))


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """Every ``step_*`` folder of a run, oldest first (intact or not: ``verify`` tells)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_checkpoint(out_dir: Path, step: int, engine, tokenizer, state: dict[str, Any],
                    keep_last: int | None = None, rank: int = 0, world_size: int = 1) -> Path:
    """Every rank calls this. Rank 0 writes the HF export and ``trainer_state.pt``; each rank writes its
    RNG state; the engine writes its own state (DeepSpeed: model/optimizer partitions per rank); rank
    0 writes the manifest, fsyncs and renames. Old checkpoints are pruned only once the new one is in
    place. A failed write (``OSError``: disk full, quota) removes the partial folder and raises
    ``CheckpointWriteError``; earlier checkpoints are untouched."""
    from rlvr_cli import dist as ddp

    root = Path(out_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    try:
        if rank == 0:
            for stale in root.glob(".tmp_step_*"):  # left by a run killed mid-save
                shutil.rmtree(stale, ignore_errors=True)
            (tmp / "hf").mkdir(parents=True)
        ddp.barrier()
        engine.save(tmp, {"step": step})
        _fault(step, "engine")
        weights = engine.full_state_dict() if hasattr(engine, "full_state_dict") else None
        torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
        if rank == 0:
            _save_weights(engine.module, tmp, weights)
            tokenizer.save_pretrained(tmp / "hf")
            _fault(step, "hf")
            torch.save(state, tmp / "trainer_state.pt")
            _fault(step, "state")
        ddp.barrier()
        if rank == 0:
            write_manifest(tmp, world_size, config_hash(state.get("config") or {}))
            _fault(step, "manifest")
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            _fsync_dir(root)
            _fault(step, "renamed")
            problem = verify(final, hashes=False)
            if problem:
                raise CheckpointWriteError(f"checkpoint step {step} did not verify after writing: {problem}")
            if keep_last:
                for old in [d for d in checkpoint_dirs(out_dir) if d != final][: -(keep_last - 1) or None]:
                    shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        earlier = [d.name for d in checkpoint_dirs(out_dir) if d != final]
        reason = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise CheckpointWriteError(f"checkpoint step {step} not written ({reason}: {e.filename or root}); "
                                   f"{'the last checkpoint, ' + earlier[-1] + ', is untouched' if earlier else 'no earlier checkpoint'}") from e
    ddp.barrier()
    return final


def _save_weights(module: torch.nn.Module, folder: Path, weights: dict[str, torch.Tensor] | None) -> None:
    """``hf/``: the policy as plain ``from_pretrained`` loads it. With LoRA, the merged weights there
    (only the adapted layers differ from the base) and the adapter itself in ``adapter/`` (peft's
    format: what resume and ``model.adapter`` load). ``weights``: the consolidated state dict where the
    module's own is partitioned (ZeRO-3)."""
    from rlvr_cli import lora

    if not lora.has_lora(module):
        module.save_pretrained(folder / "hf", safe_serialization=True, state_dict=weights)
        return
    state = weights if weights is not None else module.state_dict()
    lora.save_adapter(module, folder / "adapter", state=state)
    with lora.plain_save(module):
        module.save_pretrained(folder / "hf", safe_serialization=True,
                               state_dict=lora.merged_state_dict(state, lora.scalings(module), device="cpu"))


def verify(ckpt: Path, hashes: bool = True) -> str | None:
    """None if every file the manifest lists is there with its size (and, with ``hashes``, its sha256);
    else what is wrong, naming the file. A checkpoint written before manifests existed (no
    ``manifest.json`` but a ``trainer_state.pt``) passes unverified."""
    ckpt = Path(ckpt)
    path = ckpt / MANIFEST
    if not path.is_file():
        return None if (ckpt / "trainer_state.pt").is_file() else f"{path}: missing (the write never finished)"
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{path}: unreadable ({e})"
    for name, entry in files.items():
        file = ckpt / name
        if not file.is_file():
            return f"{file}: missing"
        if file.stat().st_size != entry["size"]:
            return f"{file}: {file.stat().st_size} bytes, the manifest says {entry['size']}"
        if hashes and _sha256(file) != entry["sha256"]:
            return f"{file}: contents differ from the manifest (sha256)"
    return None


def latest_intact(out_dir: Path, hashes: bool = True) -> Path | None:
    """The newest checkpoint that verifies; each damaged one newer than it is skipped with a warning."""
    for found in reversed(checkpoint_dirs(out_dir)):
        problem = verify(found, hashes)
        if problem is None:
            return found
        log.warning("skipping damaged checkpoint %s: %s", found.name, problem)
    return None


def resolve_resume(resume: str | None, out_dir: Path, hashes: bool = True) -> Path | None:
    """``None``/``never``: start fresh; ``auto``: the newest intact checkpoint in ``out_dir`` if any;
    else a path to a checkpoint folder (which must verify) or a run folder (its newest intact one).
    ``hashes=False``: sizes only (the ranks that follow rank 0's choice)."""
    if resume in (None, "", "never", "none", False):
        return None
    if resume == "auto":
        return latest_intact(out_dir, hashes)
    p = Path(str(resume)).expanduser()
    if p.is_dir() and (_STEP_DIR.match(p.name) or (p / "trainer_state.pt").is_file() or (p / MANIFEST).is_file()):
        problem = verify(p, hashes)
        if problem:
            raise UserError(f"trainer.resume={resume}: damaged checkpoint: {problem}")
        return p
    if checkpoint_dirs(p):
        found = latest_intact(p, hashes)
        if found:
            return found
        raise UserError(f"trainer.resume={resume}: every checkpoint there is damaged (see the warnings above)")
    raise UserError(f"trainer.resume={resume}: no checkpoint found there (expected {p}/checkpoints/step_*/)")


def _safe_load(path: Path, legacy_numpy: bool = False) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain values only, never arbitrary pickles.
    ``legacy_numpy``: also NumPy arrays (RNG files written before rlvr saved NumPy's key as a tensor)."""
    try:
        if legacy_numpy:
            with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise UserError(f"refusing to load {path}: it holds Python objects, not only tensors and plain values, and "
                        f"opening it could run code (torch.load weights_only=True){': ' + detail if detail else ''}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


_NUMPY_ARRAY_GLOBALS = [np.ndarray, np.dtype, np.dtypes.UInt32DType,
                        getattr(np, "_core", getattr(np, "core", None)).multiarray._reconstruct]


def load_state(ckpt: Path, rank: int = 0) -> dict[str, Any]:
    """The trainer state, with this rank's RNG state (a resume needs the same world size)."""
    state = _safe_load(Path(ckpt) / "trainer_state.pt")
    rng_file = Path(ckpt) / f"rng_rank{rank}.pt"
    if not rng_file.is_file():
        raise UserError(f"{ckpt} has no RNG state for rank {rank}: resume with the world size it was saved with")
    state["rng"] = _safe_load(rng_file, legacy_numpy=True)
    return state


def describe(out_dir: Path) -> list[dict[str, Any]]:
    """One row per checkpoint of a run: step, size, and whether it verifies (``rlvr checkpoints``)."""
    rows = []
    for found in checkpoint_dirs(out_dir):
        problem = verify(found)
        size = sum(p.stat().st_size for p in found.rglob("*") if p.is_file())
        status = "verified" if problem is None and (found / MANIFEST).is_file() else (
            "unverified (no manifest)" if problem is None else "damaged")
        rows.append({"path": str(found), "step": step_of(found), "bytes": size, "status": status,
                     "problem": problem})
    return rows


USAGE = ("usage: rlvr checkpoints RUN_DIR (a run folder, holding checkpoints/step_*)\n"
         "Each checkpoint's step, size and state (verified / damaged), and the one trainer.resume=auto takes.")


def checkpoints_main(args: list[str]) -> None:
    """``rlvr checkpoints RUN_DIR``: each checkpoint's step, size and state (verified / damaged), and
    which one ``trainer.resume=auto`` would take."""
    from rich.console import Console
    from rich.table import Table

    if len(args) != 1 or args[0].startswith("-"):
        raise UserError(USAGE.splitlines()[0])
    rows = describe(Path(args[0]))
    if not rows:
        raise UserError(f"{args[0]}: no checkpoints (expected {args[0]}/checkpoints/step_*/)")
    chosen = next((r["path"] for r in reversed(rows) if r["problem"] is None), None)
    table = Table(title=f"checkpoints of {args[0]}")
    for column in ("step", "size", "state", "resume=auto"):
        table.add_column(column, justify="right" if column in ("step", "size") else "left")
    for r in rows:
        state = r["status"] if r["problem"] is None else f"[red]damaged[/red]: {r['problem']}"
        table.add_row(str(r["step"]), f"{r['bytes'] / 2**20:.1f} MiB", state, "←" if r["path"] == chosen else "")
    Console(width=200).print(table)
