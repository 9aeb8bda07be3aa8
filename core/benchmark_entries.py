"""The entries of ``evaluation.benchmarks``: names, one-key mappings and lm-eval tasks.

An entry is one of:

- a drirl benchmark name (``harmful_refusal``);
- a one-key mapping from a benchmark name to its own settings
  (``{user_file: {path: prompts.csv, prompt_column: text, expect: refuse}}``);
- the name of a task in lm-eval's own collection (``gsm8k``), alone or as a one-key mapping
  with the settings of the ``lm_eval`` benchmark (``{mmlu: {num_fewshot: 5}}``).

``evaluation.settings`` contains settings shared by every listed benchmark. A benchmark takes
the shared fields that its Settings class has, and its own mapping overrides them. A shared
field that no listed benchmark has raises, so a misspelled one is still reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drirl.errors import ConfigError, closest_match
from drirl.plugin_manager import Plugins
from drirl.settings import build_settings

LM_EVAL_BENCHMARK = "lm_eval"


@dataclass(frozen=True)
class BenchmarkEntry:
    """One resolved entry: its label in the run, the benchmark it runs and the settings.

    ``label`` is unique within an experiment. It is the benchmark name, the lm-eval task
    name for lm-eval tasks, and ``<benchmark>:<name>`` for a benchmark that has a ``name``
    setting (``user_file:my_prompts``), so one benchmark can be listed with several files.
    """

    label: str
    component: str
    settings: Any


def _is_path_setting(key: str) -> bool:
    return key == "path" or key.endswith("_file")


def _resolve_paths(values: dict[str, Any], file: str | Path | None) -> dict[str, Any]:
    """Make relative file settings relative to the experiment file's folder."""
    if file is None:
        return values
    base = Path(file).resolve().parent
    resolved = dict(values)
    for key, value in values.items():
        if _is_path_setting(key) and isinstance(value, str) and value.strip():
            path = Path(value).expanduser()
            if not path.is_absolute():
                resolved[key] = str(base / path)
    return resolved


def _split_entry(
    entry: Any, file: str | Path | None, where: str
) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str) and entry.strip():
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        name, own = next(iter(entry.items()))
        if own is None:
            own = {}
        if not isinstance(name, str) or not isinstance(own, dict):
            raise ConfigError(
                "a benchmark mapping must map a benchmark name to a mapping of settings",
                file=file,
                field=where,
                value=entry,
            )
        return name, own
    raise ConfigError(
        "must be a benchmark name or a one-key mapping {name: {settings}}",
        file=file,
        field=where,
        value=entry,
    )


def _component_for(
    name: str, own: dict[str, Any], plugins: Plugins, file: Any, where: str
) -> tuple[str, dict[str, Any]]:
    """Return the registered benchmark that runs ``name`` and its own settings."""
    known = plugins.registry("benchmark").names()
    if name in known:
        return name, own
    from drirl.lm_eval_runner import lm_eval_task_names

    if name in lm_eval_task_names():
        if "task" in own:
            raise ConfigError(
                f"lm-eval task {name!r} takes its task from the key; remove 'task'",
                file=file,
                field=f"{where}.{name}.task",
                value=own["task"],
            )
        return LM_EVAL_BENCHMARK, {"task": name, **own}
    suggestion = closest_match(name, known)
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    raise ConfigError(
        f"unknown benchmark: neither a drirl benchmark nor an lm-eval task.{hint} "
        "Run `drirl plugins` for drirl benchmarks and `lm-eval ls tasks` for lm-eval tasks",
        file=file,
        field=where,
        value=name,
        allowed=known,
    )


def _label(component: str, settings: Any) -> str:
    if component == LM_EVAL_BENCHMARK:
        return str(settings.task)
    name = getattr(settings, "name", None)
    if isinstance(name, str):
        return f"{component}:{name}"
    return component


def resolve_benchmarks(
    entries: Any,
    shared: dict[str, Any] | None,
    plugins: Plugins,
    *,
    file: str | Path | None,
    locate: Callable[[str], str] = lambda path: path,
    require_shared_used: bool = True,
) -> list[BenchmarkEntry]:
    """Resolve and validate every entry of ``evaluation.benchmarks``.

    ``locate`` turns a field path into the text errors show (with the matrix cell it came
    from). Errors name the file, the field, the bad value and the allowed values. With
    ``require_shared_used`` false, a shared setting that no listed benchmark takes is
    ignored instead of raising.
    """
    field_path = "evaluation.benchmarks"
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            "must be a non-empty list of benchmark names",
            file=file,
            field=locate(field_path),
            value=entries,
            allowed=plugins.registry("benchmark").names(),
        )
    if shared is not None and not isinstance(shared, dict):
        raise ConfigError(
            "must be a mapping of settings shared by the benchmarks",
            file=file,
            field=locate("evaluation.settings"),
            value=shared,
        )
    shared = dict(shared or {})
    used_shared: set[str] = set()
    resolved: list[BenchmarkEntry] = []
    for index, entry in enumerate(entries):
        where = locate(f"{field_path}[{index}]")
        name, own = _split_entry(entry, file, where)
        component, own = _component_for(name, own, plugins, file, where)
        settings_cls = plugins.get("benchmark", component).Settings
        accepted = {f.name for f in dataclasses.fields(settings_cls)}
        values = {key: value for key, value in shared.items() if key in accepted}
        used_shared.update(values)
        values.update(own)
        settings = build_settings(
            settings_cls,
            _resolve_paths(values, file),
            file=file,
            field=where if own else locate("evaluation.settings"),
            component=f"benchmark {name!r}",
        )
        label = _label(component, settings)
        if any(item.label == label for item in resolved):
            raise ConfigError(
                f"benchmark {label!r} is listed twice; list it once, or give each "
                "entry a distinct name setting",
                file=file,
                field=where,
                value=entry,
            )
        resolved.append(BenchmarkEntry(label, component, settings))

    unused = sorted(set(shared) - used_shared)
    if unused and require_shared_used:
        raise ConfigError(
            "unknown setting: no listed benchmark takes it",
            file=file,
            field=locate(f"evaluation.settings.{unused[0]}"),
            value=unused[0],
            allowed=sorted(
                {
                    f.name
                    for item in resolved
                    for f in dataclasses.fields(
                        plugins.get("benchmark", item.component).Settings
                    )
                }
            ),
        )
    return resolved
