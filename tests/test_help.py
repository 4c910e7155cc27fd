"""``rlvr <command> --help`` and docs/config.md, made from the typed config nodes (rlvr_cli/help.py)."""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from rlvr_cli.cli import main
from rlvr_cli.help import help_text, markdown, sections
from rlvr_cli.methods.base import method_names
from rlvr_cli.paths import REPO_ROOT, compose
from rlvr_cli.configs import resolve

COMPOSITIONS = [("train", []), *[("train", [f"method={m}"]) for m in method_names()], ("eval", []),
                ("train", ["+recipes=baseline/qwen2.5-math-7b_openr1_lora", "trainer=zero3", "logger=wandb"])]


def _leaves(node: Mapping[str, Any], at: str = "") -> Iterator[str]:
    for k, v in node.items():
        if isinstance(v, Mapping) and v:
            yield from _leaves(v, f"{at}{k}.")
        else:
            yield f"{at}{k}"


@pytest.mark.parametrize("config_name,overrides", COMPOSITIONS, ids=lambda x: str(x))
def test_every_composed_key_is_in_the_help_with_its_type_and_help(config_name, overrides):
    """A key added to a YAML without a typed field, or a field without help, fails here."""
    values = resolve(compose(config_name, overrides))
    rows = {r.key: r for s in sections(config_name, values) for r, _ in s.keys}
    assert all(r.help and r.type for r in rows.values()), [k for k, r in rows.items() if not r.help or not r.type]
    text = help_text(config_name, overrides)
    for leaf in _leaves(values):
        # a mapping-typed key (method.loss, a benchmark's overrides) holds its sub-keys as one value
        key = next((k for k in (leaf, *[leaf.rsplit(".", n)[0] for n in range(1, leaf.count(".") + 1)])
                    if k in rows), None)
        assert key is not None, f"{leaf}: composed but not a typed config key"
        line = next((ln for ln in text.splitlines() if ln.startswith(f"  {key} = ")), None)
        assert line is not None and line.endswith(f"({rows[key].type})"), (leaf, line)


def test_the_help_shows_the_values_of_this_composition(capsys):
    main(["train", "+method=siren", "optim.lr=1e-5", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: rlvr train")
    assert "  method.top_p = 0.8    (a float in (0, 1])" in out
    assert "  optim.lr = 1e-05    (a float > 0)" in out
    assert re.search(r"^  method +baseline clip_cov .* siren\*", out, re.M)  # the groups, with the chosen one
    assert "AdamW's epsilon" in out  # a field's help


def test_the_help_of_one_node(capsys):
    main(["train", "--help", "rollout"])
    out = capsys.readouterr().out
    keys = re.findall(r"^  ([\w.]+) = ", out, re.M)
    assert "rollout.max_new_tokens" in keys and "rollout.vllm.gpu_memory_utilization" in keys
    assert all(k.startswith("rollout.") for k in keys) and "Config groups" not in out
    main(["eval", "model.path=some/model", "--help", "model.path"])
    assert re.findall(r"^  ([\w.]+) = (\S+)", capsys.readouterr().out, re.M) == [("model.path", "'some/model'")]
    main(["train", "data=jsonl", "--help", "data.path"])  # a value still to be set does not stop the help
    assert re.findall(r"^  ([\w.]+) = (\S+)", capsys.readouterr().out, re.M) == [("data.path", "'???'")]


def test_an_unknown_node_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help", "rolout"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rlvr: error: unknown config node 'rolout'; valid: model, data, algo, method,")


@pytest.mark.parametrize("tool", ["analyze", "report", "ls", "checkpoints"])
def test_the_tools_print_their_usage(tool, capsys):
    main([tool, "--help"])  # returns: exit 0
    assert capsys.readouterr().out.startswith(f"usage: rlvr {tool}")


def test_docs_config_md_is_current():
    stored = (REPO_ROOT / "docs" / "config.md").read_text()
    assert stored == markdown(), "docs/config.md is stale: python -m rlvr_cli.help docs/config.md"
