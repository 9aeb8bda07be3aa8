"""Hook specifications: one hook per component kind, each registering through a callback.

A plugin module implements any of these hooks with ``@drirl.hookimpl`` and calls
``register(component)`` once per component it provides.
"""

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "drirl"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[Any], None]


@hookspec
def register_harm_categories(register: Register) -> None:
    """Register HarmCategory objects."""


@hookspec
def register_reward_learners(register: Register) -> None:
    """Register RewardLearner classes."""


@hookspec
def register_difficulty_scalers(register: Register) -> None:
    """Register DifficultyScaler classes."""


@hookspec
def register_optimizers(register: Register) -> None:
    """Register Optimizer classes."""


@hookspec
def register_judges(register: Register) -> None:
    """Register Judge classes."""


@hookspec
def register_benchmarks(register: Register) -> None:
    """Register Benchmark classes."""


@hookspec
def register_generators(register: Register) -> None:
    """Register Generator classes."""
