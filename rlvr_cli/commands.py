"""The bodies of the Hydra apps (``rlvr train``, ``rlvr eval``, ``rlvr plan``): compose -> run -> report."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from rlvr_cli.errors import UserError
from rlvr_cli.typed import to_dict

if TYPE_CHECKING:
    from rlvr_cli.configs import TrainConfig
    from rlvr_cli.trainer.config import TrainerConfig


def run_dir(cfg: DictConfig) -> Path:
    """``out_dir`` if set, else Hydra's run folder (``runs/<exp_name>``, per job under a sweep)."""
    if cfg.out_dir:
        return Path(cfg.out_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def train_main(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Train with a composed config (usable without Hydra's app, e.g. from tests or notebooks). The config
    is loaded into its typed nodes first: a bad value raises ``UserError`` before anything is written or loaded."""
    from rlvr_cli.configs import load_train_config

    return _train(load_train_config(cfg), out_dir)


def _train(cfg: TrainConfig, out_dir: Path, exit_on_stop: bool = False) -> dict[str, float]:
    """``exit_on_stop`` (the command): a run ended by a stop signal exits with that signal's status
    (0 for SIGUSR1, 128 + signal otherwise), after the checkpoint and the logs are closed."""
    from rlvr_cli.plan import check_before_train
    from rlvr_cli.progress import console, print_config
    from rlvr_cli.trainer.loop import GRPOTrainer

    # on a GPU (or with trainer.gpu_memory_gb): the memory plan's verdict; a run it says cannot fit stops
    # here, before anything is written or loaded (trainer.ignore_memory_plan=true runs it anyway)
    check_before_train(cfg)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    out_dir.mkdir(parents=True, exist_ok=True)
    if main_rank:
        print_config(cfg)
        (out_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(to_dict(cfg)))
    trainer = GRPOTrainer.from_config(cfg, out_dir)
    if main_rank:
        console.print(f"data: {trainer.train_report.summary()}; test: {trainer.test_report.summary()}")
        console.print(f"run folder: {out_dir}")
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    code = trainer.exit_code if exit_on_stop else 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK") is not None:
        _exit_rank(code)
    if code:
        sys.exit(code)
    return result


def _exit_rank(code: int = 0) -> None:
    """End a launcher's rank process right after a clean finish (process group left, metrics, logger
    and checkpoint closed): exiting through interpreter teardown can still abort a rank now and then
    ("terminate called without an active exception", SIGABRT, from threads the communication and
    offload libraries leave behind), which turns a finished run into a failed one for the launcher."""
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def launcher_command(trainer: TrainerConfig, overrides: list[str]) -> list[str] | None:
    """The command that starts ``rlvr train`` on every rank, or None when this process should train
    itself (one process, or already started by a launcher: torchrun, deepspeed, Slurm + torchrun)."""
    from rlvr_cli import dist as ddp

    procs, nodes = trainer.gpus, trainer.nodes
    if trainer.kind != "deepspeed" or procs * nodes <= 1 or ddp.under_launcher():
        return None
    entry = ["-m", "rlvr_cli.cli", "train", *overrides]
    if nodes > 1 or trainer.hostfile:
        if not trainer.hostfile:
            raise UserError("trainer.nodes > 1 needs trainer.hostfile (DeepSpeed hostfile: 'host slots=N' lines)")
        # --no_local_rank: the launcher would otherwise insert --local_rank=N before our subcommand
        return ["deepspeed", "--no_local_rank", "--hostfile", str(trainer.hostfile), "--num_nodes", str(nodes),
                "--num_gpus", str(procs), "--master_port", str(trainer.master_port), "--module", *entry]
    # the stop signals are the ranks' to handle (``_run_launcher``), not torchrun's
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
            "--master_port", str(trainer.master_port), "--signals_to_handle", "SIGHUP,SIGQUIT", *entry]


def _guard(fn, *args):
    from rlvr_cli.trainer.checkpoint import CheckpointWriteError

    try:
        return fn(*args)
    except UserError as e:
        print(f"rlvr: error: {e}", file=sys.stderr)
        sys.exit(2)
    except CheckpointWriteError as e:  # disk full, quota: the run stops, the last checkpoint is intact
        print(f"rlvr: error: {e}", file=sys.stderr)
        sys.exit(1)


def _run_launcher(cmd: list[str]) -> int:
    """Run the launcher with the stop signals ignored in it, and pass every stop signal this process
    gets to the rank processes (the launcher's children). The ranks install their own handlers
    (an ignored disposition is inherited, a handler replaces it); torchrun would otherwise turn
    SIGTERM into a kill of the ranks after a short grace, and die on SIGUSR1. The ranks stop together
    after the step in progress; this process then exits with the signal's status."""
    import signal
    import subprocess

    import psutil

    from rlvr_cli.trainer.signals import STOP_SIGNALS, exit_code

    def ignore_stop_signals() -> None:  # in the launcher, before exec
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    launcher = subprocess.Popen(cmd, preexec_fn=ignore_stop_signals)  # noqa: PLW1509 (no threads yet)
    got: list[int] = []

    def forward(signum, frame):  # noqa: ARG001
        got.append(signum)
        for rank in psutil.Process(launcher.pid).children():
            try:
                rank.send_signal(signum)
            except psutil.NoSuchProcess:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        rc = launcher.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code(got[0]) if got else rc


def train(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from rlvr_cli.configs import load_train_config

    # before the launcher re-entry: a bad value fails once, here, not on every rank
    typed = _guard(load_train_config, cfg)
    out = run_dir(cfg)
    # re-enter on every rank with the same overrides, pinned to this job's run folder
    cmd = _guard(lambda: launcher_command(typed.trainer, [*HydraConfig.get().overrides.task, f"out_dir={out}"]))
    if cmd:
        print("launching: " + " ".join(cmd), flush=True)
        rc = _run_launcher(cmd)
        if rc:
            sys.exit(rc)
        return
    _guard(lambda: _train(typed, out, exit_on_stop=True))


def plan(cfg: DictConfig) -> None:
    """``rlvr plan`` and ``rlvr train ... --plan``: the memory plan of the run the same overrides
    compose (rlvr_cli/plan.py); loads no weights, writes nothing, trains nothing."""
    from rlvr_cli.configs import load_train_config
    from rlvr_cli.plan import print_plan

    _guard(print_plan, _guard(load_train_config, cfg))


def eval(cfg: DictConfig) -> None:  # noqa: A001 (the subcommand's name)
    from rlvr_cli.configs import load_eval_config
    from rlvr_cli.eval.run import eval_main

    typed = _guard(load_eval_config, cfg)
    _guard(lambda: eval_main(typed, run_dir(cfg)))
