"""Difficulty scaling of group-normalised advantages, and scaler combinations.

GRPO-S multiplies the group-normalised advantage of each completion by a positive factor
alpha. The order matters: a factor that is constant within a prompt group, applied to the
raw rewards before normalisation, cancels out, because normalisation divides by the group's
own spread. So alpha always multiplies the normalised advantage (``scale_advantages``).

A scaler expression names one or more registered scalers joined by ``*``, for example
``"clip*reward_gap"``. ``build_scaler`` turns the names into one ``CombinedScaler``, which
multiplies (or sums, with weights) their factors and records per-scaler statistics.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from drirl.components import DifficultyScaler, RunContext, ScalerBatch
from drirl.errors import ConfigError

logger = logging.getLogger(__name__)

IDENTITY_SCALER = "none"
COMBINE_MODES = ("product", "sum")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

Combine = Literal["product", "sum"]


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-4
) -> torch.Tensor:
    """Return the GRPO advantage (r - mean_g) / (std_g + eps) of each completion.

    Means and standard deviations (with Bessel's correction, as TRL computes them) are taken
    over the completions of the same group id and ignore NaN rewards. A group whose finite
    rewards are all equal, or that has fewer than two of them, gets advantage exactly 0.
    Such a group has no completion to prefer, and dividing a rounding error in its mean by
    eps would turn it into a spurious signal. A NaN reward gets advantage 0.
    """
    rewards = rewards.float()
    advantages = torch.zeros_like(rewards)
    for group in torch.unique(group_ids):
        members = group_ids == group
        values = rewards[members]
        finite = values[~torch.isnan(values)]
        if finite.numel() < 2 or bool((finite == finite[0]).all()):
            continue
        centred = values - finite.mean()
        scaled = centred / (finite.std(unbiased=True) + eps)
        advantages[members] = torch.nan_to_num(scaled, nan=0.0)
    return advantages


def zero_spread_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Return a bool mask over completions: True where the whole group has one reward value.

    NaN rewards are ignored, and a group with fewer than two finite rewards counts as zero
    spread.
    """
    mask = torch.zeros(rewards.shape[0], dtype=torch.bool)
    for group in torch.unique(group_ids):
        members = group_ids == group
        finite = rewards[members][~torch.isnan(rewards[members])]
        if finite.numel() < 2 or bool((finite == finite[0]).all()):
            mask[members] = True
    return mask


def zero_spread_fraction(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Return the fraction of groups whose rewards have zero spread."""
    groups = torch.unique(group_ids)
    if groups.numel() == 0:
        return 0.0
    mask = zero_spread_groups(rewards, group_ids)
    flat = sum(bool(mask[group_ids == group].all()) for group in groups)
    return flat / groups.numel()


def scale_advantages(advantages: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Multiply normalised advantages by alpha, element by element.

    A zero advantage stays zero for any finite alpha. A non-finite or non-positive alpha
    raises ValueError, because it would flip or erase the learning signal silently.
    """
    if alpha.shape != advantages.shape:
        raise ValueError(
            f"alpha has shape {tuple(alpha.shape)} but the advantages have shape "
            f"{tuple(advantages.shape)}; a scaler must return one factor per completion"
        )
    if not bool(torch.isfinite(alpha).all()) or bool((alpha <= 0).any()):
        bad = alpha[~torch.isfinite(alpha) | (alpha <= 0)]
        raise ValueError(
            f"difficulty factors must be finite and positive, got {bad.tolist()[:5]}; "
            "check the scaler's inputs (rewards, completions) for NaN values"
        )
    return advantages * alpha.to(advantages.dtype)


def alpha_statistics(alpha: torch.Tensor, prefix: str = "alpha") -> dict[str, float]:
    """Return the mean, min and max of alpha under ``<prefix>/mean`` and so on."""
    if alpha.numel() == 0:
        return {}
    alpha = alpha.float()
    return {
        f"{prefix}/mean": alpha.mean().item(),
        f"{prefix}/min": alpha.min().item(),
        f"{prefix}/max": alpha.max().item(),
    }


def parse_scaler_expression(expr: str) -> list[str]:
    """Split a scaler expression such as ``"clip*reward_gap"`` into scaler names."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(
            "a scaler expression must be a non-empty string such as 'none', 'clip' or "
            "'clip*reward_gap'",
            field="scaler",
            value=expr,
        )
    if "+" in expr:
        raise ConfigError(
            "scaler expressions combine by product only ('clip*reward_gap'); for a weighted "
            "sum list the names and set `scaler_combine: sum` with `scaler_weights`",
            field="scaler",
            value=expr,
        )
    names = [part.strip() for part in expr.split("*")]
    for name in names:
        if not _NAME.match(name):
            raise ConfigError(
                "invalid scaler name in expression; names are joined by '*', as in "
                "'clip*reward_gap'",
                field="scaler",
                value=expr,
            )
    return names


class CombinedScaler(DifficultyScaler):
    """Several difficulty scalers combined by product or by a weighted sum."""

    name = "combined"

    def __init__(
        self,
        scalers: Sequence[DifficultyScaler],
        combine: Combine = "product",
        weights: Sequence[float] | None = None,
        ctx: RunContext | None = None,
    ) -> None:
        super().__init__(None, ctx)
        if not scalers:
            raise ValueError("a combined scaler needs at least one scaler")
        if combine not in COMBINE_MODES:
            raise ValueError(
                f"combine is {combine!r}; allowed: {', '.join(COMBINE_MODES)}"
            )
        if weights is not None and len(weights) != len(scalers):
            raise ValueError(
                f"weights has {len(weights)} values for {len(scalers)} scalers; give one "
                "weight per scaler"
            )
        if weights is not None and combine == "product":
            raise ValueError("weights apply only with combine='sum'")
        if weights is not None and not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(
                f"weights must be finite and positive, got {list(weights)}"
            )
        self.scalers = list(scalers)
        self.combine = combine
        if combine == "sum" and weights is None:
            weights = [1.0 / len(scalers)] * len(scalers)
        self.weights = list(weights) if weights is not None else None
        self._statistics: dict[str, float] = {}

    @property
    def names(self) -> list[str]:
        """The names of the combined scalers, in order."""
        return [scaler.name for scaler in self.scalers]

    @property
    def is_identity(self) -> bool:
        """True when every combined scaler is the ``none`` scaler, so alpha is always 1."""
        return all(scaler.name == IDENTITY_SCALER for scaler in self.scalers)

    def factors(self, batch: ScalerBatch) -> torch.Tensor:
        """Return the product (or weighted sum) of every scaler's factors."""
        statistics: dict[str, float] = {}
        combined: torch.Tensor | None = None
        for index, scaler in enumerate(self.scalers):
            alpha = scaler.factors(batch).float()
            if alpha.shape != (len(batch.completions),):
                raise ValueError(
                    f"scaler {scaler.name!r} returned shape {tuple(alpha.shape)}; expected "
                    f"({len(batch.completions)},), one factor per completion"
                )
            statistics.update(alpha_statistics(alpha, f"alpha/{scaler.name}"))
            for key, value in scaler.statistics().items():
                statistics[f"scaler/{scaler.name}/{key}"] = value
            if self.weights is not None:
                alpha = alpha * self.weights[index]
            if combined is None:
                combined = alpha
            elif self.combine == "product":
                combined = combined * alpha
            else:
                combined = combined + alpha
        assert combined is not None
        statistics.update(alpha_statistics(combined))
        self._statistics = statistics
        return combined

    def statistics(self) -> dict[str, float]:
        """Return alpha mean/min/max overall and per scaler, plus each scaler's own values."""
        return dict(self._statistics)


def is_identity_scaler(scaler: DifficultyScaler | None) -> bool:
    """Return True when ``scaler`` is absent or always returns 1 (the ``none`` scaler)."""
    if scaler is None:
        return True
    if isinstance(scaler, CombinedScaler):
        return scaler.is_identity
    return scaler.name == IDENTITY_SCALER


def _build_settings(cls: type, name: str, values: Mapping[str, Any]) -> Any:
    allowed = cls.settings_fields()
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} for scaler {name!r}",
            field=f"scaler_settings.{name}",
            allowed=allowed or ["(none)"],
        )
    return cls.Settings(**values)


def build_scaler(
    names: Sequence[str],
    settings_by_name: Mapping[str, Mapping[str, Any]] | None,
    plugins: Any,
    ctx: RunContext | None = None,
    combine: Combine = "product",
    weights: Sequence[float] | None = None,
) -> CombinedScaler:
    """Instantiate the named scalers from the plugin registry and combine them.

    An unknown name raises ``UnknownComponentError`` listing the registered scalers.
    """
    settings_by_name = settings_by_name or {}
    scalers = []
    for name in names:
        cls = plugins.get("difficulty_scaler", name)
        values = settings_by_name.get(name, {})
        if isinstance(values, cls.Settings):
            settings = values
        else:
            settings = _build_settings(cls, name, values)
        scalers.append(cls(settings, ctx))
    return CombinedScaler(scalers, combine=combine, weights=weights, ctx=ctx)
