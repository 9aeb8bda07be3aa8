"""The ``reward_gap`` difficulty scaler: model-level responsiveness.

For completion i of prompt group j, with the reward model r and the group's demonstration d:

    g_i = r(q_j, o_i) - r(q_j, d_j)
    reference = mean of g over the batch, leaving out outliers with (g - mean g)^2 > tau
    alpha_M_j = sigmoid(reference) / sigmoid(mean of g over group j)

Every completion of group j gets the same alpha_M_j. Groups whose completions lag their
demonstration more than the batch does get alpha above 1. With ``ema`` set, the reference is
an exponential moving average across calls: ema * previous + (1 - ema) * this batch's value.
With ``max_factor`` set, alpha_M is clamped to [1 / max_factor, max_factor]. Unclamped, a
group with mean gap -8 against a reference of -5 gets alpha_M of about 20, so its gradient
is about 20 times that of a group at the reference.

With ``per_kind`` set and prompt kinds in the batch, each kind (harmful, benign) keeps a
reference of its own, computed (and averaged by ``ema``) over its own completions only.
Reward models with a head per kind score the two kinds on scales of their own, so a shared
reference up-weights whichever kind's head gives lower rewards, whatever the policy does.
Without ``ema``, a kind with a single group in the batch gets alpha_M near 1, since its
reference is that group's own mean gap less outliers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from drirl import hookimpl
from drirl.components import DifficultyScaler, RunContext, ScalerBatch
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.kind_heads import score_with_kinds

logger = logging.getLogger(__name__)


class MissingScorerError(DrirlError, ValueError):
    """The reward_gap scaler received a batch without a reward scorer."""


def robust_reference(gaps: torch.Tensor, tau: float) -> float:
    """Return the mean of the finite gaps that are not outliers, (g - mean g)^2 > tau.

    When every gap is an outlier the plain mean is returned. NaN gaps are ignored, and a
    batch without any finite gap gives 0.
    """
    finite = gaps[torch.isfinite(gaps)]
    if finite.numel() == 0:
        return 0.0
    mean = finite.mean()
    inliers = finite[(finite - mean) ** 2 <= tau]
    if inliers.numel() == 0:
        return mean.item()
    return inliers.mean().item()


def group_gap_factors(
    gaps: torch.Tensor, group_ids: torch.Tensor, reference: float
) -> torch.Tensor:
    """Return sigmoid(reference) / sigmoid(mean gap of the group) for every completion.

    NaN gaps (unscorable completions) are left out of their group's mean; a group with no
    finite gap gets alpha 1.
    """
    alpha = torch.ones(gaps.shape[0], dtype=torch.float32)
    numerator = torch.sigmoid(torch.tensor(reference, dtype=torch.float32))
    for group in torch.unique(group_ids):
        members = group_ids == group
        finite = gaps[members][torch.isfinite(gaps[members])]
        if finite.numel() == 0:
            continue
        alpha[members] = numerator / torch.sigmoid(finite.mean())
    return alpha


@dataclass(frozen=True)
class RewardGapSettings:
    """Settings of the ``reward_gap`` scaler."""

    tau: float = 1.0
    ema: float | None = None
    max_factor: float | None = None
    per_kind: bool = False

    def __post_init__(self) -> None:
        if (
            isinstance(self.tau, bool)
            or not isinstance(self.tau, (int, float))
            or not self.tau > 0
        ):
            raise ValueError(
                f"tau is {self.tau!r}; allowed: a number > 0 (the squared distance from the "
                "batch mean gap beyond which a gap is an outlier)"
            )
        if self.ema is not None and (
            isinstance(self.ema, bool)
            or not isinstance(self.ema, (int, float))
            or not 0 <= self.ema < 1
        ):
            raise ValueError(
                f"ema is {self.ema!r}; allowed: null (no averaging) or a number in [0, 1)"
            )
        if self.max_factor is not None and (
            isinstance(self.max_factor, bool)
            or not isinstance(self.max_factor, (int, float))
            or not self.max_factor >= 1
        ):
            raise ValueError(
                f"max_factor is {self.max_factor!r}; allowed: null (no clamp) or a number "
                ">= 1 (alpha_M is clamped to [1 / max_factor, max_factor])"
            )
        if not isinstance(self.per_kind, bool):
            raise ValueError(
                f"per_kind is {self.per_kind!r}; allowed: true (a reference per prompt "
                "kind) or false (one reference for the batch)"
            )


class RewardGapScaler(DifficultyScaler):
    """Weights prompt groups by how far their completions' rewards lag the demonstration's."""

    name = "reward_gap"
    Settings = RewardGapSettings

    def __init__(
        self, settings: RewardGapSettings | None = None, ctx: RunContext | None = None
    ) -> None:
        super().__init__(settings, ctx)
        # The running reference per prompt kind; the key None is the batch-wide one.
        self._references: dict[str | None, float] = {}
        self._statistics: dict[str, float] = {}
        # Demonstration rewards per (prompt, demonstration, category), for one scorer.
        # The reward model is frozen while a policy trains against it, so each
        # demonstration is scored once per run rather than once per step.
        self._cache: dict[tuple[str, str, str, str | None], float] = {}
        self._cache_scorer: object | None = None

    def demonstration_rewards(self, batch: ScalerBatch) -> torch.Tensor:
        """Return the demonstration's reward for each completion.

        Each distinct (prompt, demonstration, category, kind) is scored once per scorer
        object.
        NOTE: a scorer whose weights change in place between calls would get stale
        rewards; pass a new scorer object after each reward-model update.
        """
        if batch.scorer is None:
            raise MissingScorerError(
                "the reward_gap scaler needs the reward scorer to score demonstrations, but "
                "the batch has none; use it with a reward-model optimizer (grpo_s), or drop "
                "reward_gap from the scaler expression"
            )
        if self._cache_scorer is not batch.scorer:
            self._cache = {}
            self._cache_scorer = batch.scorer
        kinds = batch.kinds if batch.kinds is not None else [None] * len(batch.prompts)
        keys = list(
            zip(batch.prompts, batch.demonstrations, batch.categories, kinds)
        )
        missing = [key for key in dict.fromkeys(keys) if key not in self._cache]
        if missing:
            scores = score_with_kinds(
                batch.scorer,
                [key[0] for key in missing],
                [key[1] for key in missing],
                [key[2] for key in missing],
                [key[3] for key in missing] if batch.kinds is not None else None,
            )
            scores = (
                torch.as_tensor(scores, dtype=torch.float32).detach().cpu().reshape(-1)
            )
            if scores.shape[0] != len(missing):
                raise ValueError(
                    f"the reward scorer returned {scores.shape[0]} scores for "
                    f"{len(missing)} demonstrations; it must return one score per "
                    "(prompt, response) pair"
                )
            self._cache.update(zip(missing, scores.tolist()))
        return torch.tensor([self._cache[key] for key in keys], dtype=torch.float32)

    def factors(self, batch: ScalerBatch) -> torch.Tensor:
        """Return alpha_M for each completion (the same value within a prompt group)."""
        rewards = torch.as_tensor(batch.rewards, dtype=torch.float32).detach().cpu()
        gaps = rewards - self.demonstration_rewards(batch)
        if self.settings.per_kind and batch.kinds is not None:
            kinds: list[str | None] = list(batch.kinds)
        else:
            kinds = [None] * gaps.shape[0]
        alpha = torch.ones(gaps.shape[0], dtype=torch.float32)
        references: dict[str | None, float] = {}
        for kind in dict.fromkeys(kinds):
            members = torch.tensor([k == kind for k in kinds], dtype=torch.bool)
            references[kind] = self._update_reference(kind, gaps[members])
            alpha[members] = group_gap_factors(
                gaps[members], batch.group_ids[members], references[kind]
            )
        clamped = 0.0
        if self.settings.max_factor is not None:
            bound = float(self.settings.max_factor)
            clamped = ((alpha > bound) | (alpha < 1 / bound)).float().mean().item()
            alpha = alpha.clamp(1 / bound, bound)

        finite = gaps[torch.isfinite(gaps)]
        mean = finite.mean() if finite.numel() else torch.tensor(0.0)
        outliers = ((finite - mean) ** 2 > self.settings.tau).float()
        self._statistics = {
            "gap_mean": mean.item(),
            "outlier_fraction": outliers.mean().item() if outliers.numel() else 0.0,
            "clamped_fraction": clamped,
        }
        for kind, reference in references.items():
            self._statistics["reference" if kind is None else f"reference_{kind}"] = (
                reference
            )
        return alpha

    def _update_reference(self, kind: str | None, gaps: torch.Tensor) -> float:
        """Return this batch's reference for one kind, averaged with earlier ones by ema."""
        reference = robust_reference(gaps, self.settings.tau)
        previous = self._references.get(kind)
        if self.settings.ema is not None and previous is not None:
            reference = self.settings.ema * previous + (1 - self.settings.ema) * reference
        self._references[kind] = reference
        return reference

    def statistics(self) -> dict[str, float]:
        """Return the last batch's mean gap, outlier and clamped fractions and references.

        The reference is ``reference``, or ``reference_<kind>`` for each kind with
        ``per_kind``. The outlier fraction is measured against the whole batch's mean gap,
        also with ``per_kind``.
        """
        return dict(self._statistics)


@hookimpl
def register_difficulty_scalers(register: Register) -> None:
    """Register the ``reward_gap`` scaler."""
    register(RewardGapScaler)
