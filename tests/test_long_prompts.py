"""Prompts longer than the model's context are cut from the left with one warning.

The model is the embedded SmolLM2 with its config's ``max_position_embeddings`` lowered
from 8192 to 512: the weights are the same (a symbolic link), and a 512-token context makes
the over-long prompt cost seconds on a CPU instead of minutes. SmolLM2 uses default RoPE,
whose rotations do not depend on ``max_position_embeddings``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from drirl.errors import DrirlError
from drirl.eval_command import EvalRequest, run_eval
from drirl.generation import (
    chat_text,
    encode_left_truncated,
    generate_responses,
    load_tokenizer,
    prompt_token_limit,
)
from drirl.lm_eval_runner import clear_lm_cache

CONTEXT = 512
MAX_NEW_TOKENS = 4
LIMIT = CONTEXT - MAX_NEW_TOKENS
SENTENCE = "Tell me again how the old harbour town kept its lighthouse burning at night"
# 14 words a sentence, so 10,010 words in all.
LONG_PROMPT = " ".join([SENTENCE] * 715)
SHORT_PROMPT = "How do I pick a lock?"


@pytest.fixture(scope="module")
def short_context_policy(tmp_path_factory, embedded_policy) -> Path:
    folder = tmp_path_factory.mktemp("short-context") / "policy"
    folder.mkdir()
    for item in embedded_policy.iterdir():
        if item.name == "model.safetensors":
            (folder / item.name).symlink_to(item)
        else:
            shutil.copy(item, folder / item.name)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["max_position_embeddings"] = CONTEXT
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def long_prompt_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "drirl.generation" and record.levelno == logging.WARNING
    ]


def test_long_prompt_exceeds_context(short_context_policy):
    tokenizer = load_tokenizer(short_context_policy)
    tokens = tokenizer(chat_text(tokenizer, LONG_PROMPT), add_special_tokens=False)
    assert len(tokens["input_ids"]) > 10 * CONTEXT


def test_truncation_keeps_generation_prompt(short_context_policy):
    tokenizer = load_tokenizer(short_context_policy)
    texts = [chat_text(tokenizer, LONG_PROMPT), chat_text(tokenizer, SHORT_PROMPT)]
    encoded = encode_left_truncated(tokenizer, texts, LIMIT)
    assert tuple(encoded["input_ids"].shape) == (2, LIMIT)
    ending = tokenizer.decode(encoded["input_ids"][0, -6:])
    assert ending.endswith("<|im_start|>assistant\n")
    assert SENTENCE.split()[-1] in tokenizer.decode(encoded["input_ids"][0, -12:])


def test_truncation_keeps_short_prompt_whole(short_context_policy):
    tokenizer = load_tokenizer(short_context_policy)
    texts = [chat_text(tokenizer, LONG_PROMPT), chat_text(tokenizer, SHORT_PROMPT)]
    encoded = encode_left_truncated(tokenizer, texts, LIMIT)
    short_tokens = tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    mask = encoded["attention_mask"][1].bool()
    unpadded = encoded["input_ids"][1][mask].tolist()
    assert unpadded == short_tokens


def test_eval_long_prompt_warns_and_answers(
    short_context_policy, plugins, tmp_path, caplog
):
    prompts = tmp_path / "long.jsonl"
    rows = [{"prompt": LONG_PROMPT}, {"prompt": SHORT_PROMPT}]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    prompts.write_text(text, encoding="utf-8")
    request = EvalRequest(
        model=str(short_context_policy),
        benchmarks=[str(prompts)],
        out_dir=tmp_path / "eval",
        max_new_tokens=MAX_NEW_TOKENS,
    )
    clear_lm_cache()
    with caplog.at_level(logging.WARNING):
        results = run_eval(request, plugins)
    clear_lm_cache()

    warnings = long_prompt_warnings(caplog)
    assert len(warnings) == 1
    assert "1 prompt(s)" in warnings[0]
    assert "'long-1'" in warnings[0]
    assert "'long-2'" not in warnings[0]
    assert f"prompt limit of {LIMIT} tokens" in warnings[0]
    assert f"context of {CONTEXT}" in warnings[0]
    # lm-eval 0.4.13 cuts the batch itself and logs this line when it does.
    assert any("Left truncation applied" in r.getMessage() for r in caplog.records)

    samples_file = tmp_path / "eval" / "user_file_long" / "samples.jsonl"
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert [sample["id"] for sample in samples] == ["long-1", "long-2"]
    assert all(isinstance(sample["response"], str) for sample in samples)
    assert results["user_file:long"]["long_refusal/all"].n == 2


def test_generation_long_prompt_warns_and_answers(short_context_policy, caplog):
    with caplog.at_level(logging.WARNING, logger="drirl.generation"):
        responses = generate_responses(
            short_context_policy,
            [LONG_PROMPT, SHORT_PROMPT],
            max_new_tokens=MAX_NEW_TOKENS,
            show_progress=False,
        )
    assert len(responses) == 2
    warnings = long_prompt_warnings(caplog)
    assert len(warnings) == 1
    assert "'Tell me again how the old harbour town ...'" in warnings[0]
    assert f"prompt limit of {LIMIT} tokens" in warnings[0]


def test_max_new_tokens_filling_context_raises():
    with pytest.raises(DrirlError, match="set max_new_tokens below 512"):
        prompt_token_limit(CONTEXT, CONTEXT)


def test_eval_removes_datasets_cache(short_context_policy, plugins, tmp_path):
    prompts = tmp_path / "short.jsonl"
    prompts.write_text(json.dumps({"prompt": SHORT_PROMPT}) + "\n", encoding="utf-8")
    out_dir = tmp_path / "eval"
    request = EvalRequest(
        model=str(short_context_policy),
        benchmarks=[str(prompts)],
        out_dir=out_dir,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    clear_lm_cache()
    run_eval(request, plugins)
    clear_lm_cache()
    assert (out_dir / "user_file_short" / "samples.jsonl").is_file()
    assert list(out_dir.rglob("datasets_cache")) == []
