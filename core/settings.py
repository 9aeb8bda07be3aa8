"""Build a component's Settings dataclass from YAML values, with located errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from drirl.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _accepts(tp: Any, value: Any) -> bool:
    """Return whether ``value`` fits the simple annotation ``tp`` (unknown shapes pass)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True


def _coerce(tp: Any, value: Any) -> Any:
    """Turn YAML lists into tuples where the field is a tuple, and ints into floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not type(None) and _accepts(arg, value):
                return _coerce(arg, value)
        return value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def join_field(field: str, key: str) -> str:
    """Return the path of ``key`` inside ``field``, keeping a trailing "(matrix cell ...)"."""
    head, sep, tail = field.partition(" (")
    return f"{head}.{key}{sep}{tail}"


def build_settings(
    settings_cls: type,
    values: dict[str, Any] | None,
    *,
    file: str | Path | None,
    field: str,
    component: str,
) -> Any:
    """Build ``settings_cls(**values)``; unknown fields, wrong types and invalid values raise.

    ``field`` is the YAML path of the mapping (for example ``reward.settings``) so the error
    points at the line to fix.
    """
    if values is not None and not isinstance(values, dict):
        raise ConfigError("must be a mapping", file=file, field=field, value=values)
    values = dict(values or {})
    hints = typing.get_type_hints(settings_cls)
    known = [f.name for f in dataclasses.fields(settings_cls)]
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"unknown setting for {component}",
                file=file,
                field=join_field(field, key),
                value=key,
                allowed=known or ["(no settings)"],
            )
        tp = hints.get(key, Any)
        if not _accepts(tp, value):
            raise ConfigError(
                f"wrong type for {component}: expected {_type_name(tp)}",
                file=file,
                field=join_field(field, key),
                value=value,
            )
        values[key] = _coerce(tp, value)
    try:
        return settings_cls(**values)
    except (TypeError, ValueError) as exc:
        # Settings classes start their messages with the field name ("steps is -3; ...").
        first = str(exc).split(" ", 1)[0]
        where = join_field(field, first) if first in known else field
        raise ConfigError(
            f"invalid setting for {component}: {exc}", file=file, field=where
        ) from None
