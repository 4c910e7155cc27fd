"""Rich console output: the resolved config as a tree, a live progress bar, a compact line per step."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.tree import Tree

from rlvr_cli.typed import to_dict

console = Console(highlight=False)


def config_tree(cfg: Any, title: str = "config") -> Tree:
    """A config (a loaded one, a DictConfig or a plain mapping) as a tree, resolved."""
    tree = Tree(f"[bold]{title}")

    def add(node, value):
        for key, sub in value.items():
            if isinstance(sub, dict):
                add(node.add(f"[cyan]{key}"), sub)
            else:
                node.add(f"{key}: [green]{sub!r}")

    add(tree, OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else to_dict(cfg))
    return tree


def print_config(cfg: Any) -> None:
    console.print(config_tree(cfg))


def _fmt(metrics: dict[str, Any], key: str, spec: str = ".3f") -> str:
    v = metrics.get(key)
    return "-" if v is None else format(v, spec)


def step_line(step: int, total: int, m: dict[str, Any]) -> str:
    """One compact line per step."""
    parts = [
        f"step {step}/{total}",
        f"reward {_fmt(m, 'reward/mean')}",
        f"acc {_fmt(m, 'reward/accuracy')}",
        f"entropy {_fmt(m, 'actor/entropy')}",
        f"len {_fmt(m, 'rollout/response_len_mean', '.1f')}",
        f"pg {_fmt(m, 'loss/pg', '.4f')}",
        f"tok/s {_fmt(m, 'perf/gen_tokens_per_s', '.0f')}",
        f"{_fmt(m, 'perf/step_s', '.1f')}s",
    ]
    val = [f"{k} {v:.3f}" for k, v in m.items() if k.startswith("val/") and "/avg@" in k and v is not None]
    return " | ".join(parts + val)


class StepProgress:
    """A live bar (step, reward, accuracy, entropy, tokens/s, ETA) that degrades to plain lines off a TTY."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, live: bool = True):
        self.enabled = enabled
        self.total = total
        self.progress = Progress(
            TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, disable=not (enabled and live),
        )
        self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        info = (f"reward {_fmt(metrics, 'reward/mean')} acc {_fmt(metrics, 'reward/accuracy')} "
                f"H {_fmt(metrics, 'actor/entropy')} {_fmt(metrics, 'perf/gen_tokens_per_s', '.0f')} tok/s")
        self.progress.update(self.task, completed=step, info=info)
        self.progress.console.print(step_line(step, self.total, metrics))
