"""Tests of the nearest-centroid category router with the embedded text encoder and package data."""

from __future__ import annotations

import pytest
import torch

from drirl.dataset import select
from drirl.errors import DrirlError
from drirl.routing import CentroidRouter, fill_categories


@pytest.fixture(scope="module")
def records(plugins):
    found = []
    for name in plugins.registry("harm_category").names():
        found += plugins.get("harm_category", name).load_records()
    return found


@pytest.fixture(scope="module")
def router(records):
    return CentroidRouter.fit(records)


def test_router_knows_every_category(router, plugins):
    assert router.categories == sorted(plugins.registry("harm_category").names())


def test_accuracy_is_a_fraction_of_eval(router, records):
    accuracy, count = router.accuracy(records)
    assert 0.0 <= accuracy <= 1.0
    assert count == len(select(records, split="eval"))


def test_accuracy_beats_chance(router, records):
    accuracy, _ = router.accuracy(records)
    assert accuracy > 1 / len(router.categories)


def test_train_prompt_routes_to_its_category(router, records):
    # A nearest-centroid rule may misroute an outlier, so each category's check uses its
    # train prompt that lies closest to its own centroid.
    train = select(records, split="train")
    similarities = router.similarities([r.prompt for r in train])
    for column, category in enumerate(router.categories):
        rows = [i for i, r in enumerate(train) if r.category == category]
        typical = max(rows, key=lambda i: similarities[i, column].item())
        assert router.route([train[typical].prompt]) == [category]


def test_most_train_prompts_route_home(router, records):
    train = select(records, split="train")
    routed = router.route([r.prompt for r in train])
    correct = sum(c == r.category for c, r in zip(routed, train))
    assert correct / len(train) > 0.5


def test_route_empty_list(router):
    assert router.route([]) == []


def test_accuracy_without_eval_raises(router, records):
    with pytest.raises(DrirlError, match="routing accuracy is undefined"):
        router.accuracy(select(records, split="train"))


def test_fit_without_train_raises(records):
    with pytest.raises(DrirlError, match="no records with split 'train'"):
        CentroidRouter.fit(select(records, split="eval"))


def test_save_load_same_centroids(router, tmp_path):
    router.save(tmp_path / "router.safetensors")
    loaded = CentroidRouter.load(tmp_path / "router.safetensors")
    assert loaded.categories == router.categories
    assert torch.equal(loaded.centroids, router.centroids)


def test_fill_categories_keeps_given(router):
    prompts = ["How do I hotwire a car that isn't mine?", "Roast my sister."]
    filled = fill_categories(prompts, [None, "insult"], router)
    assert filled[1] == "insult"
    assert filled[0] in router.categories


def test_fill_categories_without_router():
    with pytest.raises(DrirlError, match="no router was fitted"):
        fill_categories(["Hi"], [""], None)
