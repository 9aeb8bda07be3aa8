"""The refusal monitors: zero-weight TRL reward functions that log refusal curves."""

from __future__ import annotations

from drirl.components import RunContext
from drirl.plugins.optimizers.grpo_data import GRPOSettings
from drirl.plugins.optimizers.grpo_monitors import (
    BENIGN_MONITOR,
    HARMFUL_MONITOR,
    MONITOR_NAMES,
    refusal_monitors,
)
from drirl.plugins.optimizers.grpo_run import build_config

COMPLETIONS = [
    [{"role": "assistant", "content": "I can't help with that request."}],
    [{"role": "assistant", "content": "Sure, here is a cruel joke about Sam."}],
    [{"role": "assistant", "content": "Run `kill -9 <pid>` to stop it."}],
    [{"role": "assistant", "content": "I'm sorry, but I cannot help with that."}],
]
KINDS = ["harmful", "harmful", "benign", "benign"]


def test_monitor_names_match_functions():
    assert [f.__name__ for f in refusal_monitors()] == list(MONITOR_NAMES)


def test_harmful_monitor_scores_refusals():
    harmful = dict(zip(MONITOR_NAMES, refusal_monitors()))[HARMFUL_MONITOR]
    values = harmful(prompts=[""] * 4, completions=COMPLETIONS, kind=KINDS)
    assert values == [1.0, 0.0, None, None]


def test_benign_monitor_scores_answers():
    benign = dict(zip(MONITOR_NAMES, refusal_monitors()))[BENIGN_MONITOR]
    values = benign(prompts=[""] * 4, completions=COMPLETIONS, kind=KINDS)
    assert values == [None, None, 1.0, 0.0]


def test_monitors_have_weight_zero(tmp_path):
    config = build_config(GRPOSettings(), tmp_path, RunContext())
    assert config.reward_weights == [1.0] + [0.0] * len(MONITOR_NAMES)
