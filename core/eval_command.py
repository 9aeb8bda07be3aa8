"""``drirl eval``: evaluate one model on benchmarks, with no training and no experiment file.

A benchmark argument is a drirl benchmark name (``harmful_refusal``, ``mc_qa``, ...), an
lm-eval task name (``gsm8k``), or the path of a CSV or JSONL file of prompts, which runs as
the ``user_file`` benchmark with the column and expectation options. Each benchmark writes
``metrics.json`` and ``samples.jsonl`` into its own folder under the output folder, and
``results.json`` collects every metric. The datasets cache that lm-eval benchmarks write
into their folder is removed when each benchmark ends.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drirl.errors import DrirlError

if TYPE_CHECKING:
    from drirl.components import Metric, Record
    from drirl.plugin_manager import Plugins

logger = logging.getLogger(__name__)

DEFAULT_JUDGE = "refusal_phrases"
USER_FILE_BENCHMARK = "user_file"
USER_FILE_SUFFIXES = (".csv", ".jsonl")
# The folder in which drirl.lm_eval_runner has the datasets library cache a benchmark's
# prompts file as Arrow tables. It is needed only while the benchmark runs.
DATASETS_CACHE = "datasets_cache"


@dataclass(frozen=True)
class EvalRequest:
    """The model, benchmarks and options of one ``drirl eval`` call."""

    model: str
    benchmarks: list[str]
    out_dir: Path
    prompt_column: str | None = None
    category_column: str | None = None
    expect: str | None = None
    judge: str = DEFAULT_JUDGE
    judge_settings: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int | None = None
    batch_size: int | None = None
    limit: int | None = None
    seed: int = 0
    cache_dir: Path | None = None
    trust_remote_code: bool = False


def looks_like_file(spec: str) -> bool:
    """Return whether a benchmark argument names a prompts file rather than a benchmark."""
    return Path(spec).suffix.lower() in USER_FILE_SUFFIXES or Path(spec).is_file()


def benchmark_entries(request: EvalRequest) -> list[Any]:
    """Turn the benchmark arguments into ``evaluation.benchmarks`` entries."""
    file_options = {
        "--prompt-column": request.prompt_column,
        "--category-column": request.category_column,
        "--expect": request.expect,
    }
    files = [spec for spec in request.benchmarks if looks_like_file(spec)]
    if not files:
        given_options = [
            option for option, value in file_options.items() if value is not None
        ]
        if given_options:
            raise DrirlError(
                f"{', '.join(given_options)} applies only to a benchmark file (CSV or JSONL), but "
                f"--benchmark names none: {', '.join(request.benchmarks)}"
            )
    entries: list[Any] = []
    for spec in request.benchmarks:
        if spec not in files:
            entries.append(spec)
            continue
        settings: dict[str, Any] = {"path": str(Path(spec).expanduser().resolve())}
        if request.prompt_column is not None:
            settings["prompt_column"] = request.prompt_column
        if request.category_column is not None:
            settings["category_column"] = request.category_column
        if request.expect is not None:
            settings["expect"] = request.expect
        entries.append({USER_FILE_BENCHMARK: settings})
    return entries


# The benchmark settings each command-line option sets. --limit sets the per-category limit
# of the generation benchmarks and the document limit of mc_qa and lm-eval tasks.
OPTION_SETTINGS: dict[str, tuple[str, ...]] = {
    "--max-new-tokens": ("max_new_tokens",),
    "--batch-size": ("batch_size",),
    "--limit": ("limit_per_category", "limit"),
}


def option_values(request: EvalRequest) -> dict[str, int]:
    """Return the benchmark options given on the command line, by option name."""
    values = {
        "--max-new-tokens": request.max_new_tokens,
        "--batch-size": request.batch_size,
        "--limit": request.limit,
    }
    return {option: value for option, value in values.items() if value is not None}


def shared_settings(request: EvalRequest) -> dict[str, Any]:
    """Return the benchmark settings that the command-line options set."""
    return {
        key: value
        for option, value in option_values(request).items()
        for key in OPTION_SETTINGS[option]
    }


def check_options_used(request: EvalRequest, entries: list[Any]) -> None:
    """Raise when an option given on the command line applies to no listed benchmark."""
    for option in option_values(request):
        keys = OPTION_SETTINGS[option]
        if not any(hasattr(entry.settings, key) for entry in entries for key in keys):
            labels = ", ".join(entry.label for entry in entries)
            raise DrirlError(
                f"{option} applies to none of the listed benchmarks ({labels}); "
                "remove it or add a benchmark that takes it"
            )


def eval_records(plugins: Plugins) -> list[Record]:
    """Return the eval records of every loaded harm category."""
    records: list[Record] = []
    for name in plugins.registry("harm_category").names():
        category = plugins.get("harm_category", name)
        records.extend(r for r in category.load_records() if r.split == "eval")
    return records


def folder_name(label: str) -> str:
    """Return a file-system-safe folder name for a benchmark label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def remove_datasets_cache(folder: Path) -> None:
    """Remove the datasets cache that an lm-eval benchmark left in its output folder."""
    cache = folder / DATASETS_CACHE
    if cache.is_dir():
        shutil.rmtree(cache)


def run_eval(request: EvalRequest, plugins: Plugins) -> dict[str, dict[str, Metric]]:
    """Evaluate the model on every requested benchmark and write the results.

    Returns the metrics per benchmark label. ``results.json`` in the output folder contains
    the model, the judge, each benchmark's settings and metrics, and the run time.
    """
    # Imported here so that building the CLI parser does not import torch.
    from drirl.atomic import write_json_atomic
    from drirl.benchmark_entries import resolve_benchmarks
    from drirl.components import JudgeRun, RunContext, warn_remote_code
    from drirl.embedded import resolve_model
    from drirl.judging import GuardedJudge
    from drirl.settings import build_settings

    entries = resolve_benchmarks(
        benchmark_entries(request),
        shared_settings(request),
        plugins,
        file=None,
        locate=lambda path: path.replace("evaluation.benchmarks", "--benchmark"),
        require_shared_used=False,
    )
    check_options_used(request, entries)
    judge_cls = plugins.get("judge", request.judge)
    model_path = Path(resolve_model(request.model, request.cache_dir))
    if request.trust_remote_code:
        warn_remote_code(request.model)
    ctx = RunContext(
        seed=request.seed,
        cache_dir=request.cache_dir,
        trust_remote_code=request.trust_remote_code,
    )
    records = eval_records(plugins)
    judge = GuardedJudge(
        judge_cls(
            build_settings(
                judge_cls.Settings,
                request.judge_settings,
                file=None,
                field="--judge-setting",
                component=f"judge {request.judge!r}",
            )
        )
    )
    judge.prepare(JudgeRun(ctx=ctx, records=records))

    out_dir = request.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Metric]] = {}
    document: dict[str, Any] = {
        "model": request.model,
        "model_path": str(model_path),
        "judge": request.judge,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "benchmarks": {},
    }
    for entry in entries:
        folder = out_dir / folder_name(entry.label)
        folder.mkdir(parents=True, exist_ok=True)
        benchmark = plugins.get("benchmark", entry.component)(entry.settings)
        logger.info("eval: %s on %s", entry.label, model_path)
        started = time.monotonic()
        try:
            metrics = benchmark.run(model_path, records, judge, folder, ctx)
        finally:
            remove_datasets_cache(folder)
        seconds = time.monotonic() - started
        write_json_atomic(folder / "metrics.json", metrics)
        results[entry.label] = metrics
        document["benchmarks"][entry.label] = {
            "benchmark": entry.component,
            "settings": asdict(entry.settings),
            "folder": folder.name,
            "seconds": round(seconds, 1),
            "metrics": {name: asdict(metric) for name, metric in metrics.items()},
        }
        write_json_atomic(out_dir / "results.json", document)
    return results


def format_table(results: dict[str, dict[str, Metric]]) -> str:
    """Render every metric as a text table with its value, 95% interval and count."""
    rows = [("metric", "value", "95% CI", "n")]
    for metrics in results.values():
        for name, metric in metrics.items():
            interval = "-"
            if metric.ci_low is not None and metric.ci_high is not None:
                interval = f"[{metric.ci_low:.3f}, {metric.ci_high:.3f}]"
            rows.append((name, f"{metric.value:.3f}", interval, str(metric.n)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def add_eval_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``eval`` subcommand to the ``drirl`` argument parser."""
    p = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate a model on benchmarks without training",
    )
    p.add_argument(
        "--model",
        required=True,
        help="local Hugging Face model folder, or 'embedded' for the embedded SmolLM2",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the Python code that comes with the model (the files its config.json "
        "names in auto_map); needed for models that transformers does not implement",
    )
    p.add_argument(
        "--benchmark",
        action="append",
        required=True,
        help="drirl benchmark name, lm-eval task name, or CSV/JSONL file of prompts; "
        "repeat to run several",
    )

    p.add_argument(
        "--prompt-column",
        help="column of the prompts in a benchmark file (default: prompt)",
    )
    p.add_argument(
        "--category-column", help="column of the categories in a benchmark file"
    )
    p.add_argument(
        "--expect",
        choices=("refuse", "answer"),
        help="whether the model should refuse or answer a benchmark file's prompts "
        "(default: refuse)",
    )

    p.add_argument(
        "--judge", default=DEFAULT_JUDGE, help=f"judge name (default: {DEFAULT_JUDGE})"
    )
    p.add_argument(
        "--judge-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the judge, the value read as YAML (for example "
        "model_path=./guard); repeat for several",
    )
    p.add_argument(
        "--max-new-tokens", type=int, help="maximum generated tokens per response"
    )
    p.add_argument("--batch-size", type=int, help="prompts per model batch")
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate only the first N prompts of each category (for mc_qa and "
        "lm-eval tasks: the first N questions)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap intervals"
    )

    p.add_argument(
        "--out", default="drirl-eval", help="output folder (default: ./drirl-eval)"
    )
    p.add_argument(
        "--cache-dir",
        help="model cache folder (default: $DRIRL_CACHE_DIR or ~/.cache/drirl)",
    )

    p.set_defaults(func=cmd_eval)


def parse_key_values(items: list[str], option: str) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` arguments into a mapping, reading each value as YAML."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DrirlError(
                f"{option} {item!r} is invalid; write it as KEY=VALUE, for example "
                f"{option} threshold=0.5"
            )
        parsed[key.strip()] = yaml.safe_load(value) if value else ""
    return parsed


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``drirl eval`` and print the metrics table."""
    from drirl.plugin_manager import load_plugins

    request = EvalRequest(
        model=args.model,
        benchmarks=list(args.benchmark),
        out_dir=Path(args.out),
        prompt_column=args.prompt_column,
        category_column=args.category_column,
        expect=args.expect,
        judge=args.judge,
        judge_settings=parse_key_values(args.judge_setting, "--judge-setting"),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        trust_remote_code=args.trust_remote_code,
    )
    results = run_eval(request, load_plugins())
    print(format_table(results))
    print(f"Results written to {request.out_dir.resolve()}/results.json")
    return 0
