"""The ``lm_eval`` benchmark: any task of lm-eval's own task collection (gsm8k, mmlu, ...).

An experiment can list a task by its lm-eval name, which the loader turns into this
benchmark with ``task`` set, or as ``{lm_eval: {task: gsm8k, num_fewshot: 5}}``. The task runs
unchanged through lm-eval's default TaskManager. Its data set comes from the Hugging Face
Hub, so offline it must already be in the Hugging Face datasets cache. Every numeric metric
of lm-eval's results is reported as ``<task>/<metric>`` (with ``_<filter>`` appended for a
filter other than ``none``). A bootstrap interval is added where lm-eval logged a per-sample
number for that metric.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from drirl import hookimpl
from drirl.components import Benchmark, Judge, Metric, Record, RunContext
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.lm_eval_runner import (
    backend_problem,
    backend_args_problem,
    default_task_manager,
    load_lm,
    run_loaded_tasks,
    write_jsonl,
)
from drirl.stats import rate_metric

logger = logging.getLogger(__name__)


class TaskDataUnavailableError(DrirlError):
    """An lm-eval task whose data set could not be loaded."""


@dataclass(frozen=True)
class LmEvalTaskSettings:
    """Settings of the lm_eval benchmark."""

    task: str = field(default="", metadata={"help": "lm-eval task, group or tag name"})
    num_fewshot: int | None = field(
        default=None,
        metadata={
            "help": "few-shot examples per question (the task's default if null)"
        },
    )
    limit: int | None = field(
        default=None,
        metadata={"help": "evaluate only the first N documents of each task"},
    )
    batch_size: int = field(default=16, metadata={"help": "requests per model batch"})
    apply_chat_template: bool = field(
        default=False,
        metadata={"help": "wrap prompts in the model's chat template"},
    )
    backend: str = field(
        default="hf",
        metadata={
            "help": "lm-eval model type: 'hf' (transformers) or 'vllm' (needs vllm)"
        },
    )
    backend_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "further keyword arguments for lm-eval's model class, such as "
            "tensor_parallel_size or gpu_memory_utilization for vllm"
        },
    )

    def __post_init__(self) -> None:
        problem = backend_problem(self.backend) or backend_args_problem(
            self.backend_args
        )
        if problem is not None:
            raise ValueError(problem)
        if not isinstance(self.task, str) or not self.task.strip():
            raise ValueError(
                f"task must name an lm-eval task such as 'gsm8k', got {self.task!r}"
            )
        for name in ("num_fewshot", "limit"):
            value = getattr(self, name)
            minimum = 0 if name == "num_fewshot" else 1
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < minimum
            ):
                raise ValueError(
                    f"{name} must be an integer of at least {minimum} or null, got {value!r}"
                )
        value = self.batch_size
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"batch_size must be a positive integer, got {value!r}")


def load_task(task: str) -> Any:
    """Load ``task`` with lm-eval's default TaskManager, which also loads its data set.

    A data set that cannot be reached raises TaskDataUnavailableError whose message names the
    task and explains how to provide the data.
    """
    from datasets.exceptions import DatasetNotFoundError

    try:
        return default_task_manager().load([task])
    except KeyError:
        raise DrirlError(
            f"{task!r} is not an lm-eval task, group or tag name. "
            "Run `lm-eval ls tasks` to list them"
        ) from None
    except (ConnectionError, DatasetNotFoundError, FileNotFoundError) as exc:
        raise TaskDataUnavailableError(
            f"the data of lm-eval task {task!r} could not be loaded offline ({exc}). "
            "Download it once with network access, for example by running the same "
            "command with HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0, so it is stored in the "
            "Hugging Face datasets cache (HF_HOME). Later offline runs read it from there. "
            "Alternatively, evaluate your own copy of the prompts as a user benchmark file"
        ) from exc


def _metric_name(task: str, key: str) -> str | None:
    """Return the drirl name of an lm-eval result key ``metric,filter``, or None to skip."""
    if "," not in key:
        return None
    metric, filter_name = key.split(",", 1)
    if metric.endswith("_stderr"):
        return None
    suffix = "" if filter_name == "none" else f"_{filter_name}"
    return f"{task}/{metric}{suffix}"


def sample_count(results: dict[str, Any], name: str) -> int:
    """Return the documents evaluated for a task, or for a group the sum over its tasks."""
    counts = results.get("n-samples", {})
    if name in counts:
        return int(counts[name].get("effective", 0))
    children = results.get("group_subtasks", {}).get(name, [])
    if children:
        return sum(sample_count(results, child) for child in children)
    return len(results.get("samples", {}).get(name, []))


def collect_metrics(results: dict[str, Any], seed: int) -> dict[str, Metric]:
    """Turn lm-eval's results into Metrics with sample counts and bootstrap intervals."""
    metrics: dict[str, Metric] = {}
    samples = results.get("samples", {})
    for task, values in results.get("results", {}).items():
        for key, value in values.items():
            name = _metric_name(task, key)
            if name is None or isinstance(value, bool):
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            metric = key.split(",", 1)[0]
            per_sample = [
                sample[metric]
                for sample in samples.get(task, [])
                if isinstance(sample.get(metric), (int, float))
            ]
            if per_sample and len(per_sample) == len(samples.get(task, [])):
                bootstrap = rate_metric(per_sample, seed=seed)
                metrics[name] = Metric(
                    float(value), bootstrap.n, bootstrap.ci_low, bootstrap.ci_high
                )
            else:
                metrics[name] = Metric(float(value), sample_count(results, task))
    return metrics


class LmEvalTask(Benchmark):
    """Runs one lm-eval task unchanged and reports its metrics."""

    name: ClassVar[str] = "lm_eval"
    Settings: ClassVar[type] = LmEvalTaskSettings

    def run(
        self,
        model_path: Path,
        records: Sequence[Record],
        judge: Judge,
        out_dir: Path,
        ctx: RunContext,
    ) -> dict[str, Metric]:
        """Run the task, write lm-eval's logged samples to ``samples.jsonl``, return metrics.

        ``records`` and ``judge`` are not used: the task brings its own data and metrics.
        """
        settings = self.settings
        # The data set loads before the model, so missing data fails fast.
        loaded = load_task(settings.task)
        if settings.num_fewshot is not None:
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=settings.num_fewshot)
        lm = load_lm(
            Path(model_path),
            batch_size=settings.batch_size,
            device=ctx.device,
            trust_remote_code=ctx.trust_remote_code,
            backend=settings.backend,
            backend_args=settings.backend_args,
        )
        logger.info(
            "%s: running lm-eval task %s on %s", self.name, settings.task, model_path
        )
        results = run_loaded_tasks(
            lm,
            loaded,
            apply_chat_template=settings.apply_chat_template,
            limit=settings.limit,
        )
        rows = [
            {"task": task, **sample}
            for task, task_samples in results.get("samples", {}).items()
            for sample in task_samples
        ]
        write_jsonl(rows, Path(out_dir) / "samples.jsonl")
        metrics = collect_metrics(results, ctx.seed)
        if not metrics:
            raise DrirlError(
                f"lm-eval task {settings.task!r} reported no numeric metrics"
            )
        return metrics


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the lm_eval benchmark."""
    register(LmEvalTask)
