"""Tests of the GRPO train prompts with ``balance_kinds``, ``harmful_share`` or neither."""

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


def test_harmful_share_repeats_benign_records():
    chosen = train_records(make_records(), seed=0, harmful_share=0.6)
    kinds = Counter(r.kind for r in chosen)
    assert kinds == {"harmful": 6, "benign": 4}
    assert Counter(r.id for r in chosen if r.kind == "benign") == {"b0": 2, "b1": 2}


def test_harmful_share_repeats_harmful_records():
    chosen = train_records(make_records(), seed=0, harmful_share=0.9)
    kinds = Counter(r.kind for r in chosen)
    assert kinds == {"harmful": 18, "benign": 2}
    assert set(Counter(r.id for r in chosen if r.kind == "harmful").values()) == {3}
    assert "e0" not in {r.id for r in chosen}


def test_harmful_share_half_matches_kinds():
    chosen = train_records(make_records(), seed=0, harmful_share=0.5)
    kinds = Counter(r.kind for r in chosen)
    assert kinds == {"harmful": 6, "benign": 6}


def test_harmful_share_single_kind_unchanged():
    harmful_only = [r for r in make_records() if r.kind == "harmful"]
    chosen = train_records(harmful_only, seed=0, harmful_share=0.3)
    assert sorted(r.id for r in chosen) == [f"h{i}" for i in range(6)]


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.2, "half", True])
def test_harmful_share_out_of_range_rejected(share):
    with pytest.raises(ValueError, match=f"harmful_share is {share!r}"):
        GRPOSettings(harmful_share=share)


def test_harmful_share_with_balance_kinds_rejected():
    with pytest.raises(ValueError, match="null when balance_kinds is true"):
        GRPOSettings(harmful_share=0.7, balance_kinds=True)
