"""Frozen configuration dataclasses: strict loading (unknown keys are errors) and YAML/JSON I/O.

Each stage keeps its own config dataclass beside its code (``facesfm.render.config`` ...);
this module holds the shared machinery and re-exports them.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facesfm.errors import InputError
from facesfm.io import atomic_path

T = TypeVar("T")


def to_dict(cfg) -> dict:
    """A config dataclass as plain JSON/YAML-serialisable data (tuples become lists)."""

    def conv(x):
        if dataclasses.is_dataclass(x):
            return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        if isinstance(x, Path):
            return str(x)
        if isinstance(x, enum.Enum):
            return x.value
        return x

    return conv(cfg)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build ``cls`` from ``data``; unknown keys raise an :class:`InputError` naming them.

    A nested mapping fills its field's own default (a field whose default differs from its
    class's, such as training's BA settings, keeps that default for the keys not given). An
    enum field takes its value (``"huber"``) and names the allowed ones when it is not one."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        sub = _dataclass_in(tp)
        if sub is not None and isinstance(v, dict):
            default = _field_default(fields[k])
            if isinstance(default, sub):
                v = merge(to_dict(default), v)
            v = from_dict(sub, v, f"{where}.{k}")
        elif isinstance(tp, type) and issubclass(tp, enum.Enum) and not isinstance(v, tp):
            v = _enum_value(tp, v, f"{where}.{k}")
        else:
            if isinstance(v, list) and _is_tuple(tp):
                v = tuple(v)
            if not _fits(v, tp):
                raise InputError(f"{where}.{k}: expected {_type_name(tp)}, got {v!r} "
                                 f"({type(v).__name__})")
        kwargs[k] = v
    return cls(**kwargs)


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _enum_value(tp: type[enum.Enum], v, where: str):
    try:
        return tp(v)
    except ValueError:
        allowed = [m.value for m in tp]
        raise InputError(f"{where}: {v!r} is not one of {allowed}") from None


def _fits(v, tp) -> bool:
    """Whether the value ``v`` (as YAML/JSON gives it) has the annotated type ``tp``: no
    quietly truthy strings for a bool, no strings for a number. An int fits a float."""
    if tp is typing.Any or tp is object:
        return True
    origin = typing.get_origin(tp)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        return any(_fits(v, a) for a in typing.get_args(tp))
    if tp is type(None):
        return v is None
    if origin is typing.Literal:
        return v in typing.get_args(tp)
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    if tp is Path:
        return isinstance(v, (str, Path))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(v, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(x, args[0]) for x in v)
        return not args or (len(args) == len(v) and all(map(_fits, v, args)))
    if origin is list:
        (arg,) = typing.get_args(tp) or (typing.Any,)
        return isinstance(v, list) and all(_fits(x, arg) for x in v)
    if origin is dict or tp is dict:
        return isinstance(v, dict)
    if dataclasses.is_dataclass(tp):
        return isinstance(v, tp)
    if isinstance(tp, type):
        return isinstance(v, tp)
    return True  # an annotation this check does not know: left to the class


def _type_name(tp) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _dataclass_in(tp):
    if dataclasses.is_dataclass(tp):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for a in typing.get_args(tp):
            if dataclasses.is_dataclass(a):
                return a
    return None


def _is_tuple(tp) -> bool:
    if typing.get_origin(tp) is tuple:
        return True
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return any(typing.get_origin(a) is tuple for a in typing.get_args(tp))
    return False


def read_yaml(path: str | Path) -> Any:
    """The data of the YAML file ``path`` (an empty file: {}); a missing file or invalid YAML
    is an InputError naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{path}: not valid YAML{where} ({what})") from None


def load_yaml(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, read_yaml(path), str(path))


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys on top, nested mappings merged key by key (copies)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def dotted_overrides(items, reference: dict, option: str = "--set") -> dict:
    """Nested overrides from ``KEY=VALUE`` strings with dotted keys (``ba.max_iterations=20``);
    each VALUE is read as YAML (``20``, ``true``, ``[1, 2]``, ``null``; anything else a
    string), except for a key whose current value is text, which takes VALUE as it is.
    ``reference`` (a config as :func:`to_dict` gives it) says which keys exist: an unknown
    one, or a missing ``=``, is an InputError naming the item and what is allowed.
    The types are checked where the config is built (:func:`from_dict`)."""
    out: dict = {}
    for item in items:
        key, eq, text = str(item).partition("=")
        if not eq or not key.strip():
            raise InputError(f"{option} {item}: expected KEY=VALUE, e.g. "
                             f"{option} ba.max_iterations=20")
        path = key.strip().split(".")
        ref, node = reference, out
        for i, k in enumerate(path):
            if not isinstance(ref, dict) or k not in ref:
                where = ".".join(path[:i]) or "the config"
                allowed = sorted(ref) if isinstance(ref, dict) else []
                raise InputError(f"{option} {item}: {where} has no key {k!r}"
                                 + (f"; allowed: {allowed}" if allowed else ""))
            ref = ref[k]
            if i < len(path) - 1:
                node = node.setdefault(k, {})
        # a text setting keeps its text (YAML 1.1 would read off/on/yes/no as booleans)
        node[path[-1]] = text.strip() if isinstance(ref, str) else _value(text)
    return out


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _value(text: str):
    """A ``--set`` VALUE as YAML reads it, and a number in exponent form (``1e-4``, which
    YAML 1.1 reads as a string) as a float."""
    try:
        v = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(v, str) and _NUMBER.fullmatch(v.strip()):
        return float(v)
    return v


def dump_yaml(cfg, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
