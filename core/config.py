"""Experiment files: loading, matrix expansion and validation against the loaded plugins.

An experiment is a YAML mapping (read with ``yaml.safe_load``). Its fields, with defaults:

    name: experiment            # used in the report; no path separators
    model: embedded             # "embedded", a local Hugging Face model folder, or a hub name
    trust_remote_code: false    # true runs the Python code that comes with the model
    seed: 0
    optimizer_seed: null        # seed of the optimizer stage alone (null: seed)
    categories: all             # or a list of harm category names
    data: {train_per_category: null, eval_per_category: null}
    reward: {learner: bradley_terry, settings: {}}
    optimizer: grpo_s           # an optimizer name, or "none" for no training (the base model)
    training: {}                # the optimizer's settings (learning_rate, steps, batch_size, ...)
    optimizer_settings: {}      # per optimizer name, settings that apply to it only
    warm_start: null            # {optimizer: sft, settings: {...}}: train this first
    scaler: none                # a scaler name, or several joined by "*" (clip*reward_gap)
    scaler_settings: {}         # per scaler name, its settings
    scaler_combine: product     # or "sum" (weighted by scaler_weights)
    scaler_weights: null
    evaluation: {judge: refusal_phrases, judge_settings: {}, settings: {},
                 benchmarks: [harmful_refusal, over_refusal],
                 checkpoint_every: null}  # N: also evaluate the policy every N steps
    matrix: {}                  # see drirl.matrix
    baselines: []               # preset names from registry.yaml

Every error names the file, the field path, the bad value and the allowed values.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drirl.cells import CellConfig, resolve_cell
from drirl.components import warn_remote_code
from drirl.errors import ConfigError
from drirl.matrix import expand_matrix
from drirl.plugin_manager import Plugins

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "model": "embedded",
    "trust_remote_code": False,
    "seed": 0,
    "optimizer_seed": None,
    "categories": "all",
    "data": {"train_per_category": None, "eval_per_category": None},
    "reward": {"learner": "bradley_terry", "settings": {}},
    "optimizer": "grpo_s",
    "training": {},
    "scaler": "none",
    "optimizer_settings": {},
    "warm_start": None,
    "scaler_settings": {},
    "scaler_combine": "product",
    "scaler_weights": None,
    "evaluation": {
        "judge": "refusal_phrases",
        "judge_settings": {},
        "benchmarks": ["harmful_refusal", "over_refusal"],
        "settings": {},
        "checkpoint_every": None,
    },
    "matrix": {},
    "baselines": [],
}
NESTED_KEYS = {
    key: list(value) for key, value in DEFAULTS.items() if isinstance(value, dict)
}
NESTED_KEYS.pop("training")
NESTED_KEYS.pop("scaler_settings")
NESTED_KEYS.pop("optimizer_settings")
NESTED_KEYS.pop("matrix")


@dataclass
class Experiment:
    """A loaded experiment: its file, the merged base fields and the validated cells."""

    file: Path | None
    name: str
    raw: dict[str, Any]
    cells: list[CellConfig] = field(default_factory=list)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file with ``yaml.safe_load``; malformed YAML names the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("experiment file not found", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"malformed YAML{where}: {getattr(exc, 'problem', exc)}", file=path
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"file is not valid UTF-8 (byte offset {exc.start})", file=path
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            "an experiment must be a YAML mapping", file=path, value=type(data).__name__
        )
    return data


def merge_defaults(raw: dict[str, Any], file: str | Path | None) -> dict[str, Any]:
    """Return the defaults overlaid with ``raw``; unknown keys raise."""
    for key in raw:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), list(DEFAULTS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown field{hint}",
                file=file,
                field=key,
                value=key,
                allowed=list(DEFAULTS),
            )
    merged = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key in NESTED_KEYS:
            if not isinstance(value, dict):
                raise ConfigError(
                    "must be a mapping", file=file, field=key, value=value
                )
            for sub in value:
                if sub not in NESTED_KEYS[key]:
                    raise ConfigError(
                        "unknown field",
                        file=file,
                        field=f"{key}.{sub}",
                        value=sub,
                        allowed=NESTED_KEYS[key],
                    )
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def _is_file_name(text: str) -> bool:
    if text.strip() in (".", ".."):
        return False
    return not any(char in "/\\" or ord(char) < 32 or ord(char) == 127 for char in text)


def load_experiment(
    source: str | Path | dict[str, Any],
    plugins: Plugins,
    *,
    file: str | Path | None = None,
) -> Experiment:
    """Load, expand and validate an experiment from a YAML file or an already parsed mapping."""
    if isinstance(source, dict):
        raw = source
    else:
        file = Path(source)
        raw = read_yaml(file)
    base = merge_defaults(raw, file)
    if not isinstance(base["name"], str) or not base["name"].strip():
        raise ConfigError(
            "must be a non-empty string", file=file, field="name", value=base["name"]
        )
    if not _is_file_name(base["name"]):
        raise ConfigError(
            "must not contain a path separator or a control character, or be '.' or "
            "'..', so that it can name a file",
            file=file,
            field="name",
            value=base["name"],
        )
    baselines = base["baselines"]
    if not isinstance(baselines, list):
        raise ConfigError(
            "must be a list of preset names",
            file=file,
            field="baselines",
            value=baselines,
            allowed=sorted(plugins.presets),
        )
    cells = expand_matrix(base["matrix"], baselines, plugins.presets, file=file)
    experiment = Experiment(
        file=Path(file) if file else None, name=base["name"], raw=base
    )
    experiment.cells = [resolve_cell(cell, base, plugins, file) for cell in cells]
    remote_code = {cell.model for cell in experiment.cells if cell.trust_remote_code}
    for model in sorted(remote_code):
        warn_remote_code(model)
    return experiment
