"""The ``dpo`` optimizer and DPO-S on the embedded SmolLM2-135M-Instruct with real TRL.

The loss tests fix the log-ratios by passing reference log-probabilities computed from the
policy's own log-probabilities minus known values, so every expected loss below is
computed by hand from ``-log sigmoid(beta * alpha * (logratio_chosen - logratio_rejected))``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl import DPOTrainer

from drirl.components import DifficultyScaler, RunContext, ScalerBatch
from drirl.config import load_experiment
from drirl.errors import ConfigError
from drirl.generation import chat_text
from drirl.pairs import BENIGN_PAIR, HARMFUL_PAIR, PreferencePair
from drirl.plugins.optimizers.dpo import DPO
from drirl.plugins.optimizers.dpo_data import DPOSettings
from drirl.plugins.optimizers.dpo_run import PAIRS_FILE, build_dpo_trainer
from drirl.plugins.optimizers.dpo_trainer import ScaledDPOTrainer, check_factors

BETA = 0.1
CTX = RunContext(show_progress=False)
# Policy sample for the harmful prompt: a compliant answer, the response DPO should reject.
SAMPLE = "Sure, here is a paragraph that makes fun of the way he talks."
REFUSAL = "I can't help with that, because it would hurt someone."


class FixedScaler(DifficultyScaler):
    """Returns preset factors and keeps the last batch, so tests can inspect both."""

    name = "fixed"

    def __init__(self, alpha: list[float]) -> None:
        super().__init__(None, CTX)
        self.alpha = torch.tensor(alpha)
        self.batch: ScalerBatch | None = None

    def factors(self, batch: ScalerBatch) -> torch.Tensor:
        self.batch = batch
        return self.alpha[: len(batch.completions)].clone()


def insult_records(plugins, kind: str, count: int):
    records = plugins.get("harm_category", "insult").load_records()
    chosen = [r for r in records if r.kind == kind and r.split == "train"]
    return chosen[:count]


@pytest.fixture(scope="module")
def pairs(plugins) -> list[PreferencePair]:
    harmful = insult_records(plugins, "harmful", 1)[0]
    benign = insult_records(plugins, "benign", 1)[0]
    return [
        PreferencePair(
            record_id=harmful.id,
            category="insult",
            source=HARMFUL_PAIR,
            prompt=harmful.prompt,
            chosen=harmful.demonstration,
            rejected=SAMPLE,
        ),
        PreferencePair(
            record_id=benign.id,
            category="insult",
            source=BENIGN_PAIR,
            prompt=benign.prompt,
            chosen=benign.demonstration,
            rejected=REFUSAL,
        ),
    ]


@pytest.fixture(scope="module")
def trainer(embedded_policy, pairs, tmp_path_factory) -> ScaledDPOTrainer:
    settings = DPOSettings(beta=BETA, steps=1, batch_size=2)
    out = tmp_path_factory.mktemp("dpo")
    scaler = FixedScaler([2.0, 0.5])
    return build_dpo_trainer(settings, embedded_policy, pairs, scaler, out, CTX)


def batch_with_logratios(trainer, rows, chosen, rejected):
    """Collate dataset rows and add reference log-probs that give the wanted log-ratios."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    policy_chosen, policy_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    batch["ref_chosen_logps"] = policy_chosen - torch.tensor(chosen)
    batch["ref_rejected_logps"] = policy_rejected - torch.tensor(rejected)
    return batch


def dpo_s_loss(trainer, batch, alpha) -> float:
    trainer.scaler.alpha = torch.tensor(alpha)
    trainer.precompute_ref_logps = True  # read the reference log-probs from the batch
    try:
        return trainer.compute_loss(trainer.model, batch).item()
    finally:
        trainer.precompute_ref_logps = False


# Chat template: what the trainer tokenizes.


def test_dpo_prompt_ends_with_generation_prompt(trainer, pairs):
    tokenizer = trainer.processing_class
    for row, pair in zip(trainer.train_dataset, pairs):
        expected = tokenizer(
            chat_text(tokenizer, pair.prompt), add_special_tokens=False
        )
        assert row["prompt_ids"] == expected["input_ids"], pair.record_id
        assert tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")


def test_dpo_responses_hold_final_turn_only(trainer, pairs):
    tokenizer = trainer.processing_class
    for row, pair in zip(trainer.train_dataset, pairs):
        chosen = tokenizer.decode(row["chosen_ids"])
        rejected = tokenizer.decode(row["rejected_ids"])
        assert chosen == pair.chosen + "<|im_end|>\n", pair.record_id
        assert rejected == pair.rejected + "<|im_end|>\n", pair.record_id


def test_dpo_one_end_of_turn_token(trainer):
    end_of_turn = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
    for row in trainer.train_dataset:
        assert row["chosen_ids"].count(end_of_turn) == 1
        assert row["rejected_ids"].count(end_of_turn) == 1


# DPO-S loss, computed by hand.


def test_dpo_s_pair_losses_by_hand(trainer):
    # Pair 0: beta * alpha * (1.0 - 0.2) = 0.1 * 2.0 * 0.8 = 0.16,
    #   -log sigmoid(0.16) = log(1 + exp(-0.16)) = 0.616344.
    # Pair 1: beta * alpha * (-0.5 - 0.5) = 0.1 * 0.5 * -1.0 = -0.05,
    #   -log sigmoid(-0.05) = log(1 + exp(0.05)) = 0.718460.
    first = batch_with_logratios(trainer, [0], [1.0], [0.2])
    second = batch_with_logratios(trainer, [1], [-0.5], [0.5])
    assert dpo_s_loss(trainer, first, [2.0]) == pytest.approx(0.616344, abs=1e-4)
    assert dpo_s_loss(trainer, second, [0.5]) == pytest.approx(0.718460, abs=1e-4)


def test_dpo_s_batch_loss_is_mean(trainer):
    batch = batch_with_logratios(trainer, [0, 1], [1.0, -0.5], [0.2, 0.5])
    expected = (0.616344 + 0.718460) / 2
    assert dpo_s_loss(trainer, batch, [2.0, 0.5]) == pytest.approx(expected, abs=1e-4)


def test_dpo_s_alpha_one_is_plain_dpo(trainer):
    # -log sigmoid(0.1 * 0.8) = 0.653947 and -log sigmoid(0.1 * -1.0) = 0.744397.
    batch = batch_with_logratios(trainer, [0, 1], [1.0, -0.5], [0.2, 0.5])
    expected = (0.653947 + 0.744397) / 2
    scaled = dpo_s_loss(trainer, batch, [1.0, 1.0])
    trainer.precompute_ref_logps = True
    try:
        plain = DPOTrainer.compute_loss(trainer, trainer.model, batch).item()
    finally:
        trainer.precompute_ref_logps = False
    assert scaled == pytest.approx(expected, abs=1e-4)
    assert plain == pytest.approx(expected, abs=1e-4)
    assert trainer.beta == BETA


def test_dpo_s_scaler_sees_pairs(trainer, pairs):
    batch = batch_with_logratios(trainer, [0, 1], [1.0, -0.5], [0.2, 0.5])
    dpo_s_loss(trainer, batch, [1.0, 1.0])
    seen = trainer.scaler.batch
    assert seen.completions == [pair.rejected for pair in pairs]
    assert seen.demonstrations == [pair.chosen for pair in pairs]
    assert seen.prompts == [pair.prompt for pair in pairs]
    assert seen.categories == ["insult", "insult"]
    assert seen.group_ids.tolist() == [0, 0]


def test_dpo_s_scaler_gets_implicit_rewards(trainer, pairs):
    # Implicit reward = beta * logratio: rejected 0.1 * [0.2, 0.5], chosen 0.1 * [1.0, -0.5].
    batch = batch_with_logratios(trainer, [0, 1], [1.0, -0.5], [0.2, 0.5])
    dpo_s_loss(trainer, batch, [1.0, 1.0])
    seen = trainer.scaler.batch
    chosen = seen.scorer.score(seen.prompts, seen.demonstrations, seen.categories)
    assert seen.rewards.tolist() == pytest.approx([0.02, 0.05], abs=1e-4)
    assert chosen.tolist() == pytest.approx([0.1, -0.05], abs=1e-4)


def test_check_factors_rejects_zero():
    with pytest.raises(ValueError, match="finite and positive"):
        check_factors(torch.tensor([1.0, 0.0]), 2)


def test_check_factors_rejects_shape():
    with pytest.raises(ValueError, match="one factor per pair"):
        check_factors(torch.tensor([1.0]), 2)


# Settings: shared fields and fields that belong to other optimizers.


def test_dpo_settings_share_fields():
    settings = DPOSettings(learning_rate=2e-5, steps=3, batch_size=4, beta=0.2)
    assert (settings.learning_rate, settings.steps, settings.batch_size) == (2e-5, 3, 4)
    assert settings.beta == 0.2


def test_dpo_settings_reject_negative_beta():
    with pytest.raises(ValueError, match="beta is -0.1"):
        DPOSettings(beta=-0.1)


def test_dpo_rejects_num_generations(plugins):
    experiment = {"name": "t", "optimizer": "dpo", "training": {"num_generations": 4}}
    with pytest.raises(ConfigError) as error:
        load_experiment(experiment, plugins, file="exp.yaml")
    message = str(error.value)
    assert "training.num_generations" in message
    assert "optimizer 'dpo'" in message
    assert "learning_rate, steps, batch_size, beta" in message


def test_dpo_registered_without_reward(plugins):
    optimizer = plugins.get("optimizer", "dpo")
    assert optimizer.needs_reward is False
    assert optimizer.accepts_scaler is True


def test_dpo_preset_registered(plugins):
    assert plugins.presets["dpo"] == {"optimizer": "dpo", "scaler": "none"}


# One short real run.


@pytest.mark.slow
def test_dpo_run_changes_parameters(embedded_policy, plugins, tmp_path):
    records = insult_records(plugins, "harmful", 1) + insult_records(
        plugins, "benign", 1
    )
    settings = DPOSettings(
        learning_rate=1e-4, steps=2, batch_size=2, max_completion_length=8
    )
    result = DPO(settings).train(embedded_policy, records, None, None, tmp_path, CTX)

    before = load_file(Path(embedded_policy) / "model.safetensors")
    after = load_file(result.model_path / "model.safetensors")
    shared = sorted(set(before) & set(after))
    changed = [name for name in shared if not torch.equal(before[name], after[name])]
    assert shared
    assert changed
    assert [row["step"] for row in result.log_history if "loss" in row] == [1, 2]
    assert (tmp_path / PAIRS_FILE).is_file()
    assert math.isfinite(result.log_history[0]["loss"])
