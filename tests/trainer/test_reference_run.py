"""The embedded default trains exactly as it did before the typed configs (issue 25: no behaviour change):
its first 3 steps' metrics, validation included, equal a reference stored from the code before the change
(timings and throughputs left out: they are the machine's, not the run's)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REFERENCE = Path(__file__).parent / "data" / "default_3_steps.json"
OVERRIDES = ["trainer.max_steps=3", "trainer.progress=false", "trainer.save_every=0"]


@pytest.mark.slow
def test_the_default_run_gives_the_stored_metrics_bit_for_bit(tmp_path):
    from hydra import compose, initialize_config_dir

    from rlvr_cli.commands import train_main
    from rlvr_cli.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=OVERRIDES)
    train_main(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    got = [{k: v for k, v in r.items() if not k.startswith(("perf/", "timing_s/"))} for r in rows]
    want = json.loads(REFERENCE.read_text())
    assert [r["step"] for r in got] == [r["step"] for r in want] == [0, 1, 2, 3]
    for g, w in zip(got, want):
        assert g == w, {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)}
