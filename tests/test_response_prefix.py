"""Responses started with a given text, one prefix for all prompts or one per prompt."""

from __future__ import annotations

import pytest

from drirl.generation import generate_responses


def test_prefix_count_must_match_prompts(tmp_path):
    with pytest.raises(ValueError, match="2 prefixes for 3 prompts"):
        generate_responses(tmp_path, ["a", "b", "c"], response_prefix=["x", "y"])


@pytest.mark.slow
def test_each_prompt_keeps_its_own_prefix(embedded_policy):
    prefixes = ["Draft: cat nickname -> answer", "Sure, here is"]
    responses = generate_responses(
        embedded_policy,
        ["Name my cat.", "Name my dog."],
        max_new_tokens=4,
        show_progress=False,
        response_prefix=prefixes,
    )
    assert [r.startswith(p) for r, p in zip(responses, prefixes)] == [True, True]
    assert all(len(r) > len(p) for r, p in zip(responses, prefixes))
