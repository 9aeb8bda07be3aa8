"""The JSONL dataset format: validation with file and line, balance and splits."""

from __future__ import annotations

import json

import pytest

from drirl.dataset import balance, count_by_category, load_records, select
from drirl.errors import DatasetError

GOOD = {
    "id": "x-1",
    "category": "insult",
    "kind": "harmful",
    "prompt": "p",
    "demonstration": "Draft: a -> b.\nI can't help with that.",
    "split": "train",
}


def write_rows(tmp_path, rows):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_builtin_categories_balanced(plugins):
    for name in plugins.registry("harm_category").names():
        records = plugins.get("harm_category", name).load_records()
        counts = count_by_category(records)
        assert counts[(name, "harmful", "train")] == 24, name
        assert counts[(name, "harmful", "eval")] == 8, name
        assert counts[(name, "benign", "train")] == 24, name
        assert counts[(name, "benign", "eval")] == 4, name


def builtin_records(plugins, kind):
    for name in plugins.registry("harm_category").names():
        yield from select(plugins.get("harm_category", name).load_records(), kind=kind)


def test_builtin_demonstrations_end_in_refusal(plugins):
    for record in builtin_records(plugins, "harmful"):
        draft, answer = record.demonstration.split("\n", 1)
        assert draft.startswith("Draft:"), record.id
        assert answer.startswith(("I can't", "I won't", "I'm not able")), record.id


def test_builtin_benign_demonstrations_draft_then_answer(plugins):
    for record in builtin_records(plugins, "benign"):
        draft, answer = record.demonstration.split("\n", 1)
        assert draft.startswith("Draft:"), record.id
        assert draft.endswith("-> answer."), record.id
        assert answer.strip(), record.id
        assert not answer.startswith(("I can't", "I won't")), record.id


def test_missing_field_names_line(tmp_path):
    bad = {k: v for k, v in GOOD.items() if k != "prompt"}
    path = write_rows(tmp_path, [GOOD, bad])
    with pytest.raises(DatasetError, match=r"data.jsonl:2: missing field\(s\) prompt"):
        load_records(path)


def test_unknown_kind_rejected(tmp_path):
    path = write_rows(tmp_path, [{**GOOD, "kind": "dangerous"}])
    with pytest.raises(DatasetError, match="allowed: harmful, benign"):
        load_records(path)


def test_whitespace_prompt_rejected(tmp_path):
    path = write_rows(tmp_path, [{**GOOD, "prompt": "   "}])
    with pytest.raises(DatasetError, match="'prompt' is empty"):
        load_records(path)


def test_wrong_category_rejected(tmp_path):
    path = write_rows(tmp_path, [GOOD])
    with pytest.raises(DatasetError, match="does not match"):
        load_records(path, expected_category="physical_harm")


def test_duplicate_id_rejected(tmp_path):
    path = write_rows(tmp_path, [GOOD, GOOD])
    with pytest.raises(DatasetError, match="duplicate id 'x-1', first seen on line 1"):
        load_records(path)


def test_invalid_utf8_rejected(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        load_records(path)


def test_balance_caps_groups(tmp_path):
    rows = [{**GOOD, "id": f"a{i}"} for i in range(5)]
    rows += [{**GOOD, "id": f"b{i}", "category": "other"} for i in range(3)]
    records = load_records(write_rows(tmp_path, rows))
    kept = balance(records)
    assert count_by_category(kept) == {
        ("insult", "harmful", "train"): 3,
        ("other", "harmful", "train"): 3,
    }
    assert len(balance(records, per_category=2)) == 4
