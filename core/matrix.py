"""Expansion of an experiment's ``matrix:`` into cells.

The matrix contains list-valued axes keyed by dotted field paths (``optimizer``,
``training.learning_rate``, ``seed`` ...), plus two optional lists of mappings:

- ``exclude``: drop every combination that matches all key/value pairs of an entry;
- ``include``: add one cell per entry (an ``id`` key names the cell).

Baseline presets join as cells too: each preset is crossed with the axes it does not set.
An exclude entry that matches no combination is an error, because it is almost always a typo.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl.errors import ConfigError

RESERVED_KEYS = ("include", "exclude")
# Characters allowed in a cell id, which names a file in the run folder.
SAFE_ID = re.compile(r"[A-Za-z0-9_.+=-]+")


@dataclass
class Cell:
    """One combination to run: its id, its resolved matrix values and where each came from."""

    id: str
    settings: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)
    preset: str | None = None


def _slug(value: Any) -> str:
    text = str(value).replace("*", "x")
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_") or "cell"


def cell_id(settings: dict[str, Any]) -> str:
    """Build a readable, file-name-safe id from a cell's values."""
    return "-".join(_slug(v) for v in settings.values()) or "default"


def _matches(settings: dict[str, Any], entry: dict[str, Any]) -> bool:
    return all(k in settings and settings[k] == v for k, v in entry.items())


def _entry_list(
    matrix: dict[str, Any], key: str, file: str | Path | None
) -> list[dict]:
    entries = matrix.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(
            "must be a list of mappings of field path to value",
            file=file,
            field=f"matrix.{key}",
            value=entries,
        )
    for i, entry in enumerate(entries):
        if not entry:
            raise ConfigError("entry is empty", file=file, field=f"matrix.{key}[{i}]")
        for name in entry:
            if not isinstance(name, str):
                raise ConfigError(
                    "a key must be a field path such as training.learning_rate",
                    file=file,
                    field=f"matrix.{key}[{i}]",
                    value=name,
                )
    return entries


def _axes(matrix: dict[str, Any], file: str | Path | None) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, values in matrix.items():
        if key in RESERVED_KEYS:
            continue
        if not isinstance(key, str):
            raise ConfigError(
                "a matrix key must be a field path such as training.learning_rate",
                file=file,
                field="matrix",
                value=key,
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(
                "a matrix axis must be a non-empty list of values",
                file=file,
                field=f"matrix.{key}",
                value=values,
            )
        axes[key] = values
    return axes


def _product(axes: dict[str, list[Any]]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    combos = []
    keys = list(axes)
    for indices in itertools.product(*(range(len(axes[k])) for k in keys)):
        settings = {k: axes[k][i] for k, i in zip(keys, indices)}
        origins = {k: f"matrix.{k}[{i}]" for k, i in zip(keys, indices)}
        combos.append((settings, origins))
    return combos


def expand_matrix(
    matrix: dict[str, Any] | None,
    baselines: list[str] | None,
    presets: dict[str, dict[str, Any]],
    *,
    file: str | Path | None = None,
) -> list[Cell]:
    """Expand the matrix and baselines into cells, in a stable order (baselines first)."""
    matrix = matrix or {}
    if not isinstance(matrix, dict):
        raise ConfigError("must be a mapping", file=file, field="matrix", value=matrix)
    axes = _axes(matrix, file)
    excludes = _entry_list(matrix, "exclude", file)
    includes = _entry_list(matrix, "include", file)

    combos = _product(axes) if axes else []
    for i, entry in enumerate(excludes):
        kept = [(s, o) for s, o in combos if not _matches(s, entry)]
        if len(kept) == len(combos):
            raise ConfigError(
                "exclude entry matches no combination of the matrix axes",
                file=file,
                field=f"matrix.exclude[{i}]",
                value=entry,
                allowed=[f"{k}: {v}" for k, v in axes.items()],
            )
        combos = kept

    cells: list[Cell] = []
    for i, name in enumerate(baselines or []):
        if not isinstance(name, str) or name not in presets:
            raise ConfigError(
                "unknown baseline preset",
                file=file,
                field=f"baselines[{i}]",
                value=name,
                allowed=sorted(presets),
            )
        preset = dict(presets[name])
        free_axes = {k: v for k, v in axes.items() if k not in preset}
        for settings, origins in _product(free_axes) if free_axes else [({}, {})]:
            merged = {**preset, **settings}
            preset_origins = {k: f"baselines[{i}] ({name})" for k in preset}
            cell_name = "-".join([name] + [_slug(v) for v in settings.values()])
            cells.append(
                Cell(cell_name, merged, {**preset_origins, **origins}, preset=name)
            )

    for settings, origins in combos:
        cells.append(Cell(cell_id(settings), settings, origins))

    for i, entry in enumerate(includes):
        entry = dict(entry)
        explicit_id = entry.pop("id", None)
        origins = {k: f"matrix.include[{i}].{k}" for k in entry}
        if explicit_id is not None:
            _check_safe_id(str(explicit_id), file, f"matrix.include[{i}].id")
        cells.append(
            Cell(str(explicit_id) if explicit_id else cell_id(entry), entry, origins)
        )

    if not cells:
        cells.append(Cell("default", {}, {}))
    _check_unique_ids(cells, file)
    return cells


def _check_safe_id(cell_id: str, file: str | Path | None, where: str) -> None:
    """Reject an include ``id`` that is not a plain file name.

    A cell id names the file ``<run>/cells/<id>.json``, so an id such as ``../x`` or
    ``/tmp/x`` would write outside the run folder.
    """
    if cell_id in (".", "..") or not SAFE_ID.fullmatch(cell_id):
        raise ConfigError(
            "invalid cell id: it names a file in the run folder, so use only letters, "
            "digits and _ . + = -",
            file=file,
            field=where,
            value=cell_id,
        )


def _check_unique_ids(cells: list[Cell], file: str | Path | None) -> None:
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.id in seen:
            raise ConfigError(
                f"two matrix cells get the same id {cell.id!r} (cells {seen[cell.id]} and "
                f"{index}); give include entries distinct `id` values",
                file=file,
                field="matrix",
            )
        seen[cell.id] = index
