"""The benchmark files of ``conf/benchmark/``: where a benchmark's problems come from and how its rows
read (field names, answer format). ``rlvr eval`` evaluates on them; a data config's held-out split
names one (``data.test_benchmark``), so both read the same gold answers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rlvr_cli.errors import UserError

BENCHMARK_DIR = Path(__file__).resolve().parents[2] / "conf" / "benchmark"


def benchmark_names() -> list[str]:
    return sorted(p.stem for p in BENCHMARK_DIR.glob("*.yaml"))


def benchmark_file(name: str) -> dict[str, Any]:
    """A benchmark's file as a plain mapping, its ``name`` set."""
    from omegaconf import OmegaConf

    if name not in benchmark_names():
        raise UserError(f"unknown benchmark '{name}'; valid: {', '.join(benchmark_names())} (conf/benchmark/*.yaml)")
    bench = OmegaConf.to_container(OmegaConf.load(BENCHMARK_DIR / f"{name}.yaml"), resolve=True)
    bench["name"] = name
    return bench
