"""Tests of the irl reward learner: settings, the loss, and one tiny round on the embedded model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from drirl.components import RunContext
from drirl.dataset import select
from drirl.multihead_reward import MultiHeadRewardModel, MultiHeadScorer
from drirl.pairs import HARMFUL_PAIR
from drirl.plugins.reward_learners.irl import IRL, IRLSettings, build_policy_optimizer
from drirl.plugins.reward_learners.pair_training import pairwise_loss
from drirl.reward_model import MANIFEST, MULTIHEAD_KEY, ROUTER_FILE

CATEGORIES = ("insult", "crimes_illegal")


def test_settings_defaults():
    settings = IRLSettings()
    assert settings.mode == "separate"
    assert settings.policy_optimizer == "grpo"


@pytest.mark.parametrize(
    "field, value",
    [("rounds", 0), ("policy_steps", 0), ("temperature", 0.0), ("mode", "joint")],
)
def test_settings_rejects_bad_value(field, value):
    with pytest.raises(ValueError, match=field):
        IRLSettings(**{field: value})


def test_settings_rejects_steps_in_policy_settings():
    with pytest.raises(ValueError, match="set policy_steps instead"):
        IRLSettings(policy_settings={"steps": 3})


def test_plugin_and_preset_registered(plugins):
    assert plugins.get("reward_learner", "irl") is IRL
    assert plugins.presets["dr_irl"] == {
        "reward.learner": "irl",
        "optimizer": "grpo_s",
        "scaler": "clip*reward_gap",
    }


def test_policy_optimizer_built_with_steps():
    settings = IRLSettings(policy_steps=3, policy_settings={"learning_rate": 1e-6})
    optimizer = build_policy_optimizer(settings)
    assert optimizer.name == "grpo"
    assert optimizer.settings.steps == 3
    assert optimizer.settings.learning_rate == 1e-6


def test_policy_optimizer_unknown_name():
    with pytest.raises(Exception, match="grpo_z"):
        build_policy_optimizer(IRLSettings(policy_optimizer="grpo_z"))


def test_loss_on_fixed_tensors():
    # -log sigmoid(1) = log(1 + e^-1) = 0.3132617; -log sigmoid(0) = log 2 = 0.6931472.
    loss = pairwise_loss(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.5]))
    assert math.isclose(loss.item(), (0.3132617 + 0.6931472) / 2, rel_tol=1e-6)


def test_loss_falls_as_demo_wins():
    rejected = torch.zeros(1)
    losses = [pairwise_loss(torch.tensor([d]), rejected).item() for d in (-1, 0, 1)]
    assert losses[0] > losses[1] > losses[2]


# One round on the embedded model


@pytest.fixture(scope="module")
def tiny_records(plugins):
    records = []
    for name in CATEGORIES:
        train = select(plugins.get("harm_category", name).load_records(), split="train")
        records += select(train, kind="harmful")[:2] + select(train, kind="benign")[:1]
    return records


@pytest.fixture(scope="module")
def irl_run(tiny_records, embedded_policy, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("irl")
    settings = IRLSettings(
        mode="multihead",
        rounds=1,
        policy_steps=1,
        epochs=2.0,
        learning_rate=5e-5,
        batch_size=3,
        max_length=160,
        max_new_tokens=12,
        policy_settings={
            "batch_size": 2,
            "num_generations": 2,
            "max_completion_length": 8,
            "beta": 0.0,
        },
    )
    learner = IRL(settings)
    ctx = RunContext(seed=0, show_progress=False)
    learner.train(embedded_policy, tiny_records, out_dir, ctx)
    manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    return learner, out_dir, ctx, manifest


def harmful_round_pairs(out_dir):
    lines = (out_dir / "rounds" / "round_1.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in lines.splitlines()]
    return [row for row in rows if row["source"] == HARMFUL_PAIR]


def mean_margin(scorer, pairs):
    prompts = [p["prompt"] for p in pairs]
    categories = [p["category"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"] for p in pairs], categories)
    rejected = scorer.score(prompts, [p["rejected"] for p in pairs], categories)
    return (chosen - rejected).mean().item()


@pytest.mark.slow
def test_irl_ranks_demos_better_than_before(irl_run, embedded_policy):
    learner, out_dir, ctx, manifest = irl_run
    pairs = harmful_round_pairs(out_dir)
    untrained = MultiHeadRewardModel.from_policy(embedded_policy, sorted(CATEGORIES), 0)
    trained = learner.load(out_dir, ctx)
    before = MultiHeadScorer(
        untrained,
        trained.tokenizer,
        max_length=160,
        response_tokens=trained.response_tokens,
    )
    assert len(pairs) == 4
    assert mean_margin(trained, pairs) > mean_margin(before, pairs)


@pytest.mark.slow
def test_irl_manifest_records_round(irl_run):
    _, _, _, manifest = irl_run
    ranking = manifest["ranking"][MULTIHEAD_KEY]
    assert len(manifest["rounds"]) == 1
    assert manifest["pairs"] == {MULTIHEAD_KEY: 6}
    assert ranking["after"]["loss"] < ranking["before"]["loss"]


@pytest.mark.slow
def test_irl_scorer_reads_sample_length(irl_run):
    learner, out_dir, ctx, manifest = irl_run
    assert manifest["response_tokens"] == 12
    assert learner.load(out_dir, ctx).response_tokens == 12


@pytest.mark.slow
def test_irl_moved_the_policy(irl_run):
    _, _, _, manifest = irl_run
    policy_log = manifest["rounds"][0]["policy_log"]
    assert any("loss" in row or "reward" in row for row in policy_log)


@pytest.mark.slow
def test_irl_saves_multihead_and_router(irl_run):
    _, out_dir, _, _ = irl_run
    assert (out_dir / MULTIHEAD_KEY / "heads.safetensors").is_file()
    assert (out_dir / ROUTER_FILE).is_file()
    assert not (out_dir / ".irl_policy").exists()
