"""Local tasks run through lm-eval (version 0.4.13): chat generation and multiple choice.

Generation: the prompts are written to a JSONL file and run as a ``generate_until`` task
built from a config dict, loaded with lm-eval's ``json`` dataset loader. Generation is
greedy, uses the model's chat template and stops at the end-of-sequence token or after
``max_new_tokens``. The task's own metric is lm-eval's ``bypass`` placeholder, because drirl
scores the logged responses with a judge afterwards.

Multiple choice: each question is scored by the log-likelihood of each choice as a
continuation of the question, without the chat template, because the template changes which
choice scores highest (see ``score_multiple_choice``).

Nothing is downloaded: the data path is absolute (lm-eval resolves relative paths against
the working directory), the model is a local folder, and the datasets cache lives in the
output folder.

The model runs on one of lm-eval's backends: ``hf`` (transformers, fp32, the default) or
``vllm`` (lm-eval's vLLM model type, which needs the vllm package and a GPU).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drirl.components import Record
from drirl.distributed import is_distributed
from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

# The most recently loaded lm-eval model, reused while the same weights are evaluated.
_cached_lm: tuple[tuple[Any, ...], Any] | None = None

# lm-eval model types that drirl can run: transformers and vLLM.
BACKENDS = ("hf", "vllm")


def backend_problem(backend: Any, setting: str = "backend") -> str | None:
    """Return why ``backend`` cannot run here, or None when it can.

    The message starts with ``setting``, the name of the setting that contains the value.
    """
    if backend not in BACKENDS:
        return f"{setting} is {backend!r}; allowed: {', '.join(map(repr, BACKENDS))}"
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        return (
            f"{setting} is 'vllm', but the vllm package is not installed. Install vllm "
            "(it needs a GPU) in the same environment, or set "
            f"{setting} to 'hf' to evaluate with transformers"
        )
    return None


def backend_args_problem(
    backend_args: Any, setting: str = "backend_args"
) -> str | None:
    """Return why ``backend_args`` is not a mapping of keyword arguments, or None."""
    if not isinstance(backend_args, dict) or not all(
        isinstance(key, str) for key in backend_args
    ):
        return (
            f"{setting} is {backend_args!r}; allowed: a mapping of keyword arguments "
            "for lm-eval's model class (for vllm: tensor_parallel_size, "
            "gpu_memory_utilization, max_model_len, ...)"
        )
    return None


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """Write one JSON object per row, replacing ``path`` only once the file is complete.

    numpy numbers and arrays become Python values and any other value that JSON cannot
    encode is written with ``str``, so lm-eval's logged samples can be stored as they are.
    Returns the absolute path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=_to_json) + "\n")
    tmp.replace(path)
    return path.resolve()


def _to_json(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_prompts(records: Sequence[Record], path: Path) -> Path:
    """Write one JSON object per record (id, category, kind, prompt) and return the path."""
    rows = (
        {
            "id": record.id,
            "category": record.category,
            "kind": record.kind,
            "prompt": record.prompt,
        }
        for record in records
    )
    return write_jsonl(rows, path)


def build_task_config(
    task_name: str, data_file: Path, *, max_new_tokens: int, cache_dir: Path
) -> dict[str, Any]:
    """Return an lm-eval ``generate_until`` task config that reads ``data_file``."""
    if not data_file.is_absolute():
        raise ValueError(f"data_file must be an absolute path, got {data_file}")
    return {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(data_file)},
            "cache_dir": str(cache_dir),
        },
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "",
        "num_fewshot": 0,
        # An empty `until` leaves only the end-of-sequence token, which HFLM always adds.
        "generation_kwargs": {
            "until": [],
            "max_gen_toks": max_new_tokens,
            "do_sample": False,
        },
        "metric_list": [
            {"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}
        ],
    }


def weights_signature(model_path: Path) -> tuple[tuple[str, int, int], ...]:
    """Return (name, size, mtime) of the folder's files, so rewritten weights reload."""
    return tuple(
        (item.name, item.stat().st_size, item.stat().st_mtime_ns)
        for item in sorted(model_path.iterdir())
        if item.is_file()
    )


def load_lm(
    model_path: Path,
    *,
    batch_size: int,
    device: str = "cpu",
    trust_remote_code: bool = False,
    backend: str = "hf",
    backend_args: dict[str, Any] | None = None,
) -> Any:
    """Return an lm-eval model for a local model folder, reusing the last one when unchanged.

    ``backend`` picks lm-eval's ``hf`` model (HFLM) or its ``vllm`` model, and
    ``backend_args`` passes further keyword arguments to that model class. Only one model
    is kept, so evaluating many models in turn does not hold them all in memory.
    """
    global _cached_lm
    problem = backend_problem(backend) or backend_args_problem(backend_args or {})
    if problem is not None:
        raise DrirlError(problem)
    backend_args = dict(backend_args or {})

    model_path = Path(model_path).resolve()
    if not (model_path / "config.json").is_file():
        raise DrirlError(
            f"model folder {model_path} has no config.json. Pass a Hugging Face model folder"
        )
    key = (
        str(model_path),
        device,
        batch_size,
        trust_remote_code,
        backend,
        repr(sorted(backend_args.items())),
        weights_signature(model_path),
    )
    if _cached_lm is not None and _cached_lm[0] == key:
        return _cached_lm[1]

    _cached_lm = None
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        logger.info("loading %s for lm-eval with vLLM", model_path)
        lm = VLLM(
            pretrained=str(model_path),
            batch_size=batch_size,
            trust_remote_code=trust_remote_code,
            **backend_args,
        )
    else:
        lm = _load_hflm(
            model_path, batch_size, device, trust_remote_code, backend_args
        )
    _cached_lm = (key, lm)
    return lm


def _load_hflm(
    model_path: Path,
    batch_size: int,
    device: str,
    trust_remote_code: bool,
    backend_args: dict[str, Any],
) -> Any:
    from lm_eval.models.huggingface import HFLM

    logger.info("loading %s for lm-eval on %s", model_path, device)
    if not is_distributed():
        return HFLM(
            pretrained=str(model_path),
            device=device,
            dtype="float32",
            batch_size=batch_size,
            trust_remote_code=trust_remote_code,
            **backend_args,
        )
    # Given a folder name in a run with several processes, HFLM joins the process group
    # and splits the requests across the processes. drirl evaluates on the main process
    # alone, so it passes a loaded model, which HFLM runs in this process only.
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    model.to(device).eval()
    return HFLM(
        pretrained=model,
        tokenizer=str(model_path),
        batch_size=batch_size,
        trust_remote_code=trust_remote_code,
        **backend_args,
    )


def clear_lm_cache() -> None:
    """Drop the cached lm-eval model."""
    global _cached_lm
    _cached_lm = None


def generate_with_lm_eval(
    model_path: Path,
    records: Sequence[Record],
    out_dir: Path,
    *,
    task_name: str,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    device: str = "cpu",
    trust_remote_code: bool = False,
    backend: str = "hf",
    backend_args: dict[str, Any] | None = None,
) -> list[tuple[Record, str]]:
    """Generate one greedy chat response per record through lm-eval, in record order.

    The prompts file and the datasets cache are written under ``out_dir``. Responses are
    stripped of surrounding whitespace, as ``drirl.generation.generate_responses`` does.
    lm-eval cuts a prompt longer than the model's context minus ``max_new_tokens`` from
    the left, and ``warn_long_prompts`` names those prompts first.
    """
    from drirl.generation import warn_long_prompts
    from lm_eval.tasks import TaskManager

    if not records:
        raise ValueError(f"task {task_name!r} has no records to evaluate")
    ids = [record.id for record in records]
    duplicates = sorted({record_id for record_id in ids if ids.count(record_id) > 1})
    if duplicates:
        raise ValueError(
            f"task {task_name!r} has duplicate record ids {duplicates}. Record ids must be unique"
        )

    out_dir = Path(out_dir).resolve()
    data_file = write_prompts(records, out_dir / f"{task_name}_prompts.jsonl")
    config = build_task_config(
        task_name,
        data_file,
        max_new_tokens=max_new_tokens,
        cache_dir=out_dir / "datasets_cache",
    )
    lm = load_lm(
        Path(model_path),
        batch_size=batch_size,
        device=device,
        trust_remote_code=trust_remote_code,
        backend=backend,
        backend_args=backend_args,
    )
    warn_long_prompts(
        lm.tokenizer,
        [record.prompt for record in records],
        max_context=lm.max_length,
        max_new_tokens=max_new_tokens,
        ids=ids,
    )
    loaded = TaskManager(include_defaults=False).load([config])
    results = run_loaded_tasks(lm, loaded, apply_chat_template=True)
    return _pair_responses(task_name, records, results["samples"][task_name])


def run_loaded_tasks(
    lm: Any,
    loaded: Any,
    *,
    apply_chat_template: bool,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate tasks loaded by a TaskManager and return lm-eval's results with samples."""
    from lm_eval.evaluator import evaluate

    # evaluate() rather than simple_evaluate(): the latter also reseeds the global random
    # generators and collects git and environment details, which drirl does not need.
    results = evaluate(
        lm=lm,
        task_dict=loaded,
        limit=limit,
        bootstrap_iters=0,
        log_samples=True,
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=False,
    )
    if results is None:
        names = ", ".join(sorted(loaded.get("tasks", {}))) or "(none)"
        raise DrirlError(f"lm-eval returned no results for tasks {names}")
    return results


def _pair_responses(
    task_name: str, records: Sequence[Record], samples: Sequence[dict[str, Any]]
) -> list[tuple[Record, str]]:
    """Match lm-eval's logged samples back to the records by doc id and record id."""
    if len(samples) != len(records):
        raise DrirlError(
            f"lm-eval logged {len(samples)} samples for task {task_name!r} but "
            f"{len(records)} prompts were written"
        )
    by_doc = {int(sample["doc_id"]): sample for sample in samples}
    pairs: list[tuple[Record, str]] = []
    for doc_id, record in enumerate(records):
        sample = by_doc.get(doc_id)
        if sample is None or sample["doc"]["id"] != record.id:
            raise DrirlError(
                f"lm-eval sample for doc {doc_id} of task {task_name!r} does not match "
                f"record {record.id!r}"
            )
        response = sample["filtered_resps"][0]
        pairs.append((record, str(response).strip()))
    return pairs


@dataclass(frozen=True)
class ChoiceScore:
    """One multiple-choice question as lm-eval scored it.

    ``loglikelihoods`` contains the summed log-probability of each choice as a continuation of
    the question, in choice order. ``accuracy`` is lm-eval's ``acc``: 1.0 when the choice
    with the highest log-likelihood is the answer.
    """

    doc: dict[str, Any]
    loglikelihoods: list[float]
    accuracy: float


def build_choice_task_config(
    task_name: str, data_file: Path, *, cache_dir: Path
) -> dict[str, Any]:
    """Return an lm-eval ``multiple_choice`` task config that reads ``data_file``.

    Each row needs ``question``, ``choices`` (a list of strings) and ``answer`` (the index of
    the right choice). The context is ``Question: ...\\nAnswer:`` and each choice is scored
    with a leading space, the usual layout of lm-eval's own multiple-choice tasks.
    """
    if not data_file.is_absolute():
        raise ValueError(f"data_file must be an absolute path, got {data_file}")
    return {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(data_file)},
            "cache_dir": str(cache_dir),
        },
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        "num_fewshot": 0,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
        ],
    }


def score_multiple_choice(
    model_path: Path,
    data_file: Path,
    out_dir: Path,
    *,
    task_name: str,
    batch_size: int = 16,
    device: str = "cpu",
    limit: int | None = None,
    trust_remote_code: bool = False,
    backend: str = "hf",
    backend_args: dict[str, Any] | None = None,
) -> list[ChoiceScore]:
    """Score every question of ``data_file`` by log-likelihood, in file order.

    The chat template is off, because with it lm-eval wraps the question in a chat turn,
    which changes which choice scores highest.
    """
    from lm_eval.tasks import TaskManager

    out_dir = Path(out_dir).resolve()
    config = build_choice_task_config(
        task_name, Path(data_file).resolve(), cache_dir=out_dir / "datasets_cache"
    )
    lm = load_lm(
        Path(model_path),
        batch_size=batch_size,
        device=device,
        trust_remote_code=trust_remote_code,
        backend=backend,
        backend_args=backend_args,
    )
    loaded = TaskManager(include_defaults=False).load([config])
    results = run_loaded_tasks(lm, loaded, apply_chat_template=False, limit=limit)
    samples = sorted(results["samples"][task_name], key=lambda s: int(s["doc_id"]))
    scores = []
    for sample in samples:
        # filtered_resps contains one (log-likelihood, is_greedy) pair per choice.
        loglikelihoods = [float(pair[0]) for pair in sample["filtered_resps"]]
        scores.append(
            ChoiceScore(
                doc=dict(sample["doc"]),
                loglikelihoods=loglikelihoods,
                accuracy=float(sample["acc"]),
            )
        )
    return scores


@functools.lru_cache(maxsize=1)
def default_task_manager() -> Any:
    """Return lm-eval's TaskManager over its own task collection, built once per process.

    Building it scans lm-eval's task folder for every task config, which took 10 to 25 s
    on a shared 2-core machine.
    """
    from lm_eval.tasks import TaskManager

    return TaskManager()


def lm_eval_task_names() -> frozenset[str]:
    """Return every task, group and tag name in lm-eval's own task collection."""
    manager = default_task_manager()
    return frozenset(
        manager.all_tasks + manager.all_groups + manager.all_subtasks + manager.all_tags
    )
