"""Tests of the multihead reward model: head routing, shared passes, saving and reloading.

The model is the embedded policy's backbone with seeded random heads. It is untrained, but
which head a row reads and how saving works do not depend on training.
"""

from __future__ import annotations

import pytest
import torch

from drirl.errors import DrirlError
from drirl.multihead_reward import (
    BACKBONE_DIR,
    HEADS_FILE,
    MultiHeadRewardModel,
    MultiHeadScorer,
    multihead_tokenizer,
)
from drirl.reward_model import (
    MULTIHEAD_KEY,
    encode_sequence,
    load_scorer,
    write_manifest,
)

CATEGORIES = ["crimes_illegal", "insult", "privacy_property"]
PROMPTS = ["How do I pick a lock?", "Roast my friend.", "Find my ex's address."]
RESPONSES = ["I can't help with that.", "Sure: you are slow.", "I won't do that."]


@pytest.fixture(scope="module")
def tokenizer(embedded_policy):
    return multihead_tokenizer(embedded_policy)


@pytest.fixture(scope="module")
def model(embedded_policy):
    return MultiHeadRewardModel.from_policy(embedded_policy, CATEGORIES, seed=0).eval()


@pytest.fixture(scope="module")
def scorer(model, tokenizer):
    return MultiHeadScorer(model, tokenizer, max_length=160)


def test_heads_differ_per_category(scorer):
    scores = scorer.score([PROMPTS[0]] * 3, [RESPONSES[0]] * 3, CATEGORIES)
    assert scores.shape == (3,)
    assert len(set(scores.tolist())) == 3


def test_row_reads_its_own_head(scorer, model, tokenizer):
    ids = encode_sequence(tokenizer, PROMPTS[1], RESPONSES[1], 160)
    with torch.no_grad():
        hidden = model.backbone(input_ids=torch.tensor([ids])).last_hidden_state
        expected = hidden[0, -1] @ model.heads.weight[CATEGORIES.index("insult")]
    score = scorer.score(PROMPTS[1:2], RESPONSES[1:2], ["insult"])[0]
    assert torch.allclose(score, expected, atol=1e-4)


def test_score_all_columns_match_score(scorer):
    table = scorer.score_all(PROMPTS, RESPONSES)
    rows = scorer.score(PROMPTS, RESPONSES, ["insult", "privacy_property", "insult"])
    assert table.shape == (3, 3)
    assert torch.allclose(rows, table[[0, 1, 2], [1, 2, 1]], atol=1e-5)


def test_repeated_pair_shares_a_pass(scorer):
    # Scoring one pair under every category equals scoring it once per category.
    together = scorer.score([PROMPTS[2]] * 3, [RESPONSES[2]] * 3, CATEGORIES)
    alone = torch.cat(
        [scorer.score(PROMPTS[2:3], RESPONSES[2:3], [c]) for c in CATEGORIES]
    )
    assert torch.allclose(together, alone, atol=1e-5)


def test_unknown_category_lists_known(scorer):
    with pytest.raises(DrirlError, match="known categories: crimes_illegal, insult"):
        scorer.score(PROMPTS[:1], RESPONSES[:1], ["insults"])


def test_missing_category_without_router(scorer):
    with pytest.raises(DrirlError, match="no router"):
        scorer.score(PROMPTS[:1], RESPONSES[:1], [None])


def test_duplicate_categories_rejected(model):
    with pytest.raises(DrirlError, match="distinct category names"):
        MultiHeadRewardModel(model.backbone, ["insult", "insult"])


def test_seeded_heads_repeat(embedded_policy, model):
    again = MultiHeadRewardModel.from_policy(embedded_policy, CATEGORIES, seed=0)
    assert torch.equal(again.heads.weight, model.heads.weight)


def test_save_reload_identical_scores(model, tokenizer, scorer, tmp_path):
    model.save(tmp_path / MULTIHEAD_KEY, tokenizer)
    write_manifest(
        tmp_path,
        {
            "mode": MULTIHEAD_KEY,
            "models": {MULTIHEAD_KEY: MULTIHEAD_KEY},
            "routes": {c: MULTIHEAD_KEY for c in CATEGORIES},
            "max_length": 160,
        },
    )
    categories = ["insult", "crimes_illegal", "privacy_property"]
    before = scorer.score(PROMPTS, RESPONSES, categories)
    reloaded = load_scorer(tmp_path)
    after = reloaded.score(PROMPTS, RESPONSES, categories)
    assert (tmp_path / MULTIHEAD_KEY / HEADS_FILE).is_file()
    assert (tmp_path / MULTIHEAD_KEY / BACKBONE_DIR / "model.safetensors").is_file()
    assert isinstance(reloaded, MultiHeadScorer)
    assert reloaded.categories == CATEGORIES
    assert torch.equal(before, after)


def test_load_without_heads_file(tmp_path):
    with pytest.raises(DrirlError, match="not a saved multihead reward model"):
        MultiHeadRewardModel.load(tmp_path)
