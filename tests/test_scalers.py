"""Difficulty scalers: sentence splitting, alpha_D, alpha_M and their combination."""

from __future__ import annotations

import math

import pytest
import torch

from drirl.components import ScalerBatch
from drirl.errors import ConfigError, UnknownComponentError
from drirl.plugins.scalers.clip import ClipScaler, ClipSettings, split_sentences
from drirl.plugins.scalers.none import NoScaler
from drirl.plugins.scalers.reward_gap import (
    MissingScorerError,
    RewardGapScaler,
    RewardGapSettings,
)
from drirl.scaling import CombinedScaler, build_scaler, parse_scaler_expression
from drirl.text_encoder import TextEncoder, TextEncoderError, load_text_encoder


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class TableEncoder(TextEncoder):
    """A deterministic encoder with hand-picked unit vectors, so cosines are known exactly.

    The real MiniLM encoder gives cosines that cannot be worked out by hand; it is
    covered by ``test_clip_minilm_identical_sentence``.
    """

    dimension = 2
    table = {
        "Alpha.": (1.0, 0.0),
        "Beta.": (0.0, 1.0),
        "Gamma.": (0.6, 0.8),
    }

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        if not texts:
            return torch.zeros(0, self.dimension)
        return torch.tensor([self.table[text] for text in texts], dtype=torch.float32)


class PromptTableScorer:
    """Scores a response by a fixed table keyed by prompt; enough to fix r(q, d) by hand."""

    def __init__(self, demonstration_scores: dict[str, float]) -> None:
        self.demonstration_scores = demonstration_scores
        self.calls = 0

    def score(self, prompts, responses, categories) -> torch.Tensor:
        self.calls += 1
        return torch.tensor([self.demonstration_scores[p] for p in prompts])


def make_batch(
    completions, demonstrations, group_ids, rewards=None, prompts=None, scorer=None
):
    n = len(completions)
    return ScalerBatch(
        prompts=prompts or [f"p{g}" for g in group_ids],
        completions=completions,
        demonstrations=demonstrations,
        categories=["insult"] * n,
        group_ids=torch.tensor(group_ids),
        rewards=torch.tensor(rewards if rewards is not None else [0.0] * n),
        scorer=scorer,
    )


# split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   \n\t ", []),
        ("no punctuation at all", ["no punctuation at all"]),
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        (
            "- first item\n* second item\n3. third item",
            ["first item", "second item", "third item"],
        ),
        ("Line one\n\nLine two", ["Line one", "Line two"]),
        ("!!!", ["!!!"]),
        ("Hi. ... Bye.", ["Hi.", "Bye."]),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_keeps_code_block_whole():
    text = "Run this:\n```python\nx = 1. y = 2.\n```\nDone."
    assert split_sentences(text) == ["Run this:", "python\nx = 1. y = 2.", "Done."]


def test_split_unterminated_code_block():
    assert split_sentences("Start. ```code. more") == ["Start.", "code. more"]


# clip (alpha_D)


def test_clip_alpha_by_hand():
    scaler = ClipScaler(encoder=TableEncoder())
    batch = make_batch(
        completions=["Alpha. Beta.", "Gamma.", ""],
        demonstrations=["Alpha."] * 3,
        group_ids=[0, 0, 0],
    )
    alpha = scaler.factors(batch)
    # W = (1 + 0) / 2, 0.6 and 0 (empty), so delta = 0.5, 0.4, 1.0 with mean 1.9 / 3.
    delta = [0.5, 0.4, 1.0]
    mean = sum(delta) / 3
    expected = torch.tensor([sigmoid(d) / sigmoid(mean) for d in delta])
    assert torch.allclose(alpha, expected, atol=1e-6)


def test_clip_groups_normalise_separately():
    scaler = ClipScaler(encoder=TableEncoder())
    batch = make_batch(
        completions=["Alpha.", "Beta.", "Gamma.", "Gamma."],
        demonstrations=["Alpha."] * 4,
        group_ids=[0, 0, 1, 1],
    )
    alpha = scaler.factors(batch)
    assert torch.allclose(alpha[2:], torch.ones(2))


def test_clip_empty_completion_no_nan():
    scaler = ClipScaler(encoder=TableEncoder())
    batch = make_batch(["", "   "], ["Alpha.", "Alpha."], [0, 0])
    assert torch.isfinite(scaler.factors(batch)).all()


def test_clip_caches_demonstrations():
    encoder = TableEncoder()
    scaler = ClipScaler(encoder=encoder)
    batch = make_batch(["Beta.", "Gamma."], ["Alpha.", "Alpha."], [0, 0])
    scaler.factors(batch)
    scaler.factors(batch)
    demonstration_calls = [call for call in encoder.calls if call == ["Alpha."]]
    assert len(demonstration_calls) == 1


def test_clip_statistics():
    scaler = ClipScaler(encoder=TableEncoder())
    scaler.factors(make_batch(["Gamma."], ["Alpha."], [0]))
    assert scaler.statistics()["delta_mean"] == pytest.approx(0.4)


def test_clip_settings_reject_negative_cache():
    with pytest.raises(ValueError, match="cache_size"):
        ClipSettings(cache_size=-1)


def test_clip_minilm_identical_sentence():
    scaler = ClipScaler()
    text = "I can't help with insulting your coworker."
    similarity = scaler.similarities([text], [text])
    assert similarity.item() == pytest.approx(1.0, abs=1e-4)


def test_minilm_rows_unit_length():
    embeddings = load_text_encoder(None).encode(["Hello there.", "Goodbye."])
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_encoder_cached_per_spec():
    assert load_text_encoder("embedded") is load_text_encoder(None)


def test_open_clip_missing_checkpoint(tmp_path):
    with pytest.raises(TextEncoderError, match="not found"):
        load_text_encoder(f"open_clip:ViT-B-32:{tmp_path / 'missing.pt'}")


def test_encoder_spec_invalid(tmp_path):
    with pytest.raises(TextEncoderError, match="sentence-transformers folder"):
        load_text_encoder(str(tmp_path))


# reward_gap (alpha_M)


def test_reward_gap_alpha_by_hand():
    scorer = PromptTableScorer({"p0": 2.0, "p1": 1.0})
    batch = make_batch(
        completions=["a", "b", "c", "d"],
        demonstrations=["d0", "d0", "d1", "d1"],
        group_ids=[0, 0, 1, 1],
        rewards=[1.0, 3.0, 0.0, 0.0],
        scorer=scorer,
    )
    alpha = RewardGapScaler(RewardGapSettings(tau=1.0)).factors(batch)
    # gaps -1, 1, -1, -1; mean -0.5; squared distances 0.25, 2.25, 0.25, 0.25, so the gap 1
    # is an outlier and the reference is -1. Group means are 0 and -1.
    expected = torch.tensor([sigmoid(-1) / sigmoid(0)] * 2 + [1.0, 1.0])
    assert torch.allclose(alpha, expected, atol=1e-6)


def two_group_batch(rewards, demonstration_scores):
    """Return a batch of prompts p0 and p1 with two completions each and the given rewards."""
    return make_batch(
        ["a", "b", "c", "d"],
        ["d0", "d0", "d1", "d1"],
        [0, 0, 1, 1],
        rewards,
        scorer=PromptTableScorer(demonstration_scores),
    )


def test_max_factor_clamps_both_ends():
    # Demonstrations all score 0, so the gaps are the rewards: -5 and -8 (mean -6.5). With a
    # large tau nothing is an outlier and the reference is -6.5. The groups then get
    # sigmoid(-6.5) / sigmoid(-5) = 0.22 and sigmoid(-6.5) / sigmoid(-8) = 4.5.
    batch = two_group_batch([-5.0, -5.0, -8.0, -8.0], {"p0": 0.0, "p1": 0.0})
    free = RewardGapScaler(RewardGapSettings(tau=100.0)).factors(batch)
    assert free[0] == pytest.approx(sigmoid(-6.5) / sigmoid(-5), rel=1e-4)
    assert free[2] == pytest.approx(sigmoid(-6.5) / sigmoid(-8), rel=1e-4)
    scaler = RewardGapScaler(RewardGapSettings(tau=100.0, max_factor=2.0))
    clamped = scaler.factors(batch)
    assert clamped.tolist() == pytest.approx([0.5, 0.5, 2.0, 2.0])
    assert scaler.statistics()["clamped_fraction"] == pytest.approx(1.0)


def test_max_factor_keeps_inner_values():
    batch = two_group_batch([1.0, 3.0, 0.0, 0.0], {"p0": 2.0, "p1": 1.0})
    free = RewardGapScaler(RewardGapSettings(tau=1.0)).factors(batch)
    scaler = RewardGapScaler(RewardGapSettings(tau=1.0, max_factor=3.0))
    assert torch.equal(scaler.factors(batch), free)
    assert scaler.statistics()["clamped_fraction"] == 0.0


def four_group_batch_with_kinds(rewards):
    """Return groups p0 and p1 (harmful) and p2 and p3 (benign), two completions each.

    Every demonstration scores 0, so each completion's gap is its reward.
    """
    batch = make_batch(
        ["a"] * 8,
        ["d0", "d0", "d1", "d1", "d2", "d2", "d3", "d3"],
        [0, 0, 1, 1, 2, 2, 3, 3],
        rewards,
        scorer=PromptTableScorer({f"p{g}": 0.0 for g in range(4)}),
    )
    batch.kinds = ["harmful"] * 4 + ["benign"] * 4
    return batch


def test_per_kind_compares_within_kind():
    # Harmful gaps -6 and -4 (reference -5), benign gaps 1 and 3 (reference 2).
    batch = four_group_batch_with_kinds([-6.0, -6.0, -4.0, -4.0, 1.0, 1.0, 3.0, 3.0])
    scaler = RewardGapScaler(RewardGapSettings(tau=100.0, per_kind=True))
    alpha = scaler.factors(batch)
    expected = [
        sigmoid(-5) / sigmoid(-6),
        sigmoid(-5) / sigmoid(-4),
        sigmoid(2) / sigmoid(1),
        sigmoid(2) / sigmoid(3),
    ]
    assert alpha[::2].tolist() == pytest.approx(expected, rel=1e-4)
    statistics = scaler.statistics()
    assert statistics["reference_harmful"] == pytest.approx(-5.0)
    assert statistics["reference_benign"] == pytest.approx(2.0)
    assert "reference" not in statistics


def test_shared_reference_favours_lower_kind():
    # The same batch with one reference (-1.5): every harmful group gets more than every
    # benign group, which per_kind avoids.
    batch = four_group_batch_with_kinds([-6.0, -6.0, -4.0, -4.0, 1.0, 1.0, 3.0, 3.0])
    alpha = RewardGapScaler(RewardGapSettings(tau=100.0)).factors(batch)
    assert min(alpha[:4]) > 1 > max(alpha[4:])


def test_per_kind_without_kinds_uses_one_reference():
    batch = two_group_batch([-5.0, -5.0, -8.0, -8.0], {"p0": 0.0, "p1": 0.0})
    shared = RewardGapScaler(RewardGapSettings(tau=100.0)).factors(batch)
    scaler = RewardGapScaler(RewardGapSettings(tau=100.0, per_kind=True))
    assert torch.equal(scaler.factors(batch), shared)
    assert scaler.statistics()["reference"] == pytest.approx(-6.5)


def test_per_kind_ema_averages_each_kind():
    scaler = RewardGapScaler(RewardGapSettings(tau=100.0, ema=0.5, per_kind=True))
    scaler.factors(
        four_group_batch_with_kinds([-6.0, -6.0, -4.0, -4.0, 1.0, 1.0, 3.0, 3.0])
    )
    # A batch of one harmful group at gap -2: its reference is 0.5 * -5 + 0.5 * -2.
    batch = make_batch(["a", "b"], ["d0", "d0"], [0, 0], [-2.0, -2.0])
    batch.scorer = PromptTableScorer({"p0": 0.0})
    batch.kinds = ["harmful", "harmful"]
    alpha = scaler.factors(batch)
    assert scaler.statistics()["reference_harmful"] == pytest.approx(-3.5)
    assert alpha[0] == pytest.approx(sigmoid(-3.5) / sigmoid(-2), rel=1e-4)


def test_per_kind_must_be_a_bool():
    with pytest.raises(ValueError, match="per_kind is 'yes'"):
        RewardGapSettings(per_kind="yes")


def test_reward_gap_all_outliers_plain_mean():
    scorer = PromptTableScorer({"p0": 0.0, "p1": 0.0})
    batch = make_batch(["a", "b"], ["d0", "d1"], [0, 1], [-10.0, 10.0], scorer=scorer)
    scaler = RewardGapScaler(RewardGapSettings(tau=1.0))
    scaler.factors(batch)
    assert scaler.statistics()["reference"] == pytest.approx(0.0)


def test_reward_gap_ema():
    scorer = PromptTableScorer({"p0": 0.0})
    scaler = RewardGapScaler(RewardGapSettings(tau=100.0, ema=0.5))
    scaler.factors(
        make_batch(["a", "b"], ["d", "d"], [0, 0], [2.0, 2.0], scorer=scorer)
    )
    scaler.factors(
        make_batch(["a", "b"], ["d", "d"], [0, 0], [0.0, 0.0], scorer=scorer)
    )
    assert scaler.statistics()["reference"] == pytest.approx(1.0)


def test_reward_gap_scores_each_demo_once():
    scorer = PromptTableScorer({"p0": 0.0, "p1": 0.0})
    batch = make_batch(["a"] * 4, ["d0", "d0", "d1", "d1"], [0, 0, 1, 1], scorer=scorer)
    calls = []
    original = scorer.score

    def counting(prompts, responses, categories):
        calls.append(len(prompts))
        return original(prompts, responses, categories)

    scorer.score = counting
    RewardGapScaler().factors(batch)
    assert calls == [2]


def _counting(scorer, calls):
    original = scorer.score

    def counting(prompts, responses, categories):
        calls.append(len(prompts))
        return original(prompts, responses, categories)

    scorer.score = counting
    return scorer


def test_reward_gap_demo_rewards_cached_across_steps():
    calls = []
    scorer = _counting(PromptTableScorer({"p0": 0.0, "p1": 0.0}), calls)
    scaler = RewardGapScaler()
    batch = make_batch(["a"] * 4, ["d0", "d0", "d1", "d1"], [0, 0, 1, 1], scorer=scorer)
    scaler.factors(batch)
    scaler.factors(batch)
    assert calls == [2]


def test_reward_gap_new_scorer_rescores_demos():
    calls = []
    scaler = RewardGapScaler()
    for _ in range(2):
        scorer = _counting(PromptTableScorer({"p0": 0.0}), calls)
        scaler.factors(make_batch(["a", "b"], ["d", "d"], [0, 0], scorer=scorer))
    assert calls == [1, 1]


def test_reward_gap_nan_reward_finite_alpha():
    scorer = PromptTableScorer({"p0": 0.0})
    batch = make_batch(
        ["a", "b"], ["d", "d"], [0, 0], [float("nan"), float("nan")], scorer=scorer
    )
    assert torch.isfinite(RewardGapScaler().factors(batch)).all()


def test_reward_gap_without_scorer():
    batch = make_batch(["a"], ["d"], [0], [1.0])
    with pytest.raises(MissingScorerError, match="scorer"):
        RewardGapScaler().factors(batch)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tau", 0.0),
        ("tau", -1.0),
        ("ema", 1.0),
        ("ema", -0.1),
        ("max_factor", 0.5),
        ("max_factor", True),
    ],
)
def test_reward_gap_settings_invalid(field, value):
    with pytest.raises(ValueError, match=field):
        RewardGapSettings(**{field: value})


# none, expressions and combinations


def test_none_scaler_ones():
    alpha = NoScaler().factors(make_batch(["a", "b", "c"], ["d"] * 3, [0, 0, 1]))
    assert torch.equal(alpha, torch.ones(3))


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("none", ["none"]),
        ("clip", ["clip"]),
        ("clip*reward_gap", ["clip", "reward_gap"]),
        (" clip * reward_gap ", ["clip", "reward_gap"]),
    ],
)
def test_parse_scaler_expression(expr, names):
    assert parse_scaler_expression(expr) == names


@pytest.mark.parametrize(
    "expr", ["", "clip*", "*clip", "clip+reward_gap", "clip reward_gap"]
)
def test_parse_scaler_expression_invalid(expr):
    with pytest.raises(ConfigError):
        parse_scaler_expression(expr)


def test_build_scaler_unknown_name(plugins):
    with pytest.raises(UnknownComponentError, match="reward_gap"):
        build_scaler(["reward_gapp"], {}, plugins)


def test_build_scaler_unknown_setting(plugins):
    with pytest.raises(ConfigError, match="taus"):
        build_scaler(["reward_gap"], {"reward_gap": {"taus": 1.0}}, plugins)


def test_build_scaler_passes_settings(plugins):
    scaler = build_scaler(["reward_gap"], {"reward_gap": {"tau": 0.5}}, plugins)
    assert scaler.scalers[0].settings.tau == 0.5


class ConstantScaler(NoScaler):
    """Returns one fixed value for every completion, to check how factors combine."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__()
        self.name = name
        self.value = value

    def factors(self, batch):
        return torch.full((len(batch.completions),), self.value)


def test_combined_product():
    scaler = CombinedScaler([ConstantScaler("a", 2.0), ConstantScaler("b", 3.0)])
    alpha = scaler.factors(make_batch(["x", "y"], ["d", "d"], [0, 0]))
    assert torch.allclose(alpha, torch.full((2,), 6.0))


def test_combined_weighted_sum():
    scaler = CombinedScaler(
        [ConstantScaler("a", 2.0), ConstantScaler("b", 3.0)],
        combine="sum",
        weights=[0.25, 0.5],
    )
    alpha = scaler.factors(make_batch(["x"], ["d"], [0]))
    assert alpha.item() == pytest.approx(2.0)


def test_combined_statistics_per_scaler():
    scaler = CombinedScaler([ConstantScaler("a", 2.0), ConstantScaler("b", 3.0)])
    scaler.factors(make_batch(["x"], ["d"], [0]))
    stats = scaler.statistics()
    assert stats["alpha/a/max"] == 2.0
    assert stats["alpha/b/min"] == 3.0
    assert stats["alpha/mean"] == 6.0


def test_combined_rejects_unknown_mode():
    with pytest.raises(ValueError, match="combine"):
        CombinedScaler([NoScaler()], combine="mean")


@pytest.fixture(scope="module")
def random_open_clip(tmp_path_factory) -> str:
    """An open_clip RN50 with random weights saved to disk, as a text encoder spec.

    It replaces a downloaded checkpoint, which this offline suite cannot fetch, so it
    checks the loading path only.
    """
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("RN50", pretrained=None, device="cpu")
    checkpoint = tmp_path_factory.mktemp("open_clip") / "rn50-random.pt"
    torch.save(model.state_dict(), checkpoint)
    return f"open_clip:RN50:{checkpoint}"


def test_open_clip_random_checkpoint_wiring(random_open_clip):
    encoder = load_text_encoder(random_open_clip)
    embeddings = encoder.encode(["a refusal", "a detailed answer"])
    assert embeddings.shape == (2, 1024)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_clip_scaler_open_clip_encoder(random_open_clip):
    scaler = ClipScaler(ClipSettings(encoder=random_open_clip))
    batch = ScalerBatch(
        prompts=["p", "p"],
        completions=["I can't help with that.", "Sure, here it is."],
        demonstrations=["I can't help with that."] * 2,
        categories=["insult", "insult"],
        group_ids=torch.tensor([0, 0]),
        rewards=torch.tensor([1.0, 0.0]),
    )
    alpha = scaler.factors(batch)
    assert alpha.shape == (2,)
    assert bool(torch.isfinite(alpha).all())
