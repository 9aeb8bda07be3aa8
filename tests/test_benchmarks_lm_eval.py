"""lm-eval's own tasks listed by name. These build lm-eval's task index (about 10 s)."""

import os

import pytest

from drirl.benchmark_entries import resolve_benchmarks
from drirl.components import Metric, RunContext
from drirl.errors import ConfigError
from drirl.plugins.benchmarks.lm_eval_task import (
    LmEvalTask,
    LmEvalTaskSettings,
    TaskDataUnavailableError,
    collect_metrics,
)


def test_task_name_resolves_to_lm_eval(plugins):
    entries = resolve_benchmarks(
        ["harmful_refusal", {"gsm8k": {"num_fewshot": 2, "limit": 3}}],
        {"max_new_tokens": 8},
        plugins,
        file=None,
    )
    assert [e.label for e in entries] == ["harmful_refusal", "gsm8k"]
    assert entries[1].component == "lm_eval"
    assert entries[1].settings == LmEvalTaskSettings(
        task="gsm8k", num_fewshot=2, limit=3
    )


def test_unknown_name_suggests_benchmark(plugins):
    with pytest.raises(ConfigError) as info:
        resolve_benchmarks(["harmful_refusl"], {}, plugins, file=None)
    message = str(info.value)
    assert "neither a drirl benchmark nor an lm-eval task" in message
    assert "Did you mean 'harmful_refusal'?" in message


def test_offline_task_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # NOTE: this expects gsm8k to be absent from the local Hugging Face cache. Where it was
    # downloaded before, the load succeeds and the test fails on the missing model.
    benchmark = LmEvalTask(LmEvalTaskSettings(task="gsm8k", limit=2))
    with pytest.raises(TaskDataUnavailableError) as info:
        # The data loads before the model, so no model folder is needed to reach the error.
        benchmark.run(tmp_path / "no-model", [], None, tmp_path, RunContext())
    message = str(info.value)
    assert "lm-eval task 'gsm8k'" in message
    assert "could not be loaded offline" in message
    assert "HF_DATASETS_OFFLINE=0" in message
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"


def test_settings_need_task():
    with pytest.raises(ValueError, match="task must name an lm-eval task"):
        LmEvalTaskSettings()


def test_collect_metrics_bootstrap():
    results = {
        "results": {
            "toy": {
                "alias": "toy",
                "acc,none": 0.5,
                "acc_stderr,none": 0.2,
                "exact_match,strict": 0.25,
            }
        },
        "samples": {
            "toy": [
                {"acc": 1.0, "exact_match": 1.0},
                {"acc": 0.0, "exact_match": 0.0},
                {"acc": 1.0, "exact_match": 0.0},
                {"acc": 0.0, "exact_match": 0.0},
            ]
        },
        "n-samples": {"toy": {"original": 10, "effective": 4}},
    }
    metrics = collect_metrics(results, seed=0)
    assert set(metrics) == {"toy/acc", "toy/exact_match_strict"}
    assert metrics["toy/acc"].value == 0.5
    assert metrics["toy/acc"].n == 4
    assert metrics["toy/acc"].ci_low <= 0.5 <= metrics["toy/acc"].ci_high
    assert metrics["toy/exact_match_strict"] == Metric(0.25, 4, 0.0, 0.75)


def test_group_count_sums_tasks():
    results = {
        "results": {"grp": {"acc,none": 0.4}, "a": {"acc,none": 0.5}},
        "group_subtasks": {"grp": ["a", "b"]},
        "n-samples": {"a": {"effective": 3}, "b": {"effective": 2}},
        "samples": {},
    }
    metrics = collect_metrics(results, seed=0)
    assert metrics["grp/acc"] == Metric(0.4, 5)
    assert metrics["a/acc"] == Metric(0.5, 3)


@pytest.mark.slow
def test_collect_metrics_real_results(tmp_path, embedded_policy):
    from lm_eval.tasks import TaskManager

    from drirl.lm_eval_runner import build_choice_task_config, load_lm, run_loaded_tasks
    from drirl.plugins.benchmarks.mc_qa import questions_path

    config = build_choice_task_config(
        "toy_mc", questions_path(), cache_dir=tmp_path / "cache"
    )
    loaded = TaskManager(include_defaults=False).load([config])
    lm = load_lm(embedded_policy, batch_size=8)
    results = run_loaded_tasks(lm, loaded, apply_chat_template=False, limit=4)
    metrics = collect_metrics(results, seed=0)
    per_sample = [sample["acc"] for sample in results["samples"]["toy_mc"]]
    assert set(metrics) == {"toy_mc/acc"}
    assert metrics["toy_mc/acc"].n == 4
    assert metrics["toy_mc/acc"].value == pytest.approx(sum(per_sample) / 4)
    assert metrics["toy_mc/acc"].ci_low is not None
