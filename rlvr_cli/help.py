"""``rlvr train --help [NODE]`` / ``rlvr eval --help [NODE]`` and docs/config.md, made from the typed
config nodes (``typed.rows``: each field's key, type and help) and the values this composition sets.

    rlvr train --help                      the config groups with their options, then every key by node
    rlvr train +method=siren --help method one node, as composed with these overrides
    python -m rlvr_cli.help docs/config.md write the reference page (tests/test_help.py checks it is current)
"""
from __future__ import annotations

import dataclasses
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr_cli.configs import EvalRunConfig, TrainConfig
from rlvr_cli.errors import UserError
from rlvr_cli.methods.base import method_class, method_config_class, method_names
from rlvr_cli.paths import compose, group_options
from rlvr_cli.typed import Row, hints, rows, show

ROOTS: dict[str, type] = {"train": TrainConfig, "eval": EvalRunConfig}
USAGE = {
    "train": "usage: rlvr train [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--plan] [--help [NODE]]\n"
             "GRPO training: compose a model, a dataset and one method from the config groups, then set any key.",
    "eval": "usage: rlvr eval [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--help [NODE]]\n"
            "avg@n / pass@k / maj@n of a model on benchmarks (rlvr eval model.path=<dir|hub id> eval.n=32).",
    "plan": "usage: rlvr plan [GROUP=OPTION ...] [KEY=VALUE ...] [--help [NODE]]   (or rlvr train ... --plan)\n"
            "GPU memory per rank of this training run, and whether it fits; the same config as rlvr train.",
}
WIDTH = 110


@dataclass(frozen=True)
class Section:
    """One config node: its key (``""``: the top-level keys), its help, and its keys with their values."""

    name: str
    help: str
    keys: list[tuple[Row, Any]]


def sections(config_name: str, values: Mapping[str, Any]) -> list[Section]:
    """Every key of ``rlvr <config_name>``'s typed config, grouped by top-level node, in declaration
    order; the method node is the composed method's own config class."""
    root = ROOTS[config_name]
    out = [Section("", "top-level keys", [(r, _value(values, r)) for r in rows(root) if "." not in r.key])]
    for f in dataclasses.fields(root):
        node = hints(root)[f.name]
        if f.name == "method":
            node = method_config_class((values.get("method") or {}).get("name", "baseline"))
        if dataclasses.is_dataclass(node):
            out.append(Section(f.name, f.metadata["help"], [(r, _value(values, r)) for r in rows(node, f"{f.name}.")]))
    return out


def _value(values: Mapping[str, Any], row: Row) -> Any:
    """The composed value of a key, else its declared default (``dataclasses.MISSING``: none)."""
    node: Any = values
    for part in row.key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return row.default
        node = node[part]
    return node


def _composed(config_name: str, overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the resolved config, each group's chosen option) of ``rlvr <config_name> <overrides>``. A value
    still to be set stays '???' (the help of ``data=jsonl`` shows ``data.path = '???'``)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(config_name, [o for o in overrides if not o.startswith("-")], hydra_config=True)
    except HydraException as e:
        raise UserError(str(e).splitlines()[0]) from None
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    del cfg.hydra
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException:  # an interpolation that cannot resolve yet: show it as written
        values = OmegaConf.to_container(cfg, resolve=False)
    # a group placed at a package (``vllm@rollout.vllm``) is still chosen as ``vllm=...``
    return values, {g.split("@")[0]: str(c) for g, c in choices.items() if not g.startswith("hydra")}


# ------------------------------------------------------------------------------------------ console
def help_text(command: str, overrides: list[str], node: str | None = None) -> str:
    """The page ``rlvr <command> ... --help [node]`` prints (``plan`` takes ``train``'s config)."""
    config_name = "train" if command == "plan" else command
    values, choices = _composed(config_name, overrides)
    secs = sections(config_name, values)
    lines = [USAGE[command]]
    if node is None:
        lines += ["", "Config groups (GROUP=OPTION; * marks this composition's choice):"]
        width = max(len(g) for g in choices)
        for group, chosen in sorted(choices.items()):
            opts = " ".join(o + "*" if o == chosen else o for o in group_options(group))
            lines += textwrap.wrap(opts, WIDTH, initial_indent=f"  {group:<{width}}  ",
                                   subsequent_indent=" " * (width + 4))
        if config_name == "train":
            lines += [f"  +recipes=NAME  a paper's or the lab's settings on top ({len(group_options('recipes'))} "
                      "recipes; rlvr ls lists them)"]
        lines += ["", f"Keys (KEY=VALUE; shown with the value this composition sets, then the type and help; "
                  f"rlvr {command} --help NODE shows one node):"]
    else:
        secs = _only(secs, node)
    for sec in secs:
        lines += ["", f"{sec.name}: {sec.help}" if sec.name else "top-level keys:"]
        for row, value in sec.keys:
            lines.append(f"  {row.key} = {_shown(value)}    ({row.type})")
            lines += textwrap.wrap(row.help, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def _only(secs: list[Section], node: str) -> list[Section]:
    """The keys under ``node`` (a node such as ``rollout``, a nested one such as ``rollout.vllm``, or a key)."""
    picked = [Section(s.name, s.help, [(r, v) for r, v in s.keys if r.key == node or r.key.startswith(node + ".")])
              for s in secs]
    picked = [s for s in picked if s.keys]
    if not picked:
        valid = [s.name for s in secs if s.name] + [r.key for r, _ in secs[0].keys]
        raise UserError(f"unknown config node '{node}'; valid: {', '.join(valid)} (or any key under them)")
    return picked


def _shown(value: Any) -> str:
    return "(must be set)" if value is dataclasses.MISSING else show(value)


# ----------------------------------------------------------------------------------------- markdown
def markdown() -> str:
    """docs/config.md: every node of ``rlvr train`` and ``rlvr eval`` with the embedded default's values,
    and every method's node with conf/method/<name>.yaml's values."""
    lines = ["# Configuration reference", "",
             "Generated from the typed config nodes by `python -m rlvr_cli.help docs/config.md` (a test fails "
             "when it is stale). The value column is what the command composes with no overrides; "
             "`rlvr train --help [NODE]` prints the same for any composition.", ""]
    for config_name in ROOTS:
        values, choices = _composed(config_name, [])
        lines += [f"## rlvr {config_name}", "",
                  "Default choices: " + ", ".join(f"`{g}={c}`" for g, c in sorted(choices.items())) + ".", ""]
        for sec in sections(config_name, values):
            if sec.name == "method":
                continue
            lines += _table(sec)
    lines += ["## Methods (`+method=NAME`)", ""]
    for name in method_names():
        values, _ = _composed("train", [f"method={name}"])
        sec = next(s for s in sections("train", values) if s.name == "method")
        doc = (method_class(name).__doc__ or "").strip().splitlines()
        lines += _table(Section(f"method={name}", doc[0] if doc else "", sec.keys))
    return "\n".join(lines).rstrip() + "\n"


def _table(sec: Section) -> Iterator[str]:
    yield f"### {sec.name or 'top level'}" + (f": {sec.help}" if sec.name and sec.help else "")
    yield ""
    yield "| key | value | type | help |"
    yield "|---|---|---|---|"
    for row, value in sec.keys:
        cells = (f"`{row.key}`", f"`{_shown(value)}`", row.type, row.help)
        yield "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    yield ""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    text = markdown()
    if args:
        Path(args[0]).write_text(text)
        print(f"wrote {args[0]}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
