"""Stage outputs: keyed by inputs, reused when finished, never left half-written."""

from __future__ import annotations

import json

import pytest

from drirl.atomic import write_json_atomic
from drirl.stage_store import StageStore, stage_key


def test_key_ignores_dict_order():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})


def test_key_changes_with_inputs():
    assert stage_key({"lr": 1e-5}) != stage_key({"lr": 2e-5})


def test_finished_stage_reused(tmp_path):
    store = StageStore(tmp_path)
    calls = []

    def work(folder):
        calls.append(folder)
        (folder / "out.txt").write_text("done")
        return {"value": 1}

    first, reused_first = store.run("reward", {"x": 1}, work)
    second, reused_second = store.run("reward", {"x": 1}, work)
    assert len(calls) == 1
    assert reused_first is False
    assert reused_second is True
    assert first == second
    assert (second / "out.txt").read_text() == "done"
    assert store.summary("reward", second) == {"value": 1}


def test_interrupted_stage_leaves_nothing(tmp_path):
    store = StageStore(tmp_path)

    def crash(folder):
        (folder / "partial.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.run("optimize", {"x": 2}, crash)
    stage_dir = tmp_path / "stages" / "optimize"
    assert list(stage_dir.iterdir()) == []
    assert not store.is_done("optimize", stage_key({"x": 2}))


def test_json_written_atomically(tmp_path):
    path = tmp_path / "report" / "results.json"
    write_json_atomic(path, {"cells": []})
    assert json.loads(path.read_text()) == {"cells": []}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_stage_seconds_kept_on_reuse(tmp_path):
    store = StageStore(tmp_path)
    folder, _ = store.run("reward", {"x": 3}, lambda tmp: None)
    recorded = store.seconds(folder)
    again, reused = store.run("reward", {"x": 3}, lambda tmp: None)
    assert reused is True
    assert store.seconds(again) == recorded
    assert recorded >= 0.0
