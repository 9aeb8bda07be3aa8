"""Atomic file writes: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

# Names of the temporaries made by mkstemp and mkdtemp below (8 random characters).
TEMP_FILE = re.compile(r".+\.[A-Za-z0-9_]{8}\.tmp")
TEMP_FOLDER = re.compile(r".+\.tmp-[A-Za-z0-9_]{8}")


def _readable(path: str) -> None:
    # mkstemp creates files readable by the owner only; give them the usual mode instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, paths and tuples into plain JSON values, with sorted keys."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {
            str(k): to_jsonable(v)
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(to_jsonable(data), handle, indent=2, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to ``path`` through a temporary file and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` when the block finishes.

    The folder is created beside ``path`` and named ``<name>.tmp-*``. It is renamed into
    place only if the block raises nothing. On any exception, KeyboardInterrupt included, it
    is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: Path, *, finished_marker: str) -> list[Path]:
    """Remove the temporary files and folders that a killed process left under ``folder``.

    These are the ``<name>.<random>.tmp`` files of the writes above and the
    ``<name>.tmp-<random>`` folders of ``atomic_folder``. Folders that contain a file named
    ``finished_marker`` are finished outputs and are left untouched. A process that is still
    writing into ``folder`` would lose its temporaries, so only one process may use a folder
    at a time. Returns the removed paths.
    """
    removed: list[Path] = []
    for root, dirs, names in os.walk(folder):
        if finished_marker in names:
            dirs[:] = []
            continue
        for name in list(dirs):
            if TEMP_FOLDER.fullmatch(name):
                shutil.rmtree(Path(root, name), ignore_errors=True)
                removed.append(Path(root, name))
                dirs.remove(name)
        for name in names:
            if TEMP_FILE.fullmatch(name):
                Path(root, name).unlink(missing_ok=True)
                removed.append(Path(root, name))
    return removed
