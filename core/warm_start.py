"""The warm start: a short training run that the cell's optimizer starts from.

An experiment's ``warm_start`` field names an optimizer that needs no reward model (``sft``
by default) and its settings:

    warm_start:
      optimizer: sft
      settings: {steps: 40, learning_rate: 5.0e-5}

The warm start runs as its own stage on the train split before the cell's optimizer, so
every cell with the same warm start shares one run. The reward stage learns from the
untrained model's samples, and from the warm-started model's responses when the reward
learner sets one of ``WARM_START_SETTINGS``. The policy that the cell's optimizer trains
starts from the warm-started weights. A cell with ``optimizer: none`` evaluates the warm-started model
itself. ``warm_start: null`` (the default, and the ``base`` preset's value) starts from the
model itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from drirl.errors import ConfigError
from drirl.plugin_manager import Plugins
from drirl.settings import build_settings

DEFAULT_OPTIMIZER = "sft"
# Reward-learner settings that make the reward stage sample the warm-started policy.
WARM_START_SETTINGS = ("warm_start_samples", "warm_start_refusals", "warm_start_compliance")
FIELDS = ("optimizer", "settings")
# Settings fields added after warm starts were first stored. The stage key leaves each
# out while it is None, so the keys of warm starts trained before it existed stay valid.
KEY_WHEN_SET = ("lora",)


@dataclass(frozen=True)
class WarmStart:
    """A resolved warm start: the optimizer's name and its validated settings."""

    optimizer: str
    settings: Any


def resolve_warm_start(
    value: Any, plugins: Plugins, file: Any, where: str
) -> WarmStart | None:
    """Validate an experiment's ``warm_start`` value; ``where`` is its field path."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            "must be a mapping with 'optimizer' and 'settings', or null for no warm start",
            file=file,
            field=where,
            value=value,
        )
    for key in value:
        if key not in FIELDS:
            raise ConfigError(
                "unknown field", file=file, field=f"{where}.{key}", value=key, allowed=FIELDS
            )
    name = value.get("optimizer", DEFAULT_OPTIMIZER)
    known = plugins.registry("optimizer").names()
    if not isinstance(name, str) or name not in known:
        raise ConfigError(
            "unknown optimizer",
            file=file,
            field=f"{where}.optimizer",
            value=name,
            allowed=known,
        )
    optimizer = plugins.get("optimizer", name)
    if optimizer.needs_reward:
        raise ConfigError(
            f"optimizer {name!r} needs a reward model, but the warm start runs before the "
            "reward stage; pick one that learns from the demonstrations (sft)",
            file=file,
            field=f"{where}.optimizer",
            value=name,
        )
    settings = build_settings(
        optimizer.Settings,
        value.get("settings"),
        file=file,
        field=f"{where}.settings",
        component=f"warm-start optimizer {name!r}",
    )
    return WarmStart(name, settings)


def warm_start_key_settings(settings: Any) -> Any:
    """Return the warm start's settings as its stage key reads them.

    A dataclass becomes a dict without the ``KEY_WHEN_SET`` fields that are None, and
    any other value is returned unchanged.
    """
    if not is_dataclass(settings) or isinstance(settings, type):
        return settings
    values = asdict(settings)
    for name in KEY_WHEN_SET:
        if values.get(name, 0) is None:
            del values[name]
    return values
