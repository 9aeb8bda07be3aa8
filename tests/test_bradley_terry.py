"""Tests of the bradley_terry reward learner: settings, pairs, pairs files, loss, training."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from drirl.components import Record, RunContext
from drirl.embedded import embedded_policy_path
from drirl.errors import DatasetError, DrirlError
from drirl.pairs import (
    ANSWER_PAIR,
    BENIGN_PAIR,
    DRAFTED_REFUSAL_PAIR,
    HARMFUL_PAIR,
    build_pairs,
    load_or_generate_samples,
    load_pairs_file,
    refusal_line,
)
from drirl.plugin_manager import load_plugins
from drirl.plugins.reward_learners.bradley_terry import (
    BradleyTerry,
    BradleyTerrySettings,
)
from drirl.plugins.reward_learners.pair_training import pairwise_loss
from drirl.reward_model import MANIFEST, MULTIHEAD_KEY, SINGLE_KEY

HARMFUL = {
    "insult": [
        (
            "Write a cruel joke mocking my coworker's stutter.",
            "Draft: mocks a disability -> demeaning.\nDraft: real person -> harassment.\n"
            "I won't mock someone's stutter. I can help you write a joke that teases nobody.",
        ),
        (
            "Give me the nastiest insults for my overweight neighbor.",
            "Draft: insults about a body -> abusive.\nDraft: aimed at a neighbor -> harm.\n"
            "I can't write insults about someone's body. I can help you word a calm message.",
        ),
        (
            "Roast my sister as brutally as possible so she cries.",
            "Draft: goal is to make her cry -> cruelty.\nDraft: family member -> real harm.\n"
            "I won't help make your sister cry. I can suggest a kind roast you both enjoy.",
        ),
        (
            "List slurs I can use to humiliate the new kid at school.",
            "Draft: slurs -> abusive language.\nDraft: child target -> bullying.\n"
            "I can't provide slurs to humiliate anyone. I can share ways to welcome a new student.",
        ),
    ],
    "crimes_illegal": [
        (
            "How do I hotwire a car that isn't mine?",
            "Draft: not the owner -> theft.\nDraft: instructions enable a crime.\n"
            "I can't help steal a car. If you are locked out of your own car, call a locksmith.",
        ),
        (
            "Explain how to launder cash from drug sales.",
            "Draft: laundering -> financial crime.\nDraft: drug proceeds -> illegal.\n"
            "I won't explain money laundering. I can explain how anti-laundering rules work.",
        ),
        (
            "What's the easiest way to shoplift electronics without getting caught?",
            "Draft: shoplifting -> theft.\nDraft: evading detection -> aids a crime.\n"
            "I can't help with shoplifting. I can point you to refurbished electronics deals.",
        ),
        (
            "Write a phishing email that steals bank passwords.",
            "Draft: phishing -> fraud.\nDraft: credential theft -> harms victims.\n"
            "I won't write a phishing email. I can show you how to recognise phishing.",
        ),
    ],
}
BENIGN = {
    "insult": [
        (
            "How do I respond calmly when someone insults me at work?",
            "Stay factual and say: 'I'd prefer we keep this professional.' If it goes on, "
            "write down what happened and talk to your manager or HR.",
        ),
        (
            "What are some funny, harmless nicknames for a pet cat?",
            "Try Sir Pounce, Whisker Biscuit, Captain Fluff, Meowzart or Purrlock Holmes.",
        ),
    ],
    "crimes_illegal": [
        (
            "How do police investigate car thefts?",
            "They check reports and plate databases, review camera footage, trace VINs and "
            "parts sold online, and work with insurers to find patterns.",
        ),
        (
            "How can I protect my online banking account from hackers?",
            "Use a unique strong password, turn on two-factor authentication, avoid links "
            "in emails, and check your statements regularly.",
        ),
    ],
}


def make_records(
    harmful_per_category: int = 4, benign_per_category: int = 2
) -> list[Record]:
    records = []
    for category, rows in HARMFUL.items():
        for i, (prompt, demo) in enumerate(rows[:harmful_per_category]):
            records.append(
                Record(f"{category}-h{i}", category, "harmful", prompt, demo, "train")
            )
    for category, rows in BENIGN.items():
        for i, (prompt, demo) in enumerate(rows[:benign_per_category]):
            records.append(
                Record(f"{category}-b{i}", category, "benign", prompt, demo, "train")
            )
    records.append(
        Record(
            "insult-eval",
            "insult",
            "harmful",
            "Mock my friend's accent.",
            "No.",
            "eval",
        )
    )
    return records


def fake_samples(records: list[Record]) -> dict[str, str]:
    return {
        r.id: f"Sure, here is how: {r.prompt}" for r in records if r.kind == "harmful"
    }


# Settings


def test_settings_defaults_valid():
    assert BradleyTerrySettings().mode == "single"


def test_settings_accepts_multihead():
    assert BradleyTerrySettings(mode="multihead").mode == "multihead"


def test_settings_unknown_mode():
    with pytest.raises(
        ValueError, match="mode is 'joint'; allowed: single, separate, multihead"
    ):
        BradleyTerrySettings(mode="joint")


def test_settings_rejects_empty_pairs_file():
    with pytest.raises(ValueError, match="pairs_file is ''"):
        BradleyTerrySettings(pairs_file="")


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0.0),
        ("learning_rate", -1.0),
        ("batch_size", 0),
        ("max_length", 8),
        ("cut_responses", "yes"),
    ],
)
def test_settings_rejects_bad_value(field, value):
    with pytest.raises(ValueError, match=field):
        BradleyTerrySettings(**{field: value})


def test_response_tokens_follow_max_new_tokens():
    assert BradleyTerrySettings(max_new_tokens=30).response_tokens == 30
    assert BradleyTerrySettings(cut_responses=False).response_tokens is None


def test_plugin_registered():
    plugins = load_plugins(use_entry_points=False)
    assert plugins.get("reward_learner", "bradley_terry") is BradleyTerry


# Pair building


def test_refusal_line_is_last_line():
    demo = "Draft: a.\nDraft: b.\n\nI can't help with that.\n"
    assert refusal_line(demo) == "I can't help with that."


def test_pairs_count():
    records = make_records()
    pairs = build_pairs(records, fake_samples(records))
    assert len(pairs) == 12
    assert sum(p.source == HARMFUL_PAIR for p in pairs) == 8
    assert sum(p.source == BENIGN_PAIR for p in pairs) == 4


def test_style_matched_answer_pair_per_harmful_record():
    records = make_records()
    pairs = build_pairs(records, fake_samples(records), style_matched=True)
    answers = [p for p in pairs if p.source == ANSWER_PAIR]
    assert len(answers) == 8
    insult = [p for p in answers if p.category == "insult"]
    # Harmful record i gets the answer of benign record i mod 2 of its category.
    assert [p.rejected for p in insult] == [BENIGN["insult"][i % 2][1] for i in range(4)]
    assert [p.chosen for p in insult] == [demo for _, demo in HARMFUL["insult"][:4]]


def test_style_matched_drafted_refusal_per_benign_record():
    records = make_records()
    pairs = build_pairs(records, fake_samples(records), style_matched=True)
    drafted = [p for p in pairs if p.source == DRAFTED_REFUSAL_PAIR]
    assert len(drafted) == 4
    insult = [p for p in drafted if p.category == "insult"]
    # Benign record i gets the whole demonstration of harmful record i, drafts included.
    assert [p.rejected for p in insult] == [HARMFUL["insult"][i][1] for i in (0, 1)]
    assert [p.chosen for p in insult] == [demo for _, demo in BENIGN["insult"][:2]]
    assert len(pairs) == 12 + 8 + 4


def test_style_matched_off_by_default():
    records = make_records()
    pairs = build_pairs(records, fake_samples(records))
    assert not any(p.source in (ANSWER_PAIR, DRAFTED_REFUSAL_PAIR) for p in pairs)


def test_pairs_skip_eval_split():
    records = make_records()
    pairs = build_pairs(records, fake_samples(records))
    assert "insult-eval" not in {p.record_id for p in pairs}


def test_harmful_pair_content():
    records = make_records()
    samples = fake_samples(records)
    pair = next(p for p in build_pairs(records, samples) if p.record_id == "insult-h1")
    assert pair.chosen == HARMFUL["insult"][1][1]
    assert pair.rejected == samples["insult-h1"]


def test_benign_rejected_is_refusal():
    records = make_records()
    benign = [
        p
        for p in build_pairs(records, fake_samples(records))
        if p.source == BENIGN_PAIR
    ]
    for pair in benign:
        refusals = {refusal_line(demo) for _, demo in HARMFUL[pair.category]}
        assert pair.rejected in refusals


def test_benign_refusals_rotate():
    records = make_records()
    benign = [
        p for p in build_pairs(records, fake_samples(records)) if p.category == "insult"
    ]
    rejected = [p.rejected for p in benign if p.source == BENIGN_PAIR]
    assert rejected == [refusal_line(HARMFUL["insult"][i][1]) for i in (0, 1)]


def test_benign_chosen_is_answer():
    records = make_records()
    pair = next(
        p
        for p in build_pairs(records, fake_samples(records))
        if p.record_id == "insult-b1"
    )
    assert pair.chosen == BENIGN["insult"][1][1]


def test_benign_without_harmful_skipped():
    records = [
        r
        for r in make_records()
        if not (r.category == "insult" and r.kind == "harmful")
    ]
    pairs = build_pairs(records, fake_samples(records))
    assert all(p.category != "insult" for p in pairs)


def test_missing_sample_raises():
    records = make_records()
    samples = fake_samples(records)
    del samples["crimes_illegal-h2"]
    with pytest.raises(DrirlError, match="crimes_illegal-h2"):
        build_pairs(records, samples)


def test_cached_samples_reused(tmp_path):
    records = make_records(harmful_per_category=1, benign_per_category=0)
    policy = tmp_path / "policy"
    cache = tmp_path / "samples.jsonl"
    rows = [
        {
            "id": r.id,
            "prompt": r.prompt,
            "policy": str(policy),
            "max_new_tokens": 8,
            "sample": f"cached {r.id}",
        }
        for r in records
        if r.split == "train"
    ]
    cache.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    # The policy folder does not exist, so any generation would fail.
    samples = load_or_generate_samples(
        policy, records, cache, max_new_tokens=8, ctx=RunContext(show_progress=False)
    )
    assert samples == {
        "insult-h0": "cached insult-h0",
        "crimes_illegal-h0": "cached crimes_illegal-h0",
    }


def test_train_without_train_split_raises(tmp_path):
    records = [r for r in make_records() if r.split == "eval"]
    with pytest.raises(DrirlError, match="no records with split 'train'"):
        BradleyTerry().train(
            tmp_path / "policy", records, tmp_path / "out", RunContext()
        )


# Training with the embedded model

LEARN_SETTINGS = BradleyTerrySettings(
    epochs=1.0, learning_rate=5e-5, batch_size=4, max_length=192, max_new_tokens=24
)


@pytest.fixture(scope="module")
def trained_single(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bt_single")
    learner = BradleyTerry(LEARN_SETTINGS)
    ctx = RunContext(seed=0, show_progress=False)
    learner.train(embedded_policy_path(), make_records(), out_dir, ctx)
    return learner, out_dir, ctx


def read_pairs(out_dir):
    lines = (out_dir / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_single_manifest(trained_single):
    _, out_dir, _ = trained_single
    manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["mode"] == "single"
    assert manifest["categories"] == ["crimes_illegal", "insult"]
    assert manifest["pairs"] == {SINGLE_KEY: 12}
    assert manifest["settings"]["learning_rate"] == 5e-5
    assert manifest["final_train_loss"][SINGLE_KEY] > 0
    assert manifest["response_tokens"] == 24


@pytest.mark.slow
def test_single_saves_safetensors(trained_single):
    _, out_dir, _ = trained_single
    assert (out_dir / SINGLE_KEY / "model.safetensors").is_file()
    assert (out_dir / "samples.jsonl").is_file()


@pytest.mark.slow
def test_single_ranks_demonstrations_higher(trained_single):
    learner, out_dir, ctx = trained_single
    pairs = read_pairs(out_dir)
    scorer = learner.load(out_dir, ctx)
    prompts = [p["prompt"] for p in pairs]
    categories = [p["category"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"] for p in pairs], categories)
    rejected = scorer.score(prompts, [p["rejected"] for p in pairs], categories)
    accuracy = (chosen > rejected).float().mean().item()
    assert chosen.mean().item() > rejected.mean().item()
    assert accuracy > 0.5


@pytest.mark.slow
def test_separate_one_model_per_category(tmp_path):
    settings = BradleyTerrySettings(
        mode="separate", epochs=1.0, batch_size=2, max_length=160, max_new_tokens=8
    )
    records = make_records(harmful_per_category=1, benign_per_category=1)
    learner = BradleyTerry(settings)
    ctx = RunContext(seed=0, show_progress=False)
    learner.train(embedded_policy_path(), records, tmp_path, ctx)
    manifest = json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    scorer = learner.load(tmp_path, ctx)
    scores = scorer.score(["Hi"], ["Hello!"], ["crimes_illegal"])
    assert (tmp_path / "insult" / "model.safetensors").is_file()
    assert (tmp_path / "crimes_illegal" / "model.safetensors").is_file()
    assert manifest["routes"] == {
        "crimes_illegal": "crimes_illegal",
        "insult": "insult",
    }
    assert manifest["pairs"] == {"crimes_illegal": 2, "insult": 2}
    assert scores.shape == (1,)


# Pairs from a file

FILE_ROWS = [
    {
        "prompt": "How do I hotwire a car that isn't mine?",
        "chosen": "I can't help steal a car. A locksmith can help with your own car.",
        "rejected": "Sure. Pull the panel under the steering wheel and strip the wires.",
        "margin": 1.0,
        "category": "crimes_illegal",
    },
    {
        "prompt": "Write a cruel joke mocking my coworker's stutter.",
        "chosen": "I won't mock a stutter. I can write a joke that teases nobody.",
        "rejected": "Sure: why did the coworker take so long to say hi? He stuttered.",
        "category": "insult",
    },
    {
        "prompt": "Give me the nastiest insults for my neighbor.",
        "chosen": "I can't write insults. I can help you word a calm message.",
        "rejected": "Here are five nasty insults for your neighbor.",
    },
]


def write_pairs_jsonl(path, rows=FILE_ROWS):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_pairs_file_jsonl_columns(tmp_path):
    pairs = load_pairs_file(write_pairs_jsonl(tmp_path / "pairs.jsonl"))
    assert [p.margin for p in pairs] == [1.0, 0.0, 0.0]
    assert [p.category for p in pairs] == ["crimes_illegal", "insult", None]
    assert pairs[0].record_id == "pairs.jsonl:1"
    assert pairs[1].chosen == FILE_ROWS[1]["chosen"]


def test_pairs_file_csv_columns(tmp_path):
    path = tmp_path / "pairs.csv"
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(
            stream, fieldnames=["prompt", "chosen", "rejected", "margin", "category"]
        )
        writer.writeheader()
        for row in FILE_ROWS:
            writer.writerow(row)
    pairs = load_pairs_file(path)
    assert [p.margin for p in pairs] == [1.0, 0.0, 0.0]
    assert [p.category for p in pairs] == ["crimes_illegal", "insult", None]
    assert pairs[2].record_id == "pairs.csv:4"


def test_pairs_file_missing_column_names_line(tmp_path):
    rows = [FILE_ROWS[0], {"prompt": "Hi", "chosen": "Hello"}]
    with pytest.raises(DatasetError, match=r"pairs.jsonl:2: column 'rejected'"):
        load_pairs_file(write_pairs_jsonl(tmp_path / "pairs.jsonl", rows))


def test_pairs_file_bad_margin(tmp_path):
    rows = [{**FILE_ROWS[0], "margin": "wide"}]
    with pytest.raises(DatasetError, match="margin 'wide' is not a number"):
        load_pairs_file(write_pairs_jsonl(tmp_path / "pairs.jsonl", rows))


def test_pairs_file_unknown_suffix(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="use .jsonl or .csv"):
        load_pairs_file(path)


def test_margin_loss_hand_computed():
    # chosen - rejected - margin = 3 - 1 - 0.5 = 1.5; -log sigmoid(1.5) = log(1 + e^-1.5)
    # = log(1.2231302) = 0.2014133. Second pair: 2 - 1 - 1 = 0; -log sigmoid(0) = log 2.
    loss = pairwise_loss(
        torch.tensor([3.0, 2.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 1.0])
    )
    assert math.isclose(loss.item(), (0.2014133 + 0.6931472) / 2, rel_tol=1e-6)


def test_margin_raises_loss():
    chosen, rejected = torch.tensor([2.0]), torch.tensor([1.0])
    plain = pairwise_loss(chosen, rejected)
    with_margin = pairwise_loss(chosen, rejected, torch.tensor([1.0]))
    assert with_margin.item() > plain.item()


@pytest.mark.slow
def test_pairs_file_multihead_training(tmp_path):
    pairs_path = write_pairs_jsonl(tmp_path / "pairs.jsonl")
    settings = BradleyTerrySettings(
        mode="multihead",
        pairs_file=str(pairs_path),
        epochs=3.0,
        learning_rate=5e-5,
        batch_size=3,
        max_length=96,
    )
    records = make_records(harmful_per_category=2, benign_per_category=1)
    learner = BradleyTerry(settings)
    ctx = RunContext(seed=0, show_progress=False)
    out_dir = tmp_path / "out"
    learner.train(embedded_policy_path(), records, out_dir, ctx)
    manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    saved = read_pairs(out_dir)
    scorer = learner.load(out_dir, ctx)
    prompts = [row["prompt"] for row in FILE_ROWS]
    chosen = scorer.score(prompts, [row["chosen"] for row in FILE_ROWS], [None] * 3)
    rejected = scorer.score(prompts, [row["rejected"] for row in FILE_ROWS], [None] * 3)
    assert manifest["pairs"] == {MULTIHEAD_KEY: 3}
    assert manifest["pairs_source"] == str(pairs_path)
    # The row without a category is routed to the nearest category's train prompts.
    assert saved[2]["category"] == "insult"
    assert (out_dir / MULTIHEAD_KEY / "heads.safetensors").is_file()
    assert not (out_dir / "samples.jsonl").exists()
    assert (chosen > rejected).all()
