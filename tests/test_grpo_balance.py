"""Tests of the GRPO train prompts with and without ``balance_kinds``."""

from __future__ import annotations

from collections import Counter

import pytest

from drirl.components import Record
from drirl.plugins.optimizers.grpo_data import GRPOSettings, train_records


def make_records() -> list[Record]:
    harmful = [
        Record(f"h{i}", "insult", "harmful", f"harmful prompt {i}", "No.", "train")
        for i in range(6)
    ]
    benign = [
        Record(f"b{i}", "insult", "benign", f"benign prompt {i}", "Sure.", "train")
        for i in range(2)
    ]
    held_out = [Record("e0", "insult", "benign", "eval prompt", "Sure.", "eval")]
    return harmful + benign + held_out


def test_unbalanced_keeps_each_record_once():
    kinds = Counter(r.kind for r in train_records(make_records(), seed=0))
    assert kinds == {"harmful": 6, "benign": 2}


def test_balanced_repeats_benign_records():
    chosen = train_records(make_records(), seed=0, balance_kinds=True)
    kinds = Counter(r.kind for r in chosen)
    assert kinds == {"harmful": 6, "benign": 6}
    assert Counter(r.id for r in chosen if r.kind == "benign") == {"b0": 3, "b1": 3}
    assert "e0" not in {r.id for r in chosen}


def test_balance_kinds_must_be_boolean():
    with pytest.raises(ValueError, match="balance_kinds is 'yes'"):
        GRPOSettings(balance_kinds="yes")
