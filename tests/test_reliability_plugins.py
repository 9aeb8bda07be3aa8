"""Third-party plugins that fail: at import, at registration, or on a name already taken.

Each fake plugin is a module object added to the plugin list as if it came from an entry
point of a distribution named ``acme-drirl``, so no package is installed. A failure is
reported with the plugin's name and distribution, and the built-in plugins still load;
with ``strict`` the same failure raises PluginLoadError.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest

import drirl.plugin_manager as manager
from drirl import hookimpl
from drirl.components import Judge, Judgement

DIST = "acme-drirl"


class DuplicateJudge(Judge):
    name = "refusal_phrases"  # taken by the built-in judge

    def judge(self, prompts, responses):
        return [Judgement("compliant", 0.0) for _ in responses]


class ExtraJudge(DuplicateJudge):
    name = "acme_extra"


class UnsafeJudge(DuplicateJudge):
    name = "../escape"


def plugin_module(register_judges: Callable) -> types.ModuleType:
    module = types.ModuleType("acme_plugin")
    module.register_judges = hookimpl(register_judges)
    return module


def fail_import():
    raise ImportError("acme needs a missing library")


def register_raising(register):
    register(ExtraJudge)
    raise RuntimeError("acme registration failed")


def register_duplicate(register):
    register(ExtraJudge)
    register(DuplicateJudge)


def register_unsafe(register):
    register(UnsafeJudge)


PLUGINS = {
    "import": ("acme_import", fail_import, "acme needs a missing library"),
    "registration": (
        "acme_register",
        lambda: plugin_module(register_raising),
        "acme registration failed",
    ),
    "duplicate": (
        "acme_duplicate",
        lambda: plugin_module(register_duplicate),
        "already registered",
    ),
    "unsafe name": (
        "acme_unsafe",
        lambda: plugin_module(register_unsafe),
        "may not contain a path separator",
    ),
}


@pytest.fixture
def add_plugin(monkeypatch):
    original = manager._collect_modules

    def add(name: str, loader: Callable) -> None:
        def collect(builtin_modules, use_entry_points):
            found = original(builtin_modules, use_entry_points=False)
            return found + [(name, DIST, "0.1", loader)]

        monkeypatch.setattr(manager, "_collect_modules", collect)

    return add


@pytest.mark.parametrize("case", list(PLUGINS))
def test_failure_reported_with_distribution(add_plugin, case):
    name, loader, text = PLUGINS[case]
    add_plugin(name, loader)
    loaded = manager.load_plugins()
    failures = [f for f in loaded.failures if f.plugin == name]
    assert len(failures) == 1
    assert failures[0].distribution == DIST
    assert text in failures[0].error


@pytest.mark.parametrize("case", list(PLUGINS))
def test_failure_keeps_builtins(add_plugin, case):
    name, loader, _ = PLUGINS[case]
    add_plugin(name, loader)
    loaded = manager.load_plugins()
    assert "refusal_phrases" in loaded.registry("judge")
    assert "clip" in loaded.registry("difficulty_scaler")


@pytest.mark.parametrize("case", ["registration", "duplicate", "unsafe name"])
def test_failed_plugin_leaves_no_component(add_plugin, case):
    name, loader, _ = PLUGINS[case]
    add_plugin(name, loader)
    judges = manager.load_plugins().registry("judge")
    assert "acme_extra" not in judges
    assert "../escape" not in judges


def test_duplicate_keeps_first_owner(add_plugin):
    add_plugin(*PLUGINS["duplicate"][:2])
    entry = manager.load_plugins().registry("judge").entry("refusal_phrases")
    assert entry.plugin == "drirl.plugins.judges.refusal_phrases"


@pytest.mark.parametrize("case", list(PLUGINS))
def test_strict_raises_with_distribution(add_plugin, case):
    name, loader, text = PLUGINS[case]
    add_plugin(name, loader)
    with pytest.raises(manager.PluginLoadError) as info:
        manager.load_plugins(strict=True)
    message = str(info.value)
    assert repr(name) in message
    assert repr(DIST) in message
    assert text in message


def test_blocked_failing_plugin_skipped(add_plugin, monkeypatch):
    add_plugin(*PLUGINS["import"][:2])
    monkeypatch.setenv("DRIRL_BLOCK_PLUGINS", "acme_import")
    failures = [f.plugin for f in manager.load_plugins().failures]
    assert "acme_import" not in failures
