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


def test_a_step_checkpointed_but_never_logged_is_logged_on_resume_once(tmp_path):
    """Killed between the checkpoint and the metrics line: the resume logs the saved row, once."""
    t = JsonlTracker(tmp_path / "metrics.jsonl")
    t.log({"loss": 1.0}, 1)
    again = JsonlTracker(tmp_path / "metrics.jsonl", resume_step=2)
    again.ensure({"loss": 2.0}, 2)
    again.ensure({"loss": 1.5}, 1)  # already there: not repeated
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0)]


class _FakeRun:
    def __init__(self, calls):
        self.calls = calls

    def log(self, metrics, step):
        self.calls.append(("log", step))

    def mark_preempting(self):
        self.calls.append(("preempting",))

    def finish(self):
        self.calls.append(("finish",))


def test_wandb_gets_each_step_exactly_once_across_a_stop_and_resume(tmp_path, monkeypatch):
    """Steps 3-4 were sent before the stop (checkpoint at 2): the resumed run redoes them and sends
    only step 5 on, into the same run id; a signal stop marks the run preempted (resumable)."""
    import sys
    import types

    calls, inits = [], []
    fake = types.SimpleNamespace(init=lambda **kw: inits.append(kw) or _FakeRun(calls))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = {"kind": "wandb", "mode": "offline"}
    first = WandbTracker(cfg, {}, tmp_path)
    for step in (1, 2, 3, 4):
        first.log({"x": step}, step)
    first.finish(preempted=True)
    assert calls[-2:] == [("preempting",), ("finish",)]
    calls.clear()
    again = WandbTracker(cfg, {}, tmp_path, resuming=True)
    for step in (3, 4, 5):
        again.log({"x": step}, step)
    assert calls == [("log", 5)] and inits[1]["id"] == inits[0]["id"] and inits[1]["resume"] == "allow"
