"""Typed configs for every stage: YAML -> nested dataclasses, dotted `key=value` overrides,
validation errors that name the field, and a resolved dump for `--dry-run`.

A stage config is a dataclass whose fields are scalars, lists, dicts or nested dataclasses. A
dataclass may define `validate(self) -> None` and raise `ConfigError(field, message)`; `validate_tree`
calls these bottom-up with the field paths filled in.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from megatron_infi.errors import ConfigError


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)) and len(args) == 1:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, field: str) -> Any:
    """Turn a YAML value into `tp`, or raise ConfigError naming `field`."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(field, "must not be null")
    tp = inner
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=field)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(field, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(field, f"expected a list, got {value!r}")
        items = [_coerce(v, item_tp, f"{field}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        key_tp, val_tp = get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, field): _coerce(v, val_tp, f"{field}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(field, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(field, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept what float() accepts.
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(field, f"expected a number, got {value!r}") from None
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(field, f"expected a number, got {value!r}")
        else:
            number = float(value)
        # NaN passes every `<` / `>` check a validate() makes and inf overflows later: refuse both here.
        if not math.isfinite(number):
            raise ConfigError(field, f"must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(field, f"expected a string, got {value!r}")
        return str(value)
    return value


def from_dict[T](cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys are errors that name the field."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(where, f"unknown field (known: {', '.join(sorted(fields))})")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(where, "is required")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings; values are parsed as YAML (`x=[1,2]`, `y=null`, `z={k: v}`).

    A numeric part indexes a list (`phases.0.data=[a.jsonl]`).
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(key, f"value {raw!r} is not valid YAML ({problem})") from None
        parts = key.split(".")
        node: Any = data
        for i, part in enumerate(parts):
            where = ".".join(parts[: i + 1])
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(where, f"is not an index of a {len(node)}-item list")
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
                if not last and node.get(part) is None:
                    node[part] = {}
            else:
                raise ConfigError(".".join(parts[:i]), f"is {node!r}, cannot set {key}")
            if last:
                node[index] = value
            else:
                node = node[index]
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", f"file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("--config", f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping at the top level")
    return data


def validate_tree(obj: Any, prefix: str = "") -> None:
    """Call `validate()` on nested dataclasses (children first), prefixing field names."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        name = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(child):
            validate_tree(child, name)
        elif isinstance(child, list):
            for i, item in enumerate(child):
                validate_tree(item, f"{name}[{i}]")
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ConfigError as err:
            raise (err.under(prefix) if prefix else err) from None


def load_config[T](cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """YAML file (optional) + overrides -> validated `cls`."""
    data = load_yaml(path) if path else {}
    apply_overrides(data, list(overrides or []))
    if hasattr(cls, "preprocess"):
        data = cls.preprocess(data)
    cfg = from_dict(cls, data)
    validate_tree(cfg)
    return cfg


class CommandParser(argparse.ArgumentParser):
    """argparse with the exit-code policy's one-line errors (megatron_infi/errors.py): a wrong
    argument exits 2 with `<prog>: usage error: <what> (see --help)`, not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: usage error: {message} (see --help)\n")


def command_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """Every command's parser: its own name in the usage line, and its module docstring as the help
    text (what it reads, with a minimal example record; what it writes; a shipped example config)."""
    return CommandParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def stage_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument surface every config-driven stage shares."""
    parser = command_parser(prog, doc)
    parser.add_argument("--config", help="YAML config (examples in launch/configs/)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.lr=3e-4")
    return parser


def parse_stage_config[T](
    cls: type[T],
    prog: str,
    doc: str | None,
    argv: list[str] | None = None,
    preflight: Callable[[T, bool], None] | None = None,
) -> tuple[T, bool]:
    """Parse `--config X.yaml [--dry-run] [k=v ...]` into a validated `cls`; a bad config raises
    ConfigError (the entry point's `errors.command` wrapper turns it into one line and exit 2).

    `preflight(cfg, dry_run)` checks what a config alone cannot (input paths exist, the launched world
    fits), before the config is printed. Returns (config, dry_run). On `--dry-run` the resolved config
    has been printed already.
    """
    args = stage_parser(prog, doc).parse_args(argv)
    cfg = load_config(cls, args.config, args.overrides)
    if preflight is not None:
        preflight(cfg, args.dry_run)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
    return cfg, args.dry_run
