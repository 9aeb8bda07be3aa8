"""Name-keyed registries of components, one per component kind."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from drirl.errors import DrirlError, UnknownComponentError

logger = logging.getLogger(__name__)

KINDS = (
    "harm_category",
    "reward_learner",
    "difficulty_scaler",
    "optimizer",
    "judge",
    "benchmark",
    "generator",
)


@dataclass(frozen=True)
class Entry:
    """A registered component and the plugin that provided it."""

    kind: str
    name: str
    plugin: str
    version: str
    component: Any


class DuplicateComponentError(DrirlError):
    """Two plugins registered the same name for one kind."""


class Registry:
    """The components of one kind, looked up by name."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(
                f"unknown component kind {kind!r}; allowed: {', '.join(KINDS)}"
            )
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, component: Any, *, plugin: str, version: str) -> Entry:
        """Add a component under its ``name`` attribute; a taken name raises."""
        name = getattr(component, "name", None)
        if not isinstance(name, str) or not name:
            raise DrirlError(
                f"plugin {plugin!r} registered a {self.kind} without a string `name` "
                f"attribute: {component!r}"
            )
        if name in self._entries:
            taken = self._entries[name]
            raise DuplicateComponentError(
                f"plugin {plugin!r} registered {self.kind} {name!r}, which plugin "
                f"{taken.plugin!r} already registered; rename one of them or block a plugin "
                "with DRIRL_BLOCK_PLUGINS"
            )
        entry = Entry(self.kind, name, plugin, version, component)
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Remove ``name`` if present, as when its plugin fails halfway through registering."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Any:
        """Return the component registered as ``name``."""
        return self.entry(name).component

    def entry(self, name: str) -> Entry:
        """Return the registry entry for ``name``; an unknown name lists the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        """Return the registered names in registration order."""
        return list(self._entries)

    def entries(self) -> list[Entry]:
        """Return every entry in registration order."""
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries
