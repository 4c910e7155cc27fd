"""Typed configs: every component declares its config node as a dataclass beside its code, and this module
turns a composed (plain) mapping into those dataclasses, or into one line per bad value.

A field says its type in its annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` over the
component's own registry, ``list[...]``, ``X | None``, a nested node, ``dict[str, Any]``) and the rest in
``setting(...)``: the default (none: the YAML must set it), a range (``ge``/``gt``/``le``/``lt``), a
custom check with its text, and one line of help (``rlvr train --help`` and docs/config.md are made
from it). A node's own cross-field rules are its ``problems(at)`` method, yielding one line each.

``load(Node, mapping)`` checks every field and names the key, the value and what is expected
(``optim.lr='abc': expected a float > 0``), as TRL's ``GRPOConfig.__post_init__`` and verl's dataclass
configs do; every problem of a config is reported at once, joined on one line (``ConfigError``). Nothing
downstream casts: an int is not a bool, ``8.0`` is not an int, a string is not a number; an int given
for a float is taken as that float.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any, Literal, TypeVar

from rlvr_cli.errors import UserError

T = TypeVar("T")
_NONE = type(None)


class ConfigError(UserError):
    """Every problem of a config, one line each, joined with '; ' (the CLI prints it and exits 2)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def setting(default: Any = dataclasses.MISSING, *, help: str, ge: float | None = None,  # noqa: A002
            gt: float | None = None, le: float | None = None, lt: float | None = None, length: int | None = None,
            why: str = "", check: Callable[[Any], bool] | None = None, expect: str = "") -> Any:
    """A config field. ``help``: one line for ``--help``; ``why``: what the error adds in parentheses;
    ``check``/``expect``: a test of the value beyond its type and the text naming what passes it."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "length": length, "why": why,
            "check": check, "expect": expect}
    if type(default).__hash__ is None:  # a list, a dict, a mutable node: a fresh copy per instance
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def show(v: Any) -> str:
    """A value as the command line writes it: null, true, 'abc', 1e-06, [0.9, 1.5]."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(show(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {show(x)}" for k, x in v.items()) + "}"
    return repr(v)


# ------------------------------------------------------------------------------------ types -> checks
@cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_node(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _range_text(m: Mapping[str, Any]) -> str:
    lo, lo_open = (m["gt"], True) if m.get("gt") is not None else (m.get("ge"), False)
    hi, hi_open = (m["lt"], True) if m.get("lt") is not None else (m.get("le"), False)
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {_fmt(lo)}"
    return f" {'<' if hi_open else '<='} {_fmt(hi)}" if hi is not None else ""


def _inside(v: float, m: Mapping[str, Any]) -> bool:
    return not ((m.get("gt") is not None and v <= m["gt"]) or (m.get("ge") is not None and v < m["ge"])
                or (m.get("lt") is not None and v >= m["lt"]) or (m.get("le") is not None and v > m["le"]))


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else None


def expect_text(tp: Any, m: Mapping[str, Any], why: bool = True) -> str:
    """What a value of this type and setting must be, as the error says it (``null or an int >= 1``)."""
    text = m.get("expect") or _type_text(tp, m)
    return f"{text} ({m['why']})" if why and m.get("why") else text


def _type_text(tp: Any, m: Mapping[str, Any]) -> str:
    if (args := _union_args(tp)) is not None:
        rest = [a for a in args if a is not _NONE]
        text = " or ".join(_type_text(a, m) for a in rest)
        return f"null or {text}" if len(rest) < len(args) else text
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + " | ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in typing.get_args(tp))
    if origin is list:
        item = _type_text(typing.get_args(tp)[0], m)
        return f"a list of {m['length']} items, each {item}" if m.get("length") else f"a list, each item {item}"
    if origin in (dict, Mapping) or tp in (dict, Mapping) or is_node(tp):
        return "a mapping"
    return {int: f"an int{_range_text(m)}", float: f"a float{_range_text(m)}", bool: "true or false",
            str: "a non-empty string"}.get(tp, "a value")


def _convert(v: Any, tp: Any, m: Mapping[str, Any]) -> tuple[bool, Any]:
    """(ok, the value as the field holds it). Nodes are loaded by ``_load`` (they name their own keys)."""
    if (args := _union_args(tp)) is not None:
        if v is None:
            return _NONE in args, None
        for a in args:
            if a is not _NONE and (got := _convert(v, a, m))[0]:
                return got
        return False, v
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(type(v) is type(a) and v == a for a in typing.get_args(tp)), v
    if origin is list:
        if not isinstance(v, list) or (m.get("length") and len(v) != m["length"]):
            return False, v
        items = [_convert(x, typing.get_args(tp)[0], m) for x in v]
        return all(ok for ok, _ in items), [x for _, x in items]
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return isinstance(v, Mapping), dict(v) if isinstance(v, Mapping) else v
    if tp is bool:
        return isinstance(v, bool), v
    if tp is int:
        return _is_int(v) and _inside(v, m), v
    if tp is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and _inside(v, m)
        return ok, float(v) if ok else v
    if tp is str:
        return isinstance(v, str) and v != "", v
    return True, v  # Any


# --------------------------------------------------------------------------------------------- load
def load(cls: type[T], data: Mapping[str, Any] | T | None, at: str = "") -> T:
    """``data`` (a plain mapping, e.g. a resolved config node) as ``cls``; an instance passes through.
    Raises ``ConfigError`` naming every bad, missing or unknown key (``at`` prefixes the key names)."""
    if isinstance(data, cls):
        return data
    problems: list[str] = []
    node = _load(cls, {} if data is None else data, at, problems)
    if problems:
        raise ConfigError(problems)
    return node


def _load(cls: type, data: Any, at: str, problems: list[str]) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        problems.append(f"{at.rstrip('.')}={show(data)}: expected a mapping")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        problems.append(f"{at}{unknown[0]}: unknown key; valid: {', '.join(fields)}")
    before = len(problems)
    kwargs = {}
    for name, f in fields.items():
        tp, m, key = hints(cls)[name], f.metadata, f"{at}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if is_node(tp):
                    kwargs[name] = _load(tp, {}, f"{key}.", problems)
                else:
                    problems.append(f"{key} is missing: expected {expect_text(tp, m)}")
            continue
        v = data[name]
        if is_node(tp) or (is_node(_node_of(tp)) and v is not None):
            kwargs[name] = _load(_node_of(tp), v, f"{key}.", problems)
            continue
        problem, kwargs[name] = _checked(v, tp, m, key)
        if problem:
            problems.append(problem)
    if len(problems) > before or unknown:
        return None
    node = cls(**kwargs)
    rules = getattr(node, "problems", None)
    if rules is not None:
        problems.extend(rules(at))
    return node


def check_value(cls: type, name: str, value: Any, key: str) -> str | None:
    """The problem with ``value`` as ``cls``'s field ``name`` (named ``key``), or None: for a partial
    node, such as a method's ``loss:`` overrides of the clip settings or a benchmark's overrides."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _checked(value, hints(cls)[name], f.metadata, key)[0]


def _checked(v: Any, tp: Any, m: Mapping[str, Any], key: str) -> tuple[str | None, Any]:
    """(the problem or None, the value as the field holds it)."""
    ok, value = _convert(v, tp, m)
    if ok and m.get("check") is not None:
        ok = m["check"](v)
    return (None if ok else f"{key}={show(v)}: expected {expect_text(tp, m)}"), value


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _node_of(tp: Any) -> Any:
    """The node type of ``Node`` or ``Node | None``, else None."""
    if is_node(tp):
        return tp
    args = _union_args(tp)
    nodes = [a for a in args or () if is_node(a)]
    return nodes[0] if nodes else None


def replace_at(node: T, values: Mapping[str, Any]) -> T:
    """A copy of a loaded config with each dotted key set (``{"trainer.zero_stage": 3}``); the nodes on
    the way are copied, the rest shared. The node's own ``problems`` rules are not run again."""
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in values.items():
        head, _, rest = dotted.partition(".")
        changes.setdefault(head, {})[rest] = value
    kwargs = {head: (replace_at(getattr(node, head), sub) if "" not in sub else sub[""])
              for head, sub in changes.items()}
    return dataclasses.replace(node, **kwargs)


def to_dict(node: Any) -> Any:
    """A loaded config as plain containers (what ``resolved_config.yaml`` and the checkpoint keep)."""
    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node


# --------------------------------------------------------------------------------------------- help
@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # the full dotted key
    type: str  # what a value must be (the error's text, without its reason)
    default: Any  # the dataclass default (dataclasses.MISSING: the YAML sets it)
    help: str


def rows(cls: type, at: str = "") -> Iterator[Row]:
    """Every leaf key of a node, depth first, in declaration order."""
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, key = hints(cls)[f.name], f"{at}{f.name}"
        node = _node_of(tp)
        if node is not None:
            yield from rows(node, f"{key}.")
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        yield Row(key, expect_text(tp, f.metadata, why=False), default, f.metadata.get("help", ""))
