"""Reward heads per prompt kind: harmful prompts and benign look-alikes scored apart.

A reward model that scores both kinds of prompt with one head has to learn that a refusal
is right after a harmful prompt and wrong after its benign look-alike, from the prompt
alone. With ``kind_heads`` each category gets a second head (or model) for benign prompts,
named ``<category>:benign``: the harmful head learns that refusing wins, the benign head that
answering wins, and the prompt's kind picks the head.

Train prompts and eval prompts carry their kind, so the optimizers and judges pass it. A
prompt given without a kind goes to the nearer of two centroids of the text encoder's
embeddings, one of the harmful train prompts and one of the benign ones (``KIND_ROUTER_FILE``
in the reward folder).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from drirl.components import Record, RewardScorer
from drirl.errors import DrirlError
from drirl.pairs import PreferencePair
from drirl.reward_model import route_missing

KINDS = ("benign", "harmful")
BENIGN_SUFFIX = ":benign"
KIND_ROUTER_FILE = "kind_router.safetensors"


def head_category(category: str, kind: str) -> str:
    """Return the head name of ``category`` for prompts of ``kind``."""
    if kind not in KINDS:
        raise DrirlError(
            f"invalid prompt kind {kind!r} for category {category!r}; expected one of "
            f"{', '.join(KINDS)}"
        )
    return category + BENIGN_SUFFIX if kind == "benign" else category


def is_benign_head(name: str) -> bool:
    """Return whether ``name`` is the benign head of a category."""
    return name.endswith(BENIGN_SUFFIX)


def base_category(name: str) -> str:
    """Return the category a head name belongs to."""
    return name[: -len(BENIGN_SUFFIX)] if is_benign_head(name) else name


def fit_kind_router(train: Sequence[Record], encoder_spec: str | None = None) -> Any:
    """Fit the nearest-centroid router from prompts to ``benign`` or ``harmful``."""
    from drirl.routing import CentroidRouter

    kinds = {record.kind for record in train}
    missing = sorted(set(KINDS) - kinds)
    if missing:
        raise DrirlError(
            f"kind_heads needs train prompts of both kinds, but the train split has no "
            f"{', '.join(missing)} prompts; add them or set kind_heads: false"
        )
    as_kinds = [
        dataclasses.replace(record, category=record.kind)
        for record in train
        if record.kind in KINDS
    ]
    return CentroidRouter.fit(as_kinds, encoder_spec)


def qualify_pairs(
    pairs: Sequence[PreferencePair], train: Sequence[Record], router: Any
) -> list[PreferencePair]:
    """Return ``pairs`` with each benign prompt's category renamed to its benign head.

    A pair's kind is its record's kind; a pair whose record is not in ``train`` (a pairs
    file row) is routed by ``router``.
    """
    kind_of = {record.id: record.kind for record in train}
    unknown = [i for i, pair in enumerate(pairs) if pair.record_id not in kind_of]
    routed = dict(
        zip(unknown, router.route([pairs[i].prompt for i in unknown]) if unknown else [])
    )
    qualified = []
    for index, pair in enumerate(pairs):
        if pair.category is None:
            raise DrirlError(
                f"pair of record {pair.record_id!r} has no category, so its head cannot "
                "be named; give it a category"
            )
        kind = routed.get(index) or kind_of[pair.record_id]
        qualified.append(
            dataclasses.replace(pair, category=head_category(pair.category, kind))
        )
    return qualified


class KindHeadScorer:
    """A scorer that rates each row with the harmful or the benign head of its category.

    ``inner`` is the scorer of the trained heads, which it looks up by name
    (``<category>`` and ``<category>:benign``).
    """

    kind_heads = True

    def __init__(self, inner: RewardScorer, router_path: Path | None) -> None:
        self.inner = inner
        self.kind_router_path = router_path
        self._kind_router: Any = None

    @property
    def categories(self) -> list[str]:
        """The harm categories this scorer accepts."""
        return sorted({base_category(name) for name in self.inner.categories})

    @property
    def routes(self) -> Mapping[str, str]:
        """Each accepted category, mapped to the model that serves its harmful head."""
        inner_routes = getattr(self.inner, "routes", None)
        if inner_routes is None:
            return {category: category for category in self.categories}
        return {c: key for c, key in inner_routes.items() if not is_benign_head(c)}

    def kinds_of(self, prompts: Sequence[str]) -> list[str]:
        """Return the routed kind of each prompt."""
        if self._kind_router is None:
            from drirl.routing import CentroidRouter

            if self.kind_router_path is None:
                raise DrirlError(
                    f"missing prompt kind: {len(prompts)} row(s) have no kind, and the "
                    "reward models, which score benign and harmful prompts with separate "
                    "heads, have no kind router file to find it; pass kinds ('harmful' or "
                    "'benign'), or retrain the reward models to write the router"
                )
            self._kind_router = CentroidRouter.load(self.kind_router_path)
        return self._kind_router.route(list(prompts))

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        categories: Sequence[str | None],
        kinds: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """Return one float32 reward per row, from the head of its category and kind.

        A kind of None (or ``kinds`` left out) is routed by the kind router.
        """
        if kinds is None:
            kinds = [None] * len(prompts)
        if not len(prompts) == len(kinds) == len(categories):
            raise ValueError(
                f"prompts, kinds and categories differ in length: {len(prompts)}, "
                f"{len(kinds)}, {len(categories)}"
            )
        missing = [i for i, kind in enumerate(kinds) if not kind]
        filled = list(kinds)
        if missing:
            for index, kind in zip(missing, self.kinds_of([prompts[i] for i in missing])):
                filled[index] = kind
        # A category left empty is routed by the inner scorer's category router first.
        categories = route_missing(self.inner, prompts, categories)
        heads = [head_category(c, k) for c, k in zip(categories, filled)]
        return self.inner.score(prompts, responses, heads)


def score_with_kinds(
    scorer: RewardScorer,
    prompts: Sequence[str],
    responses: Sequence[str],
    categories: Sequence[str | None],
    kinds: Sequence[str | None] | None,
) -> torch.Tensor:
    """Score rows, passing their kinds only to a scorer that has heads per kind."""
    if kinds is not None and getattr(scorer, "kind_heads", False):
        return scorer.score(prompts, responses, categories, kinds=kinds)
    return scorer.score(prompts, responses, categories)
