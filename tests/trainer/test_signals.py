"""Graceful stop: what each signal does to the flag, the duplicate window, abandoning generation, and
the launcher passing a signal on to the rank processes."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from rlvr_cli.trainer import signals
from rlvr_cli.trainer.signals import GracefulStop, StepAbandoned, exit_code


def test_exit_codes_follow_the_convention_and_usr1_is_a_clean_stop():
    assert exit_code(signal.SIGTERM) == 143 and exit_code(signal.SIGINT) == 130
    assert exit_code(signal.SIGUSR1) == 0  # Slurm's early warning: a requested stop, requeued by the script


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_sets_the_flag_and_nothing_else(sig, capsys):
    stop = GracefulStop().install()
    try:
        os.kill(os.getpid(), sig)
        time.sleep(0.01)  # the handler runs in the main thread at the next bytecode
        assert stop.signum == sig and stop.agreed() == sig
    finally:
        stop.uninstall()
    assert f"{signal.Signals(sig).name} received: finishing the step in progress" in capsys.readouterr().err
    assert signal.getsignal(sig) is not stop._handle  # the previous handler is back


def test_a_second_signal_exits_at_once_but_one_within_the_window_is_the_same_request(monkeypatch):
    """Ctrl-C reaches every process of the terminal's group and Slurm and torchrun both signal a rank:
    copies within milliseconds are one request. A later one is the user insisting."""
    clock = [100.0]
    monkeypatch.setattr(signals.time, "monotonic", lambda: clock[0])

    def fake_exit(code):
        raise SystemExit(code)

    monkeypatch.setattr(signals.os, "_exit", fake_exit)
    stop = GracefulStop()
    stop._handle(signal.SIGTERM, None)
    clock[0] += 0.01
    stop._handle(signal.SIGTERM, None)  # the duplicate: ignored
    assert stop.signum == signal.SIGTERM
    clock[0] += signals.DUPLICATE_WINDOW_S + 1
    with pytest.raises(SystemExit) as e:
        stop._handle(signal.SIGINT, None)
    assert e.value.code == 130


def test_stop_mode_now_abandons_generation_only():
    stop = GracefulStop("now").install()
    try:
        with pytest.raises(StepAbandoned):
            with stop.generating():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # a long generate: interrupted, not waited for
        assert stop.signum == signal.SIGTERM
        with pytest.raises(StepAbandoned):  # the next step's generation does not start either
            with stop.generating():
                pass
    finally:
        stop.uninstall()


def test_several_ranks_never_abandon_generation():
    """ZeRO-3 gathers weights collectively while generating: one rank cannot leave alone."""
    stop = GracefulStop("now", abandon_allowed=False).install()
    try:
        with stop.generating():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert stop.signum == signal.SIGTERM
    finally:
        stop.uninstall()


_FAKE_LAUNCHER = r"""
import signal, subprocess, sys
rank = subprocess.Popen([sys.executable, "-c", '''
import os, signal, sys, time
def handle(signum, frame):
    open(sys.argv[1] + "/got", "w").write(signal.Signals(signum).name)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, handle)
open(sys.argv[1] + "/ready", "w").close()
time.sleep(60)
''', sys.argv[1]])
launcher_ignores = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
open(sys.argv[1] + "/launcher_ignores", "w").write(str(launcher_ignores))
sys.exit(1 if rank.wait() else 0)  # torchrun: a failed rank fails the launcher
"""


def test_the_launcher_ignores_stop_signals_and_the_ranks_get_them(tmp_path):
    """``rlvr train trainer.gpus=N``: a SIGTERM to the rlvr process reaches the ranks (which save and
    exit 143), not torchrun (which would kill them after 30 s and dies on SIGUSR1); the rlvr process
    exits with the signal's status."""
    from rlvr_cli.commands import _run_launcher

    def send_when_ready():
        for _ in range(600):
            if (tmp_path / "ready").exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=send_when_ready, daemon=True).start()
    rc = _run_launcher([sys.executable, "-c", _FAKE_LAUNCHER, str(tmp_path)])
    assert rc == 143
    assert (tmp_path / "got").read_text() == "SIGTERM"
    assert (tmp_path / "launcher_ignores").read_text() == "True"
