"""The plugin engine: built-ins from registry.yaml, lookups, failures and blocking."""

from __future__ import annotations

import pytest

from drirl.errors import UnknownComponentError
from drirl.plugin_manager import load_plugins
from drirl.registry import Registry

BUILTIN_CATEGORIES = {
    "insult",
    "unfairness_discrimination",
    "crimes_illegal",
    "physical_harm",
    "mental_health",
    "privacy_property",
    "ethics_morality",
}


def test_builtins_seven_categories(plugins):
    assert set(plugins.registry("harm_category").names()) == BUILTIN_CATEGORIES


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("reward_learner", "bradley_terry"),
        ("difficulty_scaler", "clip"),
        ("difficulty_scaler", "reward_gap"),
        ("difficulty_scaler", "none"),
        ("optimizer", "grpo"),
        ("optimizer", "grpo_s"),
        ("judge", "refusal_phrases"),
        ("benchmark", "harmful_refusal"),
        ("benchmark", "over_refusal"),
    ],
)
def test_builtin_component_registered(plugins, kind, name):
    assert name in plugins.registry(kind)


def test_unknown_name_lists_known(plugins):
    with pytest.raises(UnknownComponentError) as info:
        plugins.get("difficulty_scaler", "clipp")
    message = str(info.value)
    assert "'clipp'" in message
    assert "Did you mean 'clip'?" in message
    assert "reward_gap" in message


def test_duplicate_name_rejected():
    class Component:
        name = "twice"

    registry = Registry("judge")
    registry.add(Component, plugin="first", version="1")
    with pytest.raises(Exception, match="already registered"):
        registry.add(Component, plugin="second", version="1")


def test_blocked_plugin_skipped(monkeypatch):
    monkeypatch.setenv("DRIRL_BLOCK_PLUGINS", "drirl.plugins.scalers.clip")
    loaded = load_plugins(use_entry_points=False)
    assert "clip" not in loaded.registry("difficulty_scaler")
    assert "reward_gap" in loaded.registry("difficulty_scaler")


def test_failing_plugin_reported(monkeypatch):
    import drirl.plugin_manager as manager

    original = manager.read_registry_file

    def with_broken_module():
        data = original()
        return {**data, "plugins": data["plugins"] + ["drirl.plugins.does_not_exist"]}

    monkeypatch.setattr(manager, "read_registry_file", with_broken_module)
    loaded = load_plugins(use_entry_points=False)
    assert [f.plugin for f in loaded.failures] == ["drirl.plugins.does_not_exist"]
    assert "clip" in loaded.registry("difficulty_scaler")


def test_failing_plugin_strict_raises(monkeypatch):
    import drirl.plugin_manager as manager

    original = manager.read_registry_file
    monkeypatch.setattr(
        manager,
        "read_registry_file",
        lambda: {**original(), "plugins": ["drirl.plugins.does_not_exist"]},
    )
    with pytest.raises(manager.PluginLoadError, match="does_not_exist"):
        load_plugins(use_entry_points=False, strict=True)
