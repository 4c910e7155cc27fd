"""``rlvr train | eval | plan``: one Hydra app per subcommand, so ``-m``, ``--cfg job``, ``--help`` and output
folders all keep working; ``main`` takes the subcommand off ``sys.argv`` before Hydra parses. ``rlvr ls``
and the ``TOOLS`` (report, analyze, checkpoints) take plain arguments.

Before Hydra sees the overrides, ``+group=option`` for a group the defaults list already holds is
rewritten to ``group=option`` (the product documents ``rlvr train +method=siren``), and every
``group=option`` is checked so an unknown option fails with one line naming the valid ones (exit 2).
"""
from __future__ import annotations

import logging
import os
import sys

from rlvr_cli.errors import UserError
from rlvr_cli.paths import CONF_DIR, RECIPES_DIR, config_groups, group_options

COMMANDS = {"train": "train", "eval": "eval", "plan": "train"}
# ``rlvr plan`` writes nothing: no run folder, no .hydra/ copy, no log file (the user's overrides come
# after these, so they still win)
PLAN_HYDRA = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=none", "hydra/hydra_logging=none"]
# the commands that are not Hydra apps: name -> (module, function taking the remaining arguments)
# (each module's USAGE is what ``rlvr <tool> --help`` prints)
TOOLS = {"report": ("rlvr_cli.report", "report_main"), "analyze": ("rlvr_cli.analysis.analyze", "analyze_main"),
         "checkpoints": ("rlvr_cli.trainer.checkpoint", "checkpoints_main")}
HELP_FLAGS = ("-h", "--help")
LS_USAGE = "usage: rlvr ls\nList the config groups, their options (GROUP=OPTION), and the recipes (+recipes=NAME)."
USAGE = """usage: rlvr <command> [hydra overrides]

commands:
  train   GRPO training (rlvr train +method=siren trainer.max_steps=100)
  eval    avg@n / pass@k / maj@n on benchmarks (rlvr eval model=<dir|hub id> eval.n=32)
  plan    GPU memory per rank before a run: parameters, gradients, optimizer states, activations, vLLM,
          and whether it fits (rlvr plan model=qwen2.5-math-7b trainer=zero3 trainer.gpus=8; the same
          overrides as train; or rlvr train ... --plan)
  ls      list config groups, their options, and recipes
  report  compare finished runs (rlvr report runs/sweeps/<time>): accuracy, entropy trajectory, step time
  analyze table + PNG plots + entropy-performance law fit + covariance check of runs
          (rlvr analyze runs/sweeps/<time>); Δlog p of two models (rlvr analyze dlogp base=M rl=M data=D)
  checkpoints  a run's checkpoints: step, size, verified or damaged (rlvr checkpoints runs/<name>)

rlvr <command> --help: its usage; for train, eval and plan also every key with its type, value and help
(rlvr train --help rollout: one node). Hydra flags work after the command: -m (sweeps), --cfg job,
--hydra-help."""


def _primary_defaults(config_name: str) -> set[str]:
    """Groups named in the primary config's defaults list (their ``+group=`` prefix is redundant)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF_DIR / f"{config_name}.yaml")
    groups = set()
    for item in cfg.get("defaults", []):
        if isinstance(item, str):
            continue
        for key in item:
            groups.add(str(key).removeprefix("optional "))
    return groups


def normalise_overrides(args: list[str], config_name: str) -> list[str]:
    """``+method=siren`` -> ``method=siren`` when ``method`` is already in the defaults list; checks
    every ``group=option`` against conf/<group>/."""
    defaults = _primary_defaults(config_name)
    groups = set(config_groups()) | {"recipes"}
    out = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)
            continue
        key, value = arg.split("=", 1)
        bare = key.lstrip("+~")
        if key.startswith("+") and not key.startswith("++") and bare in defaults:
            key = bare
        if bare in groups and not key.startswith("~") and not any(f in value for f in ("(", "[", "$")):
            valid = group_options(bare)
            for option in value.split(","):
                if option and option != "null" and option not in valid:
                    raise UserError(f"unknown {bare} '{option}'; valid: {', '.join(valid)}")
        out.append(f"{key}={value}")
    return out


def list_configs() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rlvr config groups (choose with group=option)")
    table.add_column("group", style="cyan")
    table.add_column("options")
    for group in config_groups():
        table.add_row(group, ", ".join(group_options(group)))
    if RECIPES_DIR.is_dir():
        table.add_row("recipes (+recipes=…)", ", ".join(group_options("recipes")))
    Console().print(table)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    # ${rlvr_first:a,b}: a unless it is null (hydra.run.dir follows out_dir when one is given)
    if not OmegaConf.has_resolver("rlvr_first"):
        OmegaConf.register_new_resolver("rlvr_first", lambda a, b: b if a is None else a)


def _run_app(command: str, args: list[str]) -> None:
    import hydra

    from rlvr_cli import commands

    target = getattr(commands, command)
    _register_resolvers()
    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=COMMANDS[command])(target)
    if command == "plan" and not any(a in ("-m", "--multirun") for a in args):
        args = [*PLAN_HYDRA, *args]
    sys.argv = [f"rlvr {command}", *args]
    app()


def _print_help(command: str, args: list[str]) -> None:
    """``rlvr train [overrides] --help [NODE]``: the usage, groups and keys of this composition."""
    from rlvr_cli.help import help_text

    at = next(i for i, a in enumerate(args) if a in HELP_FLAGS)
    after = args[at + 1] if at + 1 < len(args) else None
    node = after if after is not None and "=" not in after and not after.startswith("-") else None
    overrides = [a for a in args[:at] + args[at + (2 if node else 1):] if not a.startswith("-")]
    print(help_text(command, normalise_overrides(overrides, COMMANDS[command]), node))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command == "train" and "--plan" in rest:  # print the memory plan, train nothing
        command, rest = "plan", [a for a in rest if a != "--plan"]
    asks_help = any(a in HELP_FLAGS for a in rest)
    try:
        if command == "ls":
            if asks_help:
                print(LS_USAGE)
            else:
                list_configs()
            return
        if command in TOOLS:
            import importlib

            module, function = TOOLS[command]
            module = importlib.import_module(module)
            if asks_help:
                print(module.USAGE)
            else:
                getattr(module, function)(rest)
            return
        if command not in COMMANDS:
            raise UserError(f"unknown command '{command}'; valid: {', '.join([*COMMANDS, 'ls', *TOOLS])}")
        if asks_help:
            _print_help(command, rest)
            return
        _run_app(command, normalise_overrides(rest, COMMANDS[command]))
    except UserError as e:
        print(f"rlvr: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    logging.basicConfig(level=logging.INFO)
    main()
