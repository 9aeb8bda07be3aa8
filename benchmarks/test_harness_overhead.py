"""The evaluation harness against a plain batched generate loop on the same prompts.

Both sides start from the model folder on disk, so both load the embedded
SmolLM2-135M-Instruct once per round. The harness is `drirl eval --benchmark
harmful_refusal --limit 2`: 14 harmful eval prompts through lm-eval, then the
refusal_phrases judge, the bootstrap intervals and the result files. The reference is
drirl.generation.generate_responses, a transformers generate loop with the chat template,
on the same prompts with the same batch size and token budget.

Target: the harness at most 1.10x the plain loop.
"""

from __future__ import annotations

import pytest

from drirl.embedded import embedded_policy_path
from drirl.eval_command import EvalRequest, eval_records, run_eval
from drirl.generation import generate_responses
from drirl.judged_benchmark import limit_per_category
from drirl.lm_eval_runner import clear_lm_cache
from drirl.plugin_manager import load_plugins

LIMIT = 2
MAX_NEW_TOKENS = 32
BATCH_SIZE = 16
ROUNDS = 3
medians: dict[str, float] = {}


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(use_entry_points=False)


@pytest.fixture(scope="module")
def prompts(plugins):
    harmful = [r for r in eval_records(plugins) if r.kind == "harmful"]
    return [r.prompt for r in limit_per_category(harmful, LIMIT)]


def test_plain_generate_loop(benchmark, prompts):
    model = embedded_policy_path()

    def generate() -> list[str]:
        return generate_responses(
            model,
            prompts,
            max_new_tokens=MAX_NEW_TOKENS,
            batch_size=BATCH_SIZE,
            show_progress=False,
        )

    responses = benchmark.pedantic(generate, rounds=ROUNDS, iterations=1)
    medians["plain"] = benchmark.stats.stats.median
    benchmark.extra_info["prompts"] = len(prompts)
    assert len(responses) == len(prompts)


def test_drirl_eval(benchmark, prompts, plugins, tmp_path):
    request = EvalRequest(
        model="embedded",
        benchmarks=["harmful_refusal"],
        out_dir=tmp_path,
        max_new_tokens=MAX_NEW_TOKENS,
        batch_size=BATCH_SIZE,
        limit=LIMIT,
    )

    def evaluate() -> dict:
        # Drop lm-eval's cached model so each round loads it, as the plain loop does.
        clear_lm_cache()
        return run_eval(request, plugins)

    results = benchmark.pedantic(evaluate, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["prompts"] = len(prompts)
    if "plain" in medians:
        ratio = benchmark.stats.stats.median / medians["plain"]
        benchmark.extra_info["ratio_to_plain"] = round(ratio, 3)
    assert results["harmful_refusal"]["harmful_refusal/all"].n == len(prompts)
