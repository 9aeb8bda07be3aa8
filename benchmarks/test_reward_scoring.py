"""Reward scoring of the seven harm categories: one multihead model against seven separate ones.

Workload: 8 (prompt, response) pairs from the package data, each scored under all seven
categories, so 56 rows per call. A ``separate`` scorer runs each category's own model on its
8 rows (56 backbone sequences). The ``multihead`` scorer runs the shared backbone once per
distinct pair (8 sequences) and reads all seven heads from the same hidden state. Both are
the embedded SmolLM2-135M-Instruct backbone with untrained seeded heads, which cost the
same to run as trained ones.

Memory per variant, in ``extra_info``:

- ``model_bytes``: bytes of the parameters and buffers the scorer holds;
- ``peak_rss_delta_bytes``: peak resident memory of a child process that loads the scorer
  and scores the workload once, minus its resident memory after the imports. A child
  process is used so that one variant's allocations do not hide the other's peak.

Targets: multihead throughput at least 5x that of the seven separate models, with at most
a fifth of their memory. ``test_multihead_against_separate`` records both ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, set_seed

from drirl.dataset import load_records, select
from drirl.embedded import embedded_policy_path
from drirl.multihead_reward import (
    MultiHeadRewardModel,
    MultiHeadScorer,
    multihead_tokenizer,
)
from drirl.plugins.harm_categories.builtin import CATEGORIES, DATA
from drirl.reward_model import RewardModelScorer

PAIRS = 8
MAX_LENGTH = 128
ROUNDS = 3
RESULTS: dict[str, dict[str, float]] = {}

CHILD = """
import json, resource, sys
import torch
from drirl.embedded import embedded_policy_path
sys.path.insert(0, {bench_dir!r})
import test_reward_scoring as bench

def rss_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

prompts, responses, categories = bench.workload()
before = rss_bytes()
scorer = bench.build_scorer({variant!r}, embedded_policy_path())
scorer.score(prompts, responses, categories)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"peak_rss_delta_bytes": peak - before}}))
"""


def workload() -> tuple[list[str], list[str], list[str]]:
    """Return the rows: every pair once per category, in category-major order."""
    records = []
    for name in CATEGORIES:
        records += select(load_records(DATA / f"{name}.jsonl"), kind="harmful")[:2]
    pairs = [(r.prompt, r.demonstration) for r in records[:PAIRS]]
    prompts, responses, categories = [], [], []
    for category in CATEGORIES:
        for prompt, response in pairs:
            prompts.append(prompt)
            responses.append(response)
            categories.append(category)
    return prompts, responses, categories


def build_scorer(variant: str, policy_path):
    """Build the ``multihead`` scorer or the ``separate`` one of seven models."""
    tokenizer = multihead_tokenizer(policy_path)
    categories = list(CATEGORIES)
    if variant == "multihead":
        model = MultiHeadRewardModel.from_policy(policy_path, categories, seed=0)
        return MultiHeadScorer(model, tokenizer, max_length=MAX_LENGTH)
    models = {}
    for index, category in enumerate(categories):
        set_seed(index)
        model = AutoModelForSequenceClassification.from_pretrained(
            policy_path, num_labels=1, dtype=torch.float32
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        models[category] = (model, tokenizer)
    return RewardModelScorer(models, {c: c for c in categories}, max_length=MAX_LENGTH)


def model_bytes(scorer) -> int:
    """Return the bytes of the distinct parameter and buffer storages the scorer holds."""
    modules = (
        [scorer.model]
        if isinstance(scorer, MultiHeadScorer)
        else [model for model, _ in scorer.models.values()]
    )
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def child_peak(variant: str) -> int:
    """Return the peak resident memory added by loading and running one variant."""
    from pathlib import Path

    script = CHILD.format(bench_dir=str(Path(__file__).parent), variant=variant)
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_rss_delta_bytes"]


@pytest.mark.parametrize("variant", ["multihead", "separate"])
def test_reward_scoring(benchmark, variant):
    prompts, responses, categories = workload()
    scorer = build_scorer(variant, embedded_policy_path())
    scorer.score(prompts[:1], responses[:1], categories[:1])
    scores = benchmark.pedantic(
        scorer.score,
        args=(prompts, responses, categories),
        rounds=ROUNDS,
        iterations=1,
    )
    held = model_bytes(scorer)
    del scorer
    peak = child_peak(variant)
    rows_per_s = len(prompts) / benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "rows": len(prompts),
            "rows_per_s": round(rows_per_s, 2),
            "model_bytes": held,
            "peak_rss_delta_bytes": peak,
        }
    )
    RESULTS[variant] = {"rows_per_s": rows_per_s, "model_bytes": held, "peak": peak}
    assert scores.shape == (len(prompts),)


def test_multihead_against_separate(benchmark):
    if set(RESULTS) != {"multihead", "separate"}:
        pytest.skip("run together with test_reward_scoring for both variants")
    multihead, separate = RESULTS["multihead"], RESULTS["separate"]
    ratios = {
        "throughput_ratio": multihead["rows_per_s"] / separate["rows_per_s"],
        "model_memory_ratio": multihead["model_bytes"] / separate["model_bytes"],
        "peak_rss_ratio": multihead["peak"] / separate["peak"],
    }
    benchmark.extra_info.update({k: round(v, 3) for k, v in ratios.items()})
    benchmark(lambda: None)
    assert ratios["model_memory_ratio"] < 1
