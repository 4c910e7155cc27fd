"""Stage 8 (sinks): metrics go to ``metrics.jsonl`` in the run folder and, with ``logger=wandb``, to wandb.

Only rank 0 tracks; other ranks get ``NullTracker`` so the loop has no rank ``if``s.
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlvr_cli.typed import load, setting

WANDB_MODES = ("offline", "online", "disabled", "shared", "dryrun", "run")


@dataclass(frozen=True, kw_only=True)
class LoggerConfig:
    """``logger.*`` (conf/logger: none, wandb): where metrics go besides the run's metrics.jsonl."""

    kind: Literal["none", "wandb"] = setting("none", help="none (metrics.jsonl only) | wandb (also a wandb run)")
    project: str = setting("rlvr", help="the wandb project")
    name: str | None = setting(None, help="the wandb run's name (conf/logger/wandb.yaml: the run's exp_name)")
    mode: Literal[WANDB_MODES] = setting("offline", help="wandb's mode: offline (sync later) | online | disabled")
    id: str | None = setting(None, help="pin the wandb run id (default: kept in the run folder, so a resume "
                             "logs into the same run)")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; a missing value is honest
    return v


class NullTracker:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def ensure(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self, preempted: bool = False) -> None:
        pass


class JsonlTracker:
    """One JSON object per step. On resume, lines after the checkpoint's step are dropped first, so the
    file reads as if the run had never stopped."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.steps: set[int] = set()
        if resume_step is not None and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
            self.steps = {json.loads(ln).get("step", 0) for ln in kept}
        elif resume_step is None:
            self.path.write_text("")

    def ensure(self, metrics: dict[str, Any], step: int) -> None:
        """Log ``step`` unless the file has it (a run killed between its checkpoint and its log line)."""
        if step not in self.steps:
            self.log(metrics, step)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.steps.add(step)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: _clean(v) for k, v in metrics.items()}}) + "\n")

    def finish(self, preempted: bool = False) -> None:
        pass


class WandbTracker:
    """A wandb run. Its id is kept in the run folder (``wandb_run_id``), so a resumed run logs into the
    same wandb run instead of starting a new one; ``logger.id`` pins it by hand.

    Exactly once: the last step sent to wandb is kept in the run folder (``wandb_last_step``), and a
    resumed run sends only later steps. The steps it redoes after the checkpoint were logged before
    the stop (with the same values, since a resume repeats the unbroken run), so no chart shows a
    step twice, in online mode and in offline runs synced later alike."""

    ID_FILE = "wandb_run_id"
    LAST_STEP_FILE = "wandb_last_step"

    def __init__(self, cfg: LoggerConfig | Mapping[str, Any], run_config: dict[str, Any], out_dir: Path,
                 resuming: bool = False):
        import wandb

        cfg = load(LoggerConfig, cfg, "logger.")
        id_file = Path(out_dir) / self.ID_FILE
        run_id = cfg.id or (id_file.read_text().strip() if resuming and id_file.is_file() else None)
        run_id = run_id or uuid.uuid4().hex[:12]
        self._run = wandb.init(
            project=cfg.project, name=cfg.name, mode=cfg.mode,
            dir=str(out_dir), config=run_config, resume="allow", id=run_id,
        )
        id_file.write_text(run_id)
        self._last_file = Path(out_dir) / self.LAST_STEP_FILE
        self._last = -1
        if resuming and self._last_file.is_file():
            self._last = int(self._last_file.read_text().strip() or -1)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if step <= self._last:  # sent before the stop; the resumed run repeats it
            return
        self._run.log(metrics, step=step)
        self._last = step
        self._last_file.write_text(str(step))

    ensure = log  # a step already sent is skipped either way

    def finish(self, preempted: bool = False) -> None:
        if preempted:  # shown as preempted (resumable), not failed or finished
            self._run.mark_preempting()
        self._run.finish()


class MultiTracker:
    def __init__(self, *trackers):
        self.trackers = trackers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def ensure(self, metrics: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.ensure(metrics, step)

    def finish(self, preempted: bool = False) -> None:
        for t in self.trackers:
            t.finish(preempted)


def build_tracker(logger_cfg: LoggerConfig | Mapping[str, Any], run_config: dict[str, Any], out_dir: Path,
                  resume_step: int | None, rank: int = 0):
    if rank != 0:
        return NullTracker()
    trackers = [JsonlTracker(Path(out_dir) / "metrics.jsonl", resume_step)]
    if load(LoggerConfig, logger_cfg, "logger.").kind == "wandb":
        trackers.append(WandbTracker(logger_cfg, run_config, out_dir, resuming=resume_step is not None))
    return MultiTracker(*trackers)
