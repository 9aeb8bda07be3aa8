"""Run an experiment: for each matrix cell, the stages data -> reward -> optimize -> evaluate.

Stage outputs are keyed by their inputs (see ``drirl.stage_store``), so cells share the
stages they have in common and a rerun or a resumed run skips every finished stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl.atomic import remove_stale_temporaries, write_json_atomic
from drirl.cells import CellConfig
from drirl.checkpoints import list_checkpoints
from drirl.components import JudgeRun, Metric, Record, RunContext
from drirl.config import Experiment
from drirl.dataset import balance, select
from drirl.distributed import barrier, is_main_process, main_process_first
from drirl.embedded import CONVERSION_VERSION, EMBEDDED_POLICY, resolve_model
from drirl.generation_cache import GENERATIONS_DIR
from drirl.judging import GuardedJudge, public_settings
from drirl.plugin_manager import Plugins
from drirl.stage_store import DONE_FILE, StageStore, stage_key
from drirl.training_curves import curve_summary
from drirl.warm_start import WARM_START_SETTINGS, warm_start_key_settings

logger = logging.getLogger(__name__)

# The judge's report, written beside metrics.json in each evaluate stage folder.
JUDGE_REPORT = "judge.json"


@dataclass
class CellResult:
    """The outcome of one matrix cell."""

    id: str
    settings: dict[str, Any]
    metrics: dict[str, Metric]
    stages: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    # Run time of the cell's stages when they ran, so a resumed run reports the real cost.
    # A stage shared by several cells counts in each of them.
    seconds: float = 0.0
    # The judge's report per benchmark (accuracy, independence, error count).
    judge: dict[str, Any] = field(default_factory=dict)


def _model_identity(spec: str, path: Path | str) -> str:
    if spec == EMBEDDED_POLICY:
        return f"embedded-smollm2-135m-instruct-v{CONVERSION_VERSION}"
    return str(path)


def cell_records(
    cell: CellConfig, plugins: Plugins
) -> tuple[list[Record], list[Record]]:
    """Load the cell's categories and return its balanced (train, eval) records."""
    records: list[Record] = []
    for name in cell.categories:
        records.extend(plugins.get("harm_category", name).load_records())
    train = balance(select(records, split="train"), cell.train_per_category)
    evaluation = balance(select(records, split="eval"), cell.eval_per_category)
    return train, evaluation


def _file_digest(path: Path) -> str:
    if not path.is_file():
        # The learner reports the missing file with its own error when it runs.
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records_digest(records: Sequence[Record]) -> str:
    return stage_key({"records": [r.__dict__ for r in records]})


class ExperimentRunner:
    """Runs the cells of an experiment into one run folder."""

    def __init__(
        self,
        experiment: Experiment,
        plugins: Plugins,
        run_dir: Path,
        *,
        cache_dir: Path | None = None,
        show_progress: bool = True,
    ) -> None:
        self.experiment = experiment
        self.plugins = plugins
        self.run_dir = run_dir
        self.store = StageStore(run_dir)
        self.cache_dir = cache_dir
        self.show_progress = show_progress

    def run(self) -> list[CellResult]:
        """Run every cell in order and return their results."""
        # Only the folders drirl writes are swept, because --out may name a folder that
        # contains other files too.
        # With several processes only the main process sweeps, before any stage starts.
        swept = ("stages", "cells", "report") if is_main_process() else ()
        removed = [
            path
            for folder in swept
            for path in remove_stale_temporaries(
                self.run_dir / folder, finished_marker=DONE_FILE
            )
        ]
        barrier()
        if removed:
            logger.info(
                "removed %d temporary file(s) left by an interrupted run, such as %s",
                len(removed),
                removed[0],
            )
        results = []
        total = len(self.experiment.cells)
        for index, cell in enumerate(self.experiment.cells, start=1):
            logger.info("cell %d/%d %s: starting", index, total, cell.id)
            result = self.run_cell(cell)
            results.append(result)
            if is_main_process():
                write_json_atomic(self.run_dir / "cells" / f"{cell.id}.json", result)
            logger.info(
                "cell %d/%d %s: %s", index, total, cell.id, summary_line(result)
            )
        return results

    def run_cell(self, cell: CellConfig) -> CellResult:
        """Run one cell's stages, reusing any stage output that already exists."""
        ctx = RunContext(
            seed=cell.seed,
            device=default_device(),
            cache_dir=self.cache_dir,
            show_progress=self.show_progress,
            trust_remote_code=cell.trust_remote_code,
            generation_cache=self.run_dir / GENERATIONS_DIR,
        )
        # The main process converts the embedded model once; the others then reuse it.
        with main_process_first():
            policy = resolve_model(cell.model, self.cache_dir)
        policy_id = _model_identity(cell.model, policy)
        train, evaluation = cell_records(cell, self.plugins)
        stages: dict[str, str] = {}
        training: dict[str, Any] = {}
        model_path: Path | str = policy
        model_id = policy_id
        reward_metrics: dict[str, Metric] = {}
        if cell.trains:
            model_path, model_id, training = self._train(
                cell, ctx, policy, policy_id, train, stages
            )
            reward_metrics = self._evaluate_reward(
                cell, ctx, policy, evaluation, stages
            )
        elif cell.warm_start is not None:
            # No optimizer after the warm start: the cell evaluates the warm start itself.
            model_path, model_id = self._warm_start(
                cell, ctx, policy, policy_id, train, _records_digest(train), stages
            )
        judge_reports: dict[str, Any] = {}
        metrics = self._evaluate(
            cell, ctx, model_path, model_id, evaluation, stages, judge_reports
        )
        if cell.trains and cell.checkpoint_every is not None:
            training["checkpoints"] = self._evaluate_checkpoints(
                cell, ctx, Path(model_path).parent, model_id, evaluation, stages
            )
            last = getattr(cell.training, "steps", None)
            training["checkpoints"].append({"step": last, "metrics": _plain(metrics)})
        metrics.update(reward_metrics)
        return CellResult(
            cell.id,
            cell.settings,
            metrics,
            stages,
            training,
            sum(
                self.store.seconds(self.run_dir / folder) for folder in stages.values()
            ),
            judge_reports,
        )

    def _train(
        self,
        cell: CellConfig,
        ctx: RunContext,
        policy: Path | str,
        policy_id: str,
        train: list[Record],
        stages: dict[str, str],
    ) -> tuple[Path, str, dict[str, Any]]:
        from drirl.scaling import build_scaler

        optimizer = self.plugins.get("optimizer", cell.optimizer)(cell.training)
        data_digest = _records_digest(train)
        # The reward stage learns from the untrained model, and also from the warm-started
        # one's responses with any of WARM_START_SETTINGS. The optimizer
        # starts from the warm start.
        start, start_id = policy, policy_id
        if cell.warm_start is not None:
            start, start_id = self._warm_start(
                cell, ctx, policy, policy_id, train, data_digest, stages
            )
        reward_inputs: dict[str, Any] = {}
        if optimizer.needs_reward:
            learner = self.plugins.get("reward_learner", cell.reward_learner)(
                cell.reward_settings
            )
            reward_inputs = {
                "learner": cell.reward_learner,
                "settings": cell.reward_settings,
                "policy": policy_id,
                "data": data_digest,
                "seed": cell.seed,
            }
            # A pairs file's content keys the stage too, so editing the file retrains.
            # Added only when set, so the keys of earlier runs stay valid.
            pairs_file = getattr(cell.reward_settings, "pairs_file", None)
            if pairs_file:
                reward_inputs["pairs_file_sha256"] = _file_digest(Path(pairs_file))
            reward_ctx = ctx
            if any(
                getattr(cell.reward_settings, name, False)
                for name in WARM_START_SETTINGS
            ):
                reward_inputs["warm_start"] = start_id
                reward_ctx = dataclasses.replace(ctx, warm_start_model=Path(start))
            reward_dir, reused = self.store.run(
                "reward",
                reward_inputs,
                lambda tmp: learner.train(Path(policy), train, tmp, reward_ctx),
            )
            stages["reward"] = str(reward_dir.relative_to(self.run_dir))
            logger.info(
                "%s: reward models %s", cell.id, "reused" if reused else "trained"
            )

        policy, policy_id = start, start_id

        optimize_inputs = {
            "optimizer": cell.optimizer,
            "training": cell.training,
            "reward": reward_inputs,
            "scaler": cell.scaler_names,
            "scaler_settings": cell.scaler_settings,
            "scaler_combine": cell.scaler_combine,
            "scaler_weights": cell.scaler_weights,
            "policy": policy_id,
            "data": data_digest,
            "seed": cell.seed,
        }
        # Added only when it differs from the cell's seed. The keys of earlier runs stay
        # valid, and optimizer_seed equal to seed reuses the stage trained without it.
        optimize_ctx = ctx
        if cell.optimizer_seed is not None and cell.optimizer_seed != cell.seed:
            optimize_inputs["optimizer_seed"] = cell.optimizer_seed
            optimize_ctx = dataclasses.replace(ctx, seed=cell.optimizer_seed)
        # Added only when set, as above. The stage folder then contains the saved
        # policies too.
        if cell.checkpoint_every is not None:
            optimize_inputs["checkpoint_every"] = cell.checkpoint_every
            optimize_ctx = dataclasses.replace(
                optimize_ctx, checkpoint_every=cell.checkpoint_every
            )

        def optimize(tmp: Path) -> dict[str, Any]:
            # The scorer and scaler load only here, so a reused stage costs no model load.
            scorer = learner.load(reward_dir, ctx) if optimizer.needs_reward else None
            scaler = build_scaler(
                cell.scaler_names,
                cell.scaler_settings,
                self.plugins,
                ctx,
                combine=cell.scaler_combine,
                weights=cell.scaler_weights,
            )
            result = optimizer.train(
                Path(policy), train, scorer, scaler, tmp, optimize_ctx
            )
            if is_main_process():
                write_json_atomic(tmp / "log_history.json", result.log_history)
            return {"steps": len(result.log_history)}

        optimize_dir, reused = self.store.run(
            "optimize", optimize_inputs, optimize, collective=True
        )
        stages["optimize"] = str(optimize_dir.relative_to(self.run_dir))
        logger.info("%s: policy %s", cell.id, "reused" if reused else "trained")
        history = _read_history(optimize_dir / "log_history.json")
        return (
            optimize_dir / "model",
            stage_key(optimize_inputs),
            training_summary(history),
        )

    def _warm_start(
        self,
        cell: CellConfig,
        ctx: RunContext,
        policy: Path | str,
        policy_id: str,
        train: list[Record],
        data_digest: str,
        stages: dict[str, str],
    ) -> tuple[Path, str]:
        """Run the cell's warm start (its own stage); return the model and its identity."""
        warm = cell.warm_start
        assert warm is not None
        optimizer = self.plugins.get("optimizer", warm.optimizer)(warm.settings)
        inputs = {
            "optimizer": warm.optimizer,
            "training": warm_start_key_settings(warm.settings),
            "policy": policy_id,
            "data": data_digest,
            "seed": cell.seed,
        }

        def train_warm(tmp: Path) -> dict[str, Any]:
            result = optimizer.train(Path(policy), train, None, None, tmp, ctx)
            if is_main_process():
                write_json_atomic(tmp / "log_history.json", result.log_history)
            return {"steps": len(result.log_history)}

        folder, reused = self.store.run(
            "warm_start", inputs, train_warm, collective=True
        )
        stages["warm_start"] = str(folder.relative_to(self.run_dir))
        logger.info(
            "%s: warm start (%s) %s",
            cell.id,
            warm.optimizer,
            "reused" if reused else "trained",
        )
        return folder / "model", f"warm_start-{stage_key(inputs)}"

    def _evaluate_reward(
        self,
        cell: CellConfig,
        ctx: RunContext,
        policy: Path | str,
        evaluation: list[Record],
        stages: dict[str, str],
    ) -> dict[str, Metric]:
        """Measure the reward models' pairwise accuracy on the eval split (its own stage)."""
        if "reward" not in stages:
            return {}
        from drirl.reward_accuracy import METRICS_FILE, evaluate_reward_models

        learner = self.plugins.get("reward_learner", cell.reward_learner)(
            cell.reward_settings
        )
        reward_dir = self.run_dir / stages["reward"]
        inputs = {"reward": stages["reward"], "data": _records_digest(evaluation)}
        folder, _ = self.store.run(
            "reward_eval",
            inputs,
            lambda tmp: evaluate_reward_models(
                learner, reward_dir, Path(policy), evaluation, tmp, ctx
            ),
        )
        stages["reward_eval"] = str(folder.relative_to(self.run_dir))
        return read_metrics(folder / METRICS_FILE)

    def _evaluate_checkpoints(
        self,
        cell: CellConfig,
        ctx: RunContext,
        optimize_dir: Path,
        model_id: str,
        evaluation: list[Record],
        stages: dict[str, str],
    ) -> list[dict[str, Any]]:
        """Evaluate every policy the optimize stage saved, one (step, metrics) row each.

        Each saved policy runs the cell's benchmarks with its judge, as the final policy
        does, in evaluate stages of its own (``evaluate/<benchmark>/step-<step>`` in
        ``stages``).
        """
        saved = list_checkpoints(optimize_dir)
        steps = getattr(cell.training, "steps", None)
        if not saved and (steps is None or cell.checkpoint_every < steps):
            logger.warning(
                "%s: evaluation.checkpoint_every is %d, but optimizer %r saved no "
                "policy in %s; the cell reports its final policy alone",
                cell.id,
                cell.checkpoint_every,
                cell.optimizer,
                optimize_dir,
            )
        rows = []
        for index, (step, folder) in enumerate(saved, start=1):
            logger.info(
                "%s: evaluating the policy saved after step %d (%d of %d)",
                cell.id,
                step,
                index,
                len(saved),
            )
            step_stages = {"reward": stages["reward"]} if "reward" in stages else {}
            metrics = self._evaluate(
                cell,
                ctx,
                folder,
                f"{model_id}/step-{step}",
                evaluation,
                step_stages,
                {},
            )
            for name, folder_name in step_stages.items():
                if name.startswith("evaluate/"):
                    stages[f"{name}/step-{step}"] = folder_name
            rows.append({"step": step, "metrics": _plain(metrics)})
        return rows

    def _evaluate(
        self,
        cell: CellConfig,
        ctx: RunContext,
        model_path: Path | str,
        model_id: str,
        evaluation: list[Record],
        stages: dict[str, str],
        judge_reports: dict[str, Any],
    ) -> dict[str, Metric]:
        judge = self.plugins.get("judge", cell.judge)(cell.judge_settings)
        reward_dir = self.run_dir / stages["reward"] if "reward" in stages else None
        judge.prepare(JudgeRun(ctx, reward_dir=reward_dir, records=evaluation))
        metrics: dict[str, Metric] = {}
        for name in cell.benchmarks:
            settings = cell.benchmark_settings[name]
            component = cell.benchmark_components.get(name, name)
            benchmark = self.plugins.get("benchmark", component)(settings)
            inputs = {
                "benchmark": name,
                "settings": settings,
                "judge": cell.judge,
                "judge_settings": public_settings(cell.judge_settings),
                "model": model_id,
                "data": _records_digest(evaluation),
                "seed": cell.seed,
            }
            # Added only when present, so the keys of earlier runs stay valid.
            if component != name:
                inputs["component"] = component
            fingerprint = getattr(benchmark, "data_fingerprint", None)
            if callable(fingerprint):
                inputs["benchmark_data"] = fingerprint()
            judge_fingerprint = getattr(judge, "fingerprint", None)
            if callable(judge_fingerprint):
                inputs["judge_fingerprint"] = judge_fingerprint()

            def evaluate(tmp: Path, benchmark: Any = benchmark) -> dict[str, Any]:
                # A fresh wrapper per benchmark, so its error count is this benchmark's.
                guarded = GuardedJudge(judge)
                found = benchmark.run(Path(model_path), evaluation, guarded, tmp, ctx)
                write_json_atomic(tmp / "metrics.json", found)
                write_json_atomic(tmp / JUDGE_REPORT, guarded.report())
                return {"metrics": len(found)}

            folder, reused = self.store.run("evaluate", inputs, evaluate)
            stages[f"evaluate/{name}"] = str(folder.relative_to(self.run_dir))
            metrics.update(read_metrics(folder / "metrics.json"))
            if (folder / JUDGE_REPORT).is_file():
                judge_reports[name] = json.loads(
                    (folder / JUDGE_REPORT).read_text(encoding="utf-8")
                )
        return metrics


def default_device() -> str:
    """Return "cuda" when torch finds a CUDA device, else "cpu".

    NOTE: no stage has been run on a GPU yet; the tests run on CPU only.
    """
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _plain(metrics: dict[str, Metric]) -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(m) for name, m in sorted(metrics.items())}


def read_metrics(path: Path) -> dict[str, Metric]:
    """Read a metrics.json written by the evaluate stage."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {name: Metric(**value) for name, value in data.items()}


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))


def training_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise a trainer log: step count, first and last reward, and alpha statistics."""
    steps = [row for row in history if "reward" in row or "loss" in row]
    summary: dict[str, Any] = {"logged_steps": len(steps)}
    if not steps:
        return summary
    for key in ("reward", "loss", "kl"):
        values = [row[key] for row in steps if isinstance(row.get(key), (int, float))]
        if values:
            summary[f"{key}_first"] = values[0]
            summary[f"{key}_last"] = values[-1]
    alpha = [
        row.get("alpha/mean")
        for row in steps
        if isinstance(row.get("alpha/mean"), (int, float))
    ]
    if alpha:
        summary["alpha_mean"] = sum(alpha) / len(alpha)
    curves = curve_summary(history)
    if curves:
        summary["curves"] = curves
    return summary


def summary_line(result: CellResult) -> str:
    """Return a one-line summary of a finished cell for the console and the run log."""
    parts = []
    for name in ("harmful_refusal/all", "benign_compliance/all"):
        metric = result.metrics.get(name)
        if metric is not None:
            parts.append(f"{name}={metric.value:.2f} (n={metric.n})")
    parts.append(f"{result.seconds:.0f}s")
    return ", ".join(parts)
