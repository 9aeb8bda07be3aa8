"""One matrix cell's configuration: applying its values and validating every component.

``resolve_cell`` overlays a cell's matrix values on the experiment's base fields. It then
looks up each named component in the loaded plugins and builds its Settings. Every error
names the file, the field path with the matrix entry it came from, the bad value and the
allowed values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl.benchmark_entries import resolve_benchmarks
from drirl.embedded import model_spec_problem
from drirl.errors import ConfigError, UnknownComponentError
from drirl.matrix import Cell
from drirl.plugin_manager import Plugins
from drirl.settings import build_settings
from drirl.warm_start import WarmStart, resolve_warm_start

NO_OPTIMIZER = "none"
COMBINE_MODES = ("product", "sum")
# Experiment fields that are mappings with a fixed set of keys.
FIXED_MAPPINGS = ("data", "reward", "evaluation")


@dataclass
class CellConfig:
    """The fully resolved, validated configuration of one matrix cell."""

    id: str
    settings: dict[str, Any]
    model: str
    seed: int
    categories: list[str]
    train_per_category: int | None
    eval_per_category: int | None
    reward_learner: str
    reward_settings: Any
    optimizer: str
    training: Any
    scaler_names: list[str]
    scaler_settings: dict[str, Any]
    scaler_combine: str
    scaler_weights: list[float] | None
    judge: str
    judge_settings: Any
    # Benchmark labels in run order (see drirl.benchmark_entries.BenchmarkEntry).
    benchmarks: list[str]
    benchmark_settings: dict[str, Any]
    preset: str | None = None
    # The registered benchmark each label runs, where it differs from the label.
    benchmark_components: dict[str, str] = field(default_factory=dict)
    trust_remote_code: bool = False
    warm_start: WarmStart | None = None
    # Seed of the optimizer stage alone, or None for ``seed``. The warm start and the
    # reward models keep ``seed``, so cells that differ only here share them.
    optimizer_seed: int | None = None
    # Save the policy every this many optimizer steps and evaluate each saved policy
    # with the cell's benchmarks and judge, or None for the final policy alone.
    checkpoint_every: int | None = None

    @property
    def trains(self) -> bool:
        """Whether this cell runs an optimizer after the warm start, if any."""
        return self.optimizer != NO_OPTIMIZER


def set_path(
    config: dict[str, Any], path: str, value: Any, file: str | Path | None, origin: str
) -> None:
    """Set a dotted field path (``training.learning_rate``) inside ``config``."""
    keys = path.split(".")
    if keys[0] not in config or keys[0] in ("matrix", "baselines"):
        raise ConfigError(
            "matrix key is not an experiment field",
            file=file,
            field=origin,
            value=path,
            allowed=[k for k in config if k not in ("matrix", "baselines")],
        )
    node = config
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"{key!r} is not a mapping", file=file, field=origin, value=path
            )
        node = child
    current = node.get(keys[-1])
    if isinstance(current, dict) and isinstance(value, dict):
        # A mapping overrides key by key, so the keys it leaves out keep their values.
        node[keys[-1]] = {**current, **copy.deepcopy(value)}
    else:
        node[keys[-1]] = copy.deepcopy(value)


def _require(kind: str, name: Any, plugins: Plugins, file: Any, field_path: str) -> Any:
    if not isinstance(name, str):
        raise ConfigError(
            f"{kind} name must be a string", file=file, field=field_path, value=name
        )
    try:
        return plugins.get(kind, name)
    except UnknownComponentError as exc:
        # The lookup error already names the value, the closest match and the known names.
        raise ConfigError(str(exc), file=file, field=field_path) from None


def _check_type(
    value: Any, types: tuple[type, ...], what: str, file: Any, field_path: str
) -> None:
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"must be {what}", file=file, field=field_path, value=value)
    if not isinstance(value, types):
        raise ConfigError(f"must be {what}", file=file, field=field_path, value=value)


def _locator(cell: Cell) -> Any:
    def locate(path: str) -> str:
        origin = cell.origins.get(path)
        if origin is None:
            for key, value in cell.origins.items():
                if path.startswith(key + "."):
                    origin = value
        suffix = f" (matrix cell {cell.id!r})" if cell.origins else ""
        return (f"{origin} -> {path}" if origin else path) + suffix

    return locate


def _resolve_categories(
    value: Any, plugins: Plugins, file: Any, where: str
) -> list[str]:
    known = plugins.registry("harm_category").names()
    if value == "all":
        return known
    if not isinstance(value, list) or not value:
        raise ConfigError(
            "must be 'all' or a non-empty list of harm category names",
            file=file,
            field=where,
            value=value,
            allowed=known,
        )
    for i, name in enumerate(value):
        _require("harm_category", name, plugins, file, f"{where}[{i}]")
    if len(set(value)) != len(value):
        raise ConfigError("lists a category twice", file=file, field=where, value=value)
    return list(value)


def _parse_scaler(expr: Any, file: Any, where: str) -> list[str]:
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(
            "must be a scaler name or names joined by '*' (for example clip*reward_gap)",
            file=file,
            field=where,
            value=expr,
        )
    return [part.strip() for part in expr.split("*")]


def _check_fixed_mappings(
    config: dict[str, Any], base: dict[str, Any], file: Any, loc: Any
) -> None:
    """Check that a matrix value left ``data``, ``reward`` and ``evaluation`` well formed."""
    for key in FIXED_MAPPINGS:
        if not isinstance(config[key], dict):
            raise ConfigError(
                "must be a mapping", file=file, field=loc(key), value=config[key]
            )
        for sub in config[key]:
            if sub not in base[key]:
                raise ConfigError(
                    "unknown field",
                    file=file,
                    field=loc(f"{key}.{sub}"),
                    value=sub,
                    allowed=list(base[key]),
                )


def _training_values(
    config: dict[str, Any], optimizer: Any, plugins: Plugins, file: Any, loc: Any
) -> dict[str, Any]:
    """Merge ``training`` with ``optimizer_settings.<optimizer>``; unknown keys raise.

    ``training`` is shared by every optimizer of the experiment, so a key there that the
    cell's optimizer does not take is an error that points at ``optimizer_settings``.
    """
    shared = config["training"]
    per_optimizer = config["optimizer_settings"]
    for field_path, value in (
        ("training", shared),
        ("optimizer_settings", per_optimizer),
    ):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(
                "must be a mapping", file=file, field=loc(field_path), value=value
            )
    per_optimizer = per_optimizer or {}
    for name in per_optimizer:
        _require("optimizer", name, plugins, file, loc(f"optimizer_settings.{name}"))
    own = per_optimizer.get(optimizer.name) or {}
    if not isinstance(own, dict):
        raise ConfigError(
            "must be a mapping",
            file=file,
            field=loc(f"optimizer_settings.{optimizer.name}"),
            value=own,
        )
    known = optimizer.settings_fields()
    for key in shared or {}:
        if key not in known:
            raise ConfigError(
                f"unknown setting for optimizer {optimizer.name!r}; to give it only to "
                "the optimizers that take it, move it under optimizer_settings.<name>",
                file=file,
                field=loc(f"training.{key}"),
                value=key,
                allowed=known,
            )
    for key in own:
        if key not in known:
            raise ConfigError(
                f"unknown setting for optimizer {optimizer.name!r}",
                file=file,
                field=loc(f"optimizer_settings.{optimizer.name}.{key}"),
                value=key,
                allowed=known,
            )
    return {**(shared or {}), **own}


def resolve_cell(
    cell: Cell, base: dict[str, Any], plugins: Plugins, file: Any
) -> CellConfig:
    """Apply a cell's values to the base fields and validate every component and setting."""
    config = copy.deepcopy(base)
    for path, value in cell.settings.items():
        set_path(config, path, value, file, cell.origins.get(path, "matrix"))
    loc = _locator(cell)
    _check_fixed_mappings(config, base, file, loc)

    _check_type(config["model"], (str,), "a string", file, loc("model"))
    _check_type(
        config["trust_remote_code"],
        (bool,),
        "true or false",
        file,
        loc("trust_remote_code"),
    )
    problem = model_spec_problem(config["model"])
    if problem is not None:
        raise ConfigError(problem, file=file, field=loc("model"), value=config["model"])
    _check_type(config["seed"], (int,), "an integer", file, loc("seed"))
    _check_type(
        config["optimizer_seed"],
        (int, type(None)),
        "an integer or null",
        file,
        loc("optimizer_seed"),
    )
    categories = _resolve_categories(
        config["categories"], plugins, file, loc("categories")
    )
    for key in ("train_per_category", "eval_per_category"):
        value = config["data"][key]
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ConfigError(
                "must be a positive integer or null",
                file=file,
                field=loc(f"data.{key}"),
                value=value,
            )

    learner_name = config["reward"]["learner"]
    learner = _require(
        "reward_learner", learner_name, plugins, file, loc("reward.learner")
    )
    reward_settings = build_settings(
        learner.Settings,
        config["reward"]["settings"],
        file=file,
        field=loc("reward.settings"),
        component=f"reward learner {learner_name!r}",
    )

    optimizer_name = config["optimizer"]
    scaler_names = _parse_scaler(config["scaler"], file, loc("scaler"))
    warm_start = resolve_warm_start(
        config["warm_start"], plugins, file, loc("warm_start")
    )
    if optimizer_name == NO_OPTIMIZER:
        training = None
    else:
        optimizer = _require(
            "optimizer", optimizer_name, plugins, file, loc("optimizer")
        )
        training = build_settings(
            optimizer.Settings,
            _training_values(config, optimizer, plugins, file, loc),
            file=file,
            field=loc("training"),
            component=f"optimizer {optimizer_name!r}",
        )
        accepts = optimizer.accepts_scaler
        if not accepts and scaler_names != ["none"]:
            raise ConfigError(
                f"optimizer {optimizer_name!r} takes no difficulty scaler; set scaler: none "
                "or choose an optimizer that scales (grpo_s)",
                file=file,
                field=loc("scaler"),
                value=config["scaler"],
            )
        for name, off in (
            ("warm_start_samples", "0"),
            ("warm_start_refusals", "false"),
            ("warm_start_compliance", "false"),
        ):
            value = getattr(reward_settings, name, None)
            if optimizer.needs_reward and value and warm_start is None:
                raise ConfigError(
                    "the reward learner samples the warm-started policy, but this cell "
                    f"has no warm_start; set warm_start, or set {name} to {off}",
                    file=file,
                    field=loc(f"reward.settings.{name}"),
                    value=value,
                )

    scaler_settings: dict[str, Any] = {}
    raw_scaler_settings = config["scaler_settings"] or {}
    if not isinstance(raw_scaler_settings, dict):
        raise ConfigError(
            "must be a mapping of scaler name to settings",
            file=file,
            field=loc("scaler_settings"),
            value=raw_scaler_settings,
        )
    for name in raw_scaler_settings:
        _require(
            "difficulty_scaler", name, plugins, file, loc(f"scaler_settings.{name}")
        )
    for i, name in enumerate(scaler_names):
        scaler = _require("difficulty_scaler", name, plugins, file, loc("scaler"))
        scaler_settings[name] = build_settings(
            scaler.Settings,
            raw_scaler_settings.get(name),
            file=file,
            field=loc(f"scaler_settings.{name}"),
            component=f"scaler {name!r}",
        )
    combine = config["scaler_combine"]
    if combine not in COMBINE_MODES:
        raise ConfigError(
            "unknown combination",
            file=file,
            field=loc("scaler_combine"),
            value=combine,
            allowed=COMBINE_MODES,
        )
    weights = config["scaler_weights"]
    if weights is not None and (
        not isinstance(weights, list)
        or len(weights) != len(scaler_names)
        or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights
        )
    ):
        raise ConfigError(
            f"must be a list of {len(scaler_names)} numbers, one per scaler in {config['scaler']!r}",
            file=file,
            field=loc("scaler_weights"),
            value=weights,
        )

    evaluation = config["evaluation"]
    every = evaluation["checkpoint_every"]
    if every is not None and (
        not isinstance(every, int) or isinstance(every, bool) or every < 1
    ):
        raise ConfigError(
            "must be an integer >= 1 (optimizer steps between saved policies) or null",
            file=file,
            field=loc("evaluation.checkpoint_every"),
            value=every,
        )
    judge_name = evaluation["judge"]
    judge = _require("judge", judge_name, plugins, file, loc("evaluation.judge"))
    judge_settings = build_settings(
        judge.Settings,
        evaluation["judge_settings"],
        file=file,
        field=loc("evaluation.judge_settings"),
        component=f"judge {judge_name!r}",
    )
    entries = resolve_benchmarks(
        evaluation["benchmarks"],
        evaluation["settings"],
        plugins,
        file=file,
        locate=loc,
    )

    return CellConfig(
        id=cell.id,
        settings=dict(cell.settings),
        model=config["model"],
        seed=config["seed"],
        categories=categories,
        train_per_category=config["data"]["train_per_category"],
        eval_per_category=config["data"]["eval_per_category"],
        reward_learner=learner_name,
        reward_settings=reward_settings,
        optimizer=optimizer_name,
        training=training,
        scaler_names=scaler_names,
        scaler_settings=scaler_settings,
        scaler_combine=combine,
        scaler_weights=[float(w) for w in weights] if weights is not None else None,
        judge=judge_name,
        judge_settings=judge_settings,
        benchmarks=[entry.label for entry in entries],
        benchmark_settings={entry.label: entry.settings for entry in entries},
        benchmark_components={entry.label: entry.component for entry in entries},
        preset=cell.preset,
        trust_remote_code=config["trust_remote_code"],
        warm_start=warm_start,
        optimizer_seed=config["optimizer_seed"],
        checkpoint_every=every,
    )
