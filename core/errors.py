"""Exceptions that carry where a bad value came from and what to do about it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class DrirlError(Exception):
    """Base class of every error drirl raises on purpose."""


def closest_match(value: str, known: Iterable[str]) -> str | None:
    """Return the known name closest to ``value``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(value), list(known), n=1, cutoff=0.5)
    return matches[0] if matches else None


class UnknownComponentError(DrirlError, KeyError):
    """A component name that no loaded plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        suggestion = closest_match(name, self.known)
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        message = (
            f"unknown {kind} {name!r}.{hint} Known {kind} names: "
            f"{', '.join(self.known) or '(none)'}. "
            "Run `drirl plugins` to see every loaded component."
        )
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class ConfigError(DrirlError, ValueError):
    """An invalid value in an experiment file, located by file and field path."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        field: str | None = None,
        value: Any = None,
        allowed: Iterable[Any] | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        self.value = value
        self.allowed = list(allowed) if allowed is not None else None
        parts = []
        if self.file:
            parts.append(self.file)
        if field:
            parts.append(f"field '{field}'")
        location = ": ".join(parts)
        text = f"{location}: {message}" if location else message
        if value is not None:
            text += f" (value: {value!r})"
        if self.allowed is not None:
            text += f"; allowed: {', '.join(map(str, self.allowed))}"
        super().__init__(text)


class DatasetError(DrirlError, ValueError):
    """An invalid dataset row, located by file and line."""

    def __init__(
        self, message: str, *, file: str | Path, line: int | None = None
    ) -> None:
        self.file = str(file)
        self.line = line
        where = f"{file}:{line}" if line is not None else str(file)
        super().__init__(f"{where}: {message}")
