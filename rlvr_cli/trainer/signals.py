"""Graceful stop: SIGTERM, SIGINT and SIGUSR1 end a run at a step boundary with a checkpoint.

What Slurm sends at preemption and at the time limit (SIGTERM, or ``--signal=USR1@120`` ahead of it),
what ``docker stop`` and Kubernetes send (SIGTERM) and Ctrl-C (SIGINT) set a flag; the loop reads
it once per step (all-reduced over ranks, so every rank stops after the same step), saves the last
completed step, flushes the logs and exits with 0 for SIGUSR1 and 128 + the signal otherwise.

A second signal more than ``DUPLICATE_WINDOW_S`` after the first exits at once, without saving.
Within that window it is taken as the same request: a terminal's Ctrl-C reaches every process of
the foreground group, and Slurm and torchrun both signal a worker, within milliseconds of each other.

``stop_mode="now"``: a signal that arrives while the step's rollouts are being generated abandons
the step (raising ``StepAbandoned`` out of generation); nothing of the step has touched the weights
yet, so the checkpoint of the last completed step is exact. One process only: under several ranks a
rank cannot leave generation alone (ZeRO-3 gathers weights collectively), so they finish the step.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
DUPLICATE_WINDOW_S = 2.0
STOP_MODES = ("step", "now")


class StepAbandoned(BaseException):
    """Raised out of generation by a stop signal under ``stop_mode=now`` (a BaseException, so no
    ``except Exception`` on the way swallows it)."""


def exit_code(signum: int) -> int:
    """0 for SIGUSR1 (a requested stop: Slurm's early warning), 128 + signal otherwise (143 for SIGTERM)."""
    return 0 if signum == signal.SIGUSR1 else 128 + signum


def name(signum: int) -> str:
    return signal.Signals(signum).name


class GracefulStop:
    """The stop flag and its signal handlers (installed in the main thread only; elsewhere a no-op)."""

    def __init__(self, mode: str = "step", abandon_allowed: bool = True):
        self.abandon_allowed = abandon_allowed and mode == "now"
        self.signum: int | None = None
        self._first_at = 0.0
        self._generating = False
        self._previous: dict[int, object] = {}

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 (the handler's signature)
        now = time.monotonic()
        if self.signum is not None:
            if now - self._first_at > DUPLICATE_WINDOW_S:
                print(f"rlvr: second signal ({name(signum)}): exiting now, without a checkpoint", file=sys.stderr, flush=True)
                os._exit(128 + signum)
            return
        self.signum, self._first_at = signum, now
        when = "abandoning the step in progress" if self._generating and self.abandon_allowed else "finishing the step in progress"
        print(f"rlvr: {name(signum)} received: {when}, then saving a checkpoint (a second signal exits at once)",
              file=sys.stderr, flush=True)
        if self._generating and self.abandon_allowed:
            raise StepAbandoned(signum)

    @contextmanager
    def generating(self) -> Iterator[None]:
        """Marks rollout generation, the part of a step that ``stop_mode=now`` may abandon."""
        if self.signum is not None and self.abandon_allowed:
            raise StepAbandoned(self.signum)
        self._generating = True
        try:
            yield
        finally:
            self._generating = False

    def agreed(self) -> int | None:
        """The stop signal if any rank got one (one all-reduce, once per step): every rank stops together."""
        from rlvr_cli import dist as ddp

        signum = ddp.all_max(self.signum or 0)
        return signum or None
