"""Load built-in plugins from registry.yaml and third-party ones from entry points.

Built-in plugin modules are listed in registry.yaml. Third-party packages expose a module in
the entry-point group ``drirl``. A plugin that fails to import or to register is reported
with its name and distribution, and the other plugins still load, unless ``strict`` is set.
Plugins named in the environment variable DRIRL_BLOCK_PLUGINS (comma-separated) are skipped.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import pluggy
import yaml

from drirl import hookspecs
from drirl.errors import DrirlError
from drirl.registry import KINDS, Entry, Registry

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "drirl"
BLOCK_ENV = "DRIRL_BLOCK_PLUGINS"

HOOK_BY_KIND = {
    "harm_category": "register_harm_categories",
    "reward_learner": "register_reward_learners",
    "difficulty_scaler": "register_difficulty_scalers",
    "optimizer": "register_optimizers",
    "judge": "register_judges",
    "benchmark": "register_benchmarks",
    "generator": "register_generators",
}


class PluginLoadError(DrirlError):
    """A plugin failed to load while strict loading was requested."""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or could not register its components."""

    plugin: str
    distribution: str
    stage: str
    error: str


@dataclass
class Plugins:
    """The loaded plugins: one registry per component kind, plus the failures."""

    registries: dict[str, Registry]
    failures: list[PluginFailure] = field(default_factory=list)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def registry(self, kind: str) -> Registry:
        """Return the registry of one component kind."""
        return self.registries[kind]

    def get(self, kind: str, name: str) -> Any:
        """Return the component of ``kind`` registered as ``name``."""
        return self.registries[kind].get(name)

    def entries(self) -> list[Entry]:
        """Return every registered component, kind by kind."""
        return [entry for kind in KINDS for entry in self.registries[kind].entries()]


def read_registry_file() -> dict[str, Any]:
    """Read registry.yaml shipped inside the package."""
    text = files("drirl").joinpath("registry.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not isinstance(data.get("plugins"), list):
        raise DrirlError(
            "registry.yaml must be a mapping with a `plugins` list of module names"
        )
    return data


def _blocked_names() -> set[str]:
    raw = os.environ.get(BLOCK_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _collect_modules(
    builtin_modules: list[str], use_entry_points: bool
) -> list[tuple[str, str, str, Callable[[], Any]]]:
    """List (plugin name, distribution, version, loader) for every plugin to load."""
    from drirl import __version__

    plugins: list[tuple[str, str, str, Callable[[], Any]]] = []
    for module in builtin_modules:
        plugins.append(
            (module, "drirl", __version__, lambda m=module: importlib.import_module(m))
        )
    if use_entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "unknown"
            plugins.append((ep.name, dist, version, ep.load))
    return plugins


def _check_component_name(kind: str, component: Any, plugin: str) -> None:
    """Reject a component name that could not safely name a file.

    Benchmark names, for one, become parts of file names in the run folder, so a name such
    as ``../x`` would write outside it.
    """
    name = getattr(component, "name", None)
    if not isinstance(name, str):
        return  # Registry.add reports a missing or non-string name
    unsafe = name in (".", "..") or any(
        char in "/\\" or ord(char) < 32 for char in name
    )
    if unsafe:
        raise DrirlError(
            f"plugin {plugin!r} registered a {kind} named {name!r}; a component name may "
            "not contain a path separator or a control character, or be '.' or '..'"
        )


def load_plugins(*, use_entry_points: bool = True, strict: bool = False) -> Plugins:
    """Load every plugin and fill one registry per component kind."""
    registry_file = read_registry_file()
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    blocked = _blocked_names()
    failures: list[PluginFailure] = []
    origin: dict[str, tuple[str, str]] = {}

    def fail(name: str, dist: str, stage: str, exc: BaseException) -> None:
        failure = PluginFailure(name, dist, stage, f"{type(exc).__name__}: {exc}")
        if strict:
            raise PluginLoadError(
                f"plugin {name!r} from distribution {dist!r} failed at {stage}: {failure.error}"
            ) from exc
        logger.warning(
            "skipping plugin %r from distribution %r: failed at %s: %s",
            name,
            dist,
            stage,
            failure.error,
        )
        failures.append(failure)

    for name, dist, version, loader in _collect_modules(
        registry_file["plugins"], use_entry_points
    ):
        if name in blocked:
            logger.info("plugin %r is blocked by %s", name, BLOCK_ENV)
            continue
        try:
            module = loader()
            pm.register(module, name=name)
        except Exception as exc:  # a broken plugin must not stop the others
            fail(name, dist, "import", exc)
            continue
        origin[name] = (dist, version)

    pm.check_pending()
    registries = {kind: Registry(kind) for kind in KINDS}
    for kind, hook_name in HOOK_BY_KIND.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            dist, version = origin[impl.plugin_name]
            registry = registries[kind]
            added: list[str] = []

            def register(component: Any, _plugin: str = impl.plugin_name) -> None:
                _check_component_name(kind, component, _plugin)
                entry = registry.add(component, plugin=_plugin, version=version)
                added.append(entry.name)

            try:
                impl.function(register=register)
            except Exception as exc:  # a broken plugin must not stop the others
                # Whatever the plugin registered of this kind before it failed goes too, so
                # it is either loaded whole or not at all. A name it tried to take from
                # another plugin stays with that plugin.
                for name in added:
                    registry.remove(name)
                fail(impl.plugin_name, dist, "registration", exc)

    return Plugins(registries, failures, dict(registry_file.get("presets") or {}))
