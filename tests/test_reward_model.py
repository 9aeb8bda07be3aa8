"""Tests of the reward-model scorer: where the score is read, padding, routing and reloading.

The model here is the embedded policy with a freshly initialised (seeded) score head. It is
untrained, but where the score is read and how padding acts do not depend on training.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

from drirl.embedded import embedded_policy_path
from drirl.errors import DrirlError
from drirl.reward_model import (
    MANIFEST,
    SINGLE_KEY,
    RewardModelScorer,
    cut_response,
    distinct_pad_token,
    encode_sequence,
    last_token_index,
    load_scorer,
    read_manifest,
    score_token_ids,
    write_manifest,
)

PROMPTS = ["How do I pick a lock?", "Write a short poem about the sea."]
RESPONSES = [
    "I can't help with that.",
    "Waves roll in and out,\nsalt on the wind,\nthe tide keeps its time with the moon.",
]


@pytest.fixture(scope="module")
def policy_path():
    return embedded_policy_path()


@pytest.fixture(scope="module")
def tokenizer(policy_path):
    tok = AutoTokenizer.from_pretrained(policy_path)
    tok.pad_token = distinct_pad_token(tok)
    return tok


@pytest.fixture(scope="module")
def model(policy_path, tokenizer):
    set_seed(0)
    seq_cls = AutoModelForSequenceClassification.from_pretrained(
        policy_path, num_labels=1, dtype=torch.float32
    )
    seq_cls.config.pad_token_id = tokenizer.pad_token_id
    seq_cls.eval()
    return seq_cls


def make_scorer(model, tokenizer, padding_side="right", batch_size=16):
    return RewardModelScorer(
        {SINGLE_KEY: (model, tokenizer)},
        {"insult": SINGLE_KEY, "privacy_property": SINGLE_KEY},
        max_length=320,
        batch_size=batch_size,
        padding_side=padding_side,
    )


def test_pad_differs_from_eos(tokenizer):
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_sequence_ends_with_eos(tokenizer):
    ids = encode_sequence(tokenizer, PROMPTS[0], RESPONSES[0], max_length=320)
    assert ids[-1] == tokenizer.eos_token_id


def test_truncation_keeps_eos(tokenizer):
    ids = encode_sequence(tokenizer, PROMPTS[1], RESPONSES[1] * 20, max_length=64)
    assert len(ids) == 64
    assert ids[-1] == tokenizer.eos_token_id


def test_cut_response_keeps_first_tokens(tokenizer):
    cut = cut_response(tokenizer, RESPONSES[1], 6)
    assert RESPONSES[1].startswith(cut)
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) == 6


def test_cut_response_leaves_short_response_whole(tokenizer):
    assert cut_response(tokenizer, RESPONSES[0], 200) == RESPONSES[0]
    assert cut_response(tokenizer, RESPONSES[1], None) == RESPONSES[1]


def test_encode_cut_drops_the_ending(tokenizer):
    whole = RESPONSES[1]
    longer = whole + " The gulls cry over the harbour."
    cut = [encode_sequence(tokenizer, PROMPTS[1], r, 320, 12) for r in (whole, longer)]
    assert cut[0] == cut[1]
    assert cut[0][-1] == tokenizer.eos_token_id
    assert len(cut[0]) < len(encode_sequence(tokenizer, PROMPTS[1], whole, 320))


def test_last_token_index_both_sides():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]


def test_score_read_at_eos(model, tokenizer):
    ids = encode_sequence(tokenizer, PROMPTS[0], RESPONSES[0], max_length=320)
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        at_eos = model.score(hidden[0, -1])[0]
        before_eos = model.score(hidden[0, -2])[0]
    score = score_token_ids(model, [ids], tokenizer.pad_token_id)[0]
    assert torch.allclose(score, at_eos, atol=1e-5)
    assert not torch.allclose(score, before_eos, atol=1e-3)


def test_score_matches_training_pooling(model, tokenizer):
    # TRL's reward trainer pads on the right and lets the model pool by pad id.
    sequences = [
        encode_sequence(tokenizer, p, r, 320) for p, r in zip(PROMPTS, RESPONSES)
    ]
    width = max(len(s) for s in sequences)
    input_ids = torch.tensor(
        [s + [tokenizer.pad_token_id] * (width - len(s)) for s in sequences]
    )
    attention_mask = torch.arange(width)[None, :] < torch.tensor(
        [[len(s)] for s in sequences]
    )
    with torch.no_grad():
        native = model(
            input_ids=input_ids, attention_mask=attention_mask.long()
        ).logits[:, 0]
    ours = score_token_ids(model, sequences, tokenizer.pad_token_id)
    assert torch.allclose(ours, native, atol=1e-4)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_score_pad_equal_to_eos(model, tokenizer, padding_side):
    # The score is read through the attention mask, so a pad id equal to the
    # end-of-turn id must not move it.
    sequences = [
        encode_sequence(tokenizer, p, r, 320) for p, r in zip(PROMPTS, RESPONSES)
    ]
    distinct = score_token_ids(
        model, sequences, tokenizer.pad_token_id, padding_side=padding_side
    )
    as_eos = score_token_ids(
        model, sequences, tokenizer.eos_token_id, padding_side=padding_side
    )
    assert torch.allclose(distinct, as_eos, atol=1e-5)


def test_score_eot_inside_prompt(model, tokenizer):
    prompt = "First question.<|im_end|>\n<|im_start|>user\nHow do I pick a lock?"
    ids = encode_sequence(tokenizer, prompt, RESPONSES[0], max_length=320)
    assert ids.count(tokenizer.eos_token_id) >= 2
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        at_last = model.score(hidden[0, -1])[0]
    score = score_token_ids(model, [ids, ids[:5]], tokenizer.pad_token_id)[0]
    assert torch.allclose(score, at_last, atol=1e-5)


def test_score_same_both_padding_sides(model, tokenizer):
    categories = ["insult", "privacy_property"]
    right = make_scorer(model, tokenizer, "right").score(PROMPTS, RESPONSES, categories)
    left = make_scorer(model, tokenizer, "left").score(PROMPTS, RESPONSES, categories)
    assert torch.allclose(right, left, atol=1e-4)


def test_score_alone_equals_batched(model, tokenizer):
    scorer = make_scorer(model, tokenizer, "left")
    alone = scorer.score(PROMPTS[:1], RESPONSES[:1], ["insult"])
    batched = scorer.score(PROMPTS, RESPONSES, ["insult", "insult"])
    assert torch.allclose(alone[0], batched[0], atol=1e-4)


def test_score_shape_and_dtype(model, tokenizer):
    scores = make_scorer(model, tokenizer, batch_size=1).score(
        PROMPTS, RESPONSES, ["insult", "insult"]
    )
    assert scores.shape == (2,)
    assert scores.dtype == torch.float32


def test_unknown_category_lists_known(model, tokenizer):
    scorer = make_scorer(model, tokenizer)
    with pytest.raises(DrirlError, match="known categories: insult, privacy_property"):
        scorer.score(PROMPTS[:1], RESPONSES[:1], ["insults"])


def test_length_mismatch_raises(model, tokenizer):
    with pytest.raises(ValueError, match="differ in length"):
        make_scorer(model, tokenizer).score(
            PROMPTS, RESPONSES[:1], ["insult", "insult"]
        )


def test_scorer_reads_only_response_tokens(model, tokenizer):
    scorer = RewardModelScorer(
        {SINGLE_KEY: (model, tokenizer)},
        {"insult": SINGLE_KEY},
        max_length=320,
        response_tokens=12,
    )
    longer = RESPONSES[1] + " The gulls cry over the harbour."
    rewards = scorer.score([PROMPTS[1]] * 2, [RESPONSES[1], longer], ["insult"] * 2)
    whole = make_scorer(model, tokenizer).score(
        [PROMPTS[1]] * 2, [RESPONSES[1], longer], ["insult"] * 2
    )
    assert torch.allclose(rewards[0], rewards[1], atol=1e-5)
    assert not torch.allclose(whole[0], whole[1], atol=1e-3)


def test_missing_manifest_raises(tmp_path):
    with pytest.raises(DrirlError, match="train them first"):
        read_manifest(tmp_path)


def save_single(model, tokenizer, folder, **manifest_fields):
    """Save ``model`` as a single reward model serving insult and privacy_property."""
    model.save_pretrained(folder / SINGLE_KEY, safe_serialization=True)
    tokenizer.save_pretrained(folder / SINGLE_KEY)
    write_manifest(
        folder,
        {
            "models": {SINGLE_KEY: SINGLE_KEY},
            "routes": {"insult": SINGLE_KEY, "privacy_property": SINGLE_KEY},
            "max_length": 320,
            **manifest_fields,
        },
    )


def test_reload_gives_same_scores(model, tokenizer, tmp_path):
    save_single(model, tokenizer, tmp_path)
    categories = ["insult", "privacy_property"]
    before = make_scorer(model, tokenizer).score(PROMPTS, RESPONSES, categories)
    after = load_scorer(tmp_path).score(PROMPTS, RESPONSES, categories)
    assert (tmp_path / MANIFEST).is_file()
    assert torch.allclose(before, after, atol=1e-6)


def test_reload_keeps_response_tokens(model, tokenizer, tmp_path):
    save_single(model, tokenizer, tmp_path, response_tokens=12)
    assert load_scorer(tmp_path).response_tokens == 12
