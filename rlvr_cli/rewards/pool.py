"""Worker processes that run the slow comparisons (math-verify) under a wall-clock deadline.

Why processes and not threads: sympy can take minutes or never finish on odd inputs (towers of
powers, huge factorials, deeply nested expressions), and a Python thread cannot be stopped from
outside.  math-verify's own guard is ``signal.alarm``: whole seconds, main thread only, and it
cannot interrupt a long C-level call.  A process can always be killed.  So each slow comparison
gets a wall-clock deadline; a worker that overruns is SIGKILLed, reaped (no zombies), and
replaced the next time a worker is needed, and the item is graded ``timeout``.  math-verify's
signal timeouts are switched off (``parsing_timeout=None``, ``timeout_seconds=None``) because the
worker pool is the timeout mechanism.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections import deque
from typing import Sequence

from rlvr_cli.rewards.fast import DEFAULT_REL_TOL
from rlvr_cli.rewards.symbolic import symbolic_status

log = logging.getLogger(__name__)

# Test hooks, active only when this environment variable is "1" in the worker's environment:
# a prediction equal to HANG_TOKEN makes the worker sleep forever (a stand-in for a runaway sympy
# call), CRASH_TOKEN makes it die abruptly.  They let tests prove that runaways are killed.
TEST_HOOK_ENV = "RLVR_GRADER_TEST_HOOKS"
HANG_TOKEN = "__rlvr_test_hang__"
CRASH_TOKEN = "__rlvr_test_crash__"

# A worker must import sympy/math-verify and warm up before it is "ready"; that is not charged
# to any item's timeout, but a worker that never gets ready is an error, not a hang.
_STARTUP_TIMEOUT_S = 60.0
_JOIN_TIMEOUT_S = 5.0
_STOP_GRACE_S = 1.0

_WARM_UP = ((r"\frac{\sqrt{8}}{2}", r"\sqrt{2}"), (r"[1, \pi)", r"[1,\pi)"), ("x^2+1", "1+x^2"))

# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


def _worker_main(
    conn: multiprocessing.connection.Connection, parent_end: multiprocessing.connection.Connection
) -> None:
    """Worker loop: receive ``(token, pred, gold, rel_tol)``, reply ``(token, status)``; ``None`` stops.

    SIGINT, SIGTERM and SIGUSR1 are ignored so that Ctrl-C in a terminal (sent to the whole process
    group) and a scheduler's stop signal (Slurm signals every process of a job step) reach only the
    trainer, which finishes its step and then shuts the workers down itself (``reap``: SIGKILL after
    a grace).  If the parent dies, the pipe closes and ``recv`` raises, so orphaned workers exit on
    their own.  For that to happen the worker must not hold the parent's end of its own pipe, which
    a forked child inherits: close it.
    """
    parent_end.close()
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(stop, signal.SIG_IGN)
    try:
        for pred, gold in _WARM_UP:  # build the ANTLR parser and load sympy before "ready"
            symbolic_status(pred, gold)
        conn.send(("ready",))
        while True:
            message = conn.recv()
            if message is None:
                return
            token, pred, gold, rel_tol = message
            conn.send((token, _worker_compare(pred, gold, rel_tol)))
    except (EOFError, OSError):
        return


def _worker_compare(pred: str, gold: str, rel_tol: float) -> str:
    if os.environ.get(TEST_HOOK_ENV) == "1":
        _run_test_hook(pred)
    try:
        return symbolic_status(pred, gold, rel_tol)
    except Exception:  # noqa: BLE001 - defensive; symbolic_status already catches
        return "parse_error"


def _run_test_hook(pred: str) -> None:
    if pred == HANG_TOKEN:
        while True:
            time.sleep(3600)
    if pred == CRASH_TOKEN:
        os._exit(13)


class _Worker:
    """One worker process and the parent's end of its pipe.

    States: ``starting`` (importing / warming up), ``idle``, ``busy`` (one item in flight).
    ``deadline`` (monotonic seconds) applies while starting or busy.
    """

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child_end, parent_end), name="rlvr-grader-worker",
            daemon=True,
        )
        self.process.start()
        # Close our copy of the child's end so that a dead worker shows up as EOF on parent_end.
        child_end.close()
        self.conn = parent_end
        self.pid = self.process.pid
        self.state = "starting"
        self.job: int | None = None
        self.token: int | None = None
        self.deadline = time.monotonic() + _STARTUP_TIMEOUT_S

    def assign(self, job: int, token: int, pred: str, gold: str, timeout_s: float, rel_tol: float) -> bool:
        """Send one job; ``False`` if the worker is gone (it died while idle)."""
        try:
            self.conn.send((token, pred, gold, rel_tol))
        except OSError:
            return False
        self.state, self.job, self.token = "busy", job, token
        self.deadline = time.monotonic() + timeout_s
        return True

    def release(self) -> None:
        self.state, self.job, self.token = "idle", None, None

    def request_stop(self) -> None:
        """Ask an idle worker to exit (it finishes nothing in flight; there is nothing)."""
        try:
            self.conn.send(None)
        except OSError:
            pass

    def reap(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for exit, then SIGKILL and join so no zombie is left behind."""
        self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(_JOIN_TIMEOUT_S)
        self.conn.close()
        if self.process.exitcode is not None:
            self.process.close()
        else:  # pragma: no cover - a SIGKILLed process that does not exit in 5 s
            log.error("grader worker %s did not exit after SIGKILL", self.pid)

    def kill(self) -> None:
        self.reap(0.0)


class _WorkerPool:
    """Lazily started worker processes that run math-verify comparisons under a deadline."""

    def __init__(self, num_workers: int, timeout_s: float, start_method: str | None,
                 rel_tol: float = DEFAULT_REL_TOL) -> None:
        self.rel_tol = rel_tol
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.context = multiprocessing.get_context(start_method)
        self.workers: list[_Worker] = []
        self.tokens = itertools.count()

    def run(self, jobs: Sequence[tuple[str, str]]) -> list[str]:
        """Status for each ``(pred, gold)`` job, running up to ``num_workers`` at a time."""
        results: list[str | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        try:
            while pending or self._busy():
                self._start_workers(len(pending) + len(self._busy()))
                self._dispatch(pending, jobs)
                self._collect(results)
        finally:
            # Only non-empty after an exception (e.g. KeyboardInterrupt): their answers would
            # arrive during a later call, so kill them now.
            for worker in self._busy():
                self._discard(worker)
        return [status if status is not None else "parse_error" for status in results]

    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]

    def close(self) -> None:
        """Stop every worker and reap it.  Safe to call more than once."""
        workers, self.workers = self.workers, []
        for worker in workers:
            if worker.state == "idle":
                worker.request_stop()
        for worker in workers:
            worker.reap(_STOP_GRACE_S if worker.state == "idle" else 0.0)

    def _busy(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker.state == "busy"]

    def _start_workers(self, outstanding: int) -> None:
        while len(self.workers) < min(self.num_workers, outstanding):
            self.workers.append(_Worker(self.context))

    def _dispatch(self, pending: deque[int], jobs: Sequence[tuple[str, str]]) -> None:
        for worker in list(self.workers):
            if worker.state == "idle" and pending:
                job = pending[0]
                pred, gold = jobs[job]
                if worker.assign(job, next(self.tokens), pred, gold, self.timeout_s, self.rel_tol):
                    pending.popleft()
                else:
                    self._discard(worker)  # replaced by _start_workers on the next round

    def _collect(self, results: list[str | None]) -> None:
        """Wait for a reply or the nearest deadline, then handle replies and overruns."""
        active = [worker for worker in self.workers if worker.state in ("starting", "busy")]
        if not active:
            return
        wait_s = max(0.0, min(worker.deadline for worker in active) - time.monotonic())
        readable = multiprocessing.connection.wait([worker.conn for worker in active], wait_s)
        for worker in active:
            if worker.conn in readable:
                self._receive(worker, results)
        now = time.monotonic()
        for worker in active:
            if worker in self.workers and worker.state != "idle" and worker.deadline <= now:
                self._overrun(worker, results)

    def _receive(self, worker: _Worker, results: list[str | None]) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._died(worker, results)
            return
        if message == ("ready",):
            worker.release()
        elif worker.state == "busy" and message[0] == worker.token:
            results[worker.job] = message[1]
            worker.release()

    def _died(self, worker: _Worker, results: list[str | None]) -> None:
        """A worker exited on its own (crash, out-of-memory kill): its item is a parse error."""
        starting = worker.state == "starting"
        if worker.state == "busy":
            log.warning("grader worker %s died while comparing; item graded parse_error", worker.pid)
            results[worker.job] = "parse_error"
        self._discard(worker)
        if starting:
            raise RuntimeError("a grader worker process exited during start-up")

    def _overrun(self, worker: _Worker, results: list[str | None]) -> None:
        starting = worker.state == "starting"
        if worker.state == "busy":
            log.warning(
                "grader comparison exceeded %.1f s; killed worker %s", self.timeout_s, worker.pid
            )
            results[worker.job] = "timeout"
        self._discard(worker)
        if starting:
            raise RuntimeError(f"a grader worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)
