"""Stage 8 sinks: metrics.jsonl always, wandb (offline, no key) on request, one wandb run across a resume."""
from __future__ import annotations

import json

from rlvr_cli.tracking import JsonlTracker, WandbTracker, build_tracker


def test_jsonl_resume_drops_lines_after_the_checkpoint(tmp_path):
    t = JsonlTracker(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        t.log({"loss": float(step), "bad": float("nan")}, step)
    JsonlTracker(tmp_path / "metrics.jsonl", resume_step=2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["bad"] is None  # NaN is written as null


def test_wandb_offline_writes_a_run_and_a_resume_continues_it(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the project's own default must need no key
    cfg = {"kind": "wandb", "project": "rlvr-test", "name": "t", "mode": "offline", "id": None}
    first = build_tracker(cfg, {"seed": 0}, tmp_path, resume_step=None)
    first.log({"reward/mean": 0.5}, 1)
    first.finish()
    run_id = (tmp_path / WandbTracker.ID_FILE).read_text()
    assert any(p.name.startswith("offline-run-") and p.name.endswith(run_id) for p in (tmp_path / "wandb").iterdir())
    again = build_tracker(cfg, {"seed": 0}, tmp_path, resume_step=1)
    again.log({"reward/mean": 0.6}, 2)
    again.finish()
    assert (tmp_path / WandbTracker.ID_FILE).read_text() == run_id
    fresh = build_tracker(cfg, {"seed": 0}, tmp_path / "other", resume_step=None)
    fresh.finish()
    assert (tmp_path / "other" / WandbTracker.ID_FILE).read_text() != run_id
