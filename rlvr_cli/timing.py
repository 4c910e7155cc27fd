"""Per-stage wall time of a training step, under verl's ``timing_s/*`` names.

    timer = StageTimer(device)
    with timer.stage("gen", tokens=n_response_tokens):
        ...
    metrics = timer.metrics(step_seconds)   # timing_s/<stage>, timing_s/other, timing_s/step, throughput

A stage may be entered several times in one step (generation and reward alternate over DAPO's refill
rounds); its seconds and tokens add up. On a GPU the device is synchronised when a stage ends, never
inside it (no per-micro-batch sync), so a stage's seconds include the kernels it queued; its peak
allocated memory is recorded too (``perf/max_memory_allocated_gb/<stage>``). ``timing_s/other`` is
whatever the step spent outside every stage, so the stages and ``other`` add up to ``timing_s/step``.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

class StageTimer:
    """Seconds (and optionally tokens and peak GPU memory) per stage, for one step at a time."""

    def __init__(self, device: torch.device | None = None):
        self.cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = {}
        self.tokens: dict[str, float] = {}
        self.peak_gb: dict[str, float] = {}
        self._stack: list[dict[str, float]] = []  # open stages, innermost last

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def stage(self, name: str, tokens: float | None = None) -> Iterator[None]:
        """Time the block as stage ``name``. A stage entered inside another is taken out of the outer
        one's seconds (a method's mini-batch statistics inside the update), so nothing counts twice."""
        self._sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        frame = {"inner": 0.0, "peak": 0.0}
        self._stack.append(frame)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - t0
            self._stack.pop()
            self.add(name, elapsed - frame["inner"], tokens)
            if self._stack:
                self._stack[-1]["inner"] += elapsed
            if self.cuda:
                peak = max(torch.cuda.max_memory_allocated(self.device) / 2**30, frame["peak"])
                self.peak_gb[name] = max(self.peak_gb.get(name, 0.0), peak)
                if self._stack:
                    self._stack[-1]["peak"] = max(self._stack[-1]["peak"], peak)

    def add(self, name: str, seconds: float, tokens: float | None = None) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)
        if tokens is not None:
            self.tokens[name] = self.tokens.get(name, 0.0) + float(tokens)

    def move(self, src: str, dst: str, seconds: float) -> None:
        """Book ``seconds`` of stage ``src`` under ``dst`` instead (the weight sync a rollout engine
        does inside its first ``generate`` of a step)."""
        seconds = min(float(seconds), self.seconds.get(src, 0.0))
        if seconds > 0:
            self.seconds[src] -= seconds
            self.add(dst, seconds)

    def metrics(self, step_seconds: float) -> dict[str, float]:
        """``timing_s/<stage>`` for every stage entered, ``timing_s/other`` (≥ 0) and ``timing_s/step``;
        ``perf/tokens_per_s/<stage>`` where tokens were given; peak memory per stage on a GPU."""
        out = {f"timing_s/{k}": v for k, v in self.seconds.items()}
        out["timing_s/other"] = max(0.0, step_seconds - sum(self.seconds.values()))
        out["timing_s/step"] = float(step_seconds)
        for k, n in self.tokens.items():
            if self.seconds.get(k, 0.0) > 0:
                out[f"perf/tokens_per_s/{k}"] = n / self.seconds[k]
        out.update({f"perf/max_memory_allocated_gb/{k}": v for k, v in self.peak_gb.items()})
        return out
