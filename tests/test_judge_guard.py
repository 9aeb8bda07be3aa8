"""Tests of GuardedJudge (a failure on one response keeps the others) and the judge notes
that the report prints."""

from __future__ import annotations

import pytest

from drirl.components import Judge, Judgement
from drirl.judging import GuardedJudge, JudgeError, public_settings
from drirl.report import judge_notes, markdown_report
from drirl.stage_store import stage_key


class FlakyJudge(Judge):
    """Raises on any batch that contains the response "boom"; labels the rest compliant."""

    name = "flaky"

    def judge(self, prompts, responses):
        if "boom" in responses:
            raise RuntimeError("judge model crashed")
        return [Judgement("compliant", 0.0) for _ in responses]

    def report(self):
        return {"independent": True}


class BrokenJudge(Judge):
    name = "broken"

    def judge(self, prompts, responses):
        raise FileNotFoundError("no model at /missing")


class ShortJudge(Judge):
    """Returns one judgement too few for a batch, and a correct one for a single response."""

    name = "short"

    def judge(self, prompts, responses):
        return [Judgement("refusal", 1.0)] * max(1, len(responses) - 1)


def test_guard_keeps_other_judgements():
    guarded = GuardedJudge(FlakyJudge())
    judgements = guarded.judge(["a", "b", "c"], ["fine", "boom", "also fine"])
    assert [j.label for j in judgements] == ["compliant", "error", "compliant"]


def test_guard_error_message_recorded():
    guarded = GuardedJudge(FlakyJudge())
    judgements = guarded.judge(["a", "b"], ["fine", "boom"])
    assert judgements[1].error == "RuntimeError: judge model crashed"
    assert judgements[0].error is None


def test_guard_counts_errors():
    guarded = GuardedJudge(FlakyJudge())
    guarded.judge(["a", "b"], ["boom", "fine"])
    guarded.judge(["c"], ["fine"])
    report = guarded.report()
    assert report["errors"] == 1
    assert report["judged"] == 3
    assert report["judge"] == "flaky"
    assert report["independent"] is True


def test_guard_counts_returned_error_labels():
    class ErrorLabelJudge(Judge):
        name = "error_label"

        def judge(self, prompts, responses):
            return [Judgement("error", 0.0, error="unparseable") for _ in responses]

    guarded = GuardedJudge(ErrorLabelJudge())
    guarded.judge(["a", "b"], ["x", "y"])
    assert guarded.report()["errors"] == 2


def test_guard_raises_when_every_response_fails():
    guarded = GuardedJudge(BrokenJudge())
    with pytest.raises(JudgeError, match="failed on every one of 2 responses"):
        guarded.judge(["a", "b"], ["x", "y"])


def test_guard_wrong_count_judged_alone():
    judgements = GuardedJudge(ShortJudge()).judge(["a", "b", "c"], ["x", "y", "z"])
    assert [j.label for j in judgements] == ["refusal"] * 3


def test_guard_length_mismatch():
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        GuardedJudge(FlakyJudge()).judge(["a", "b"], ["x"])


def _document(judge_facts):
    metric = {"value": 0.5, "n": 4, "ci_low": 0.0, "ci_high": 1.0}
    return {
        "experiment": "notes",
        "cells": [
            {
                "id": "grpo_s",
                "settings": {},
                "metrics": {"harmful_refusal/all": metric},
                "training": {},
                "stages": {},
                "seconds": 1.0,
                "judge": {"harmful_refusal": judge_facts},
            }
        ],
    }


def test_report_marks_judge_not_independent():
    facts = {"judge": "reward_model", "independent": False, "judged": 4, "errors": 0}
    text = markdown_report(_document(facts))
    assert "## Judge notes" in text
    assert "**Not independent**: `grpo_s` harmful_refusal: reward_model" in text


def test_report_lists_judge_errors():
    facts = {"judge": "strongreject", "judged": 4, "errors": 2}
    lines = judge_notes(_document(facts)["cells"])
    assert any("could not rate 2 of 4 responses" in line for line in lines)


def test_report_lists_heldout_accuracy():
    facts = {
        "judge": "embedding_classifier",
        "heldout_accuracy": 0.8205,
        "heldout_n": 39,
    }
    lines = judge_notes(_document(facts)["cells"])
    assert any("held-out accuracy 0.82 (n=39)" in line for line in lines)


def test_report_no_notes_for_plain_judge():
    facts = {"judge": "refusal_phrases", "judged": 4, "errors": 0}
    assert "Judge notes" not in markdown_report(_document(facts))


def test_public_settings_drop_api_key():
    from drirl.plugins.judges.strongreject import StrongRejectSettings

    settings = StrongRejectSettings(
        base_url="http://127.0.0.1:1/v1", model="grader", api_key="secret-value"
    )
    public = public_settings(settings)
    assert "api_key" not in public
    assert public["model"] == "grader"


def test_public_settings_keep_stage_key():
    from drirl.plugins.judges.refusal_phrases import RefusalPhrasesSettings

    settings = RefusalPhrasesSettings(extra_phrases=("no way",))
    assert stage_key({"s": public_settings(settings)}) == stage_key({"s": settings})
