"""Stage outputs keyed by a hash of their inputs, written atomically.

Each stage writes into ``<run>/stages/<stage>/<key>/``. The folder is built under a
temporary name and renamed into place only when the stage has finished, so a folder that
exists is complete. An interrupted run therefore redoes only the unfinished stage, and cells
with the same inputs (one reward model for several optimizers) share the output.

In a run with several processes (see ``drirl.distributed``) every process calls ``run``
for the same stages in the same order. A stage runs on the main process alone while the
others wait, or, when ``collective`` is set (training), on every process with one shared
temporary folder. Only the main process writes the stage record and renames the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drirl.atomic import atomic_folder, to_jsonable, write_json_atomic
from drirl.distributed import (
    broadcast_from_main,
    is_distributed,
    is_main_process,
    shared_atomic_folder,
)
from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

DONE_FILE = "stage.json"


def stage_key(inputs: dict[str, Any]) -> str:
    """Return a short stable hash of a stage's inputs (dataclasses, paths and plain values)."""
    text = json.dumps(to_jsonable(inputs), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class StageStore:
    """The stage folders of one run."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / "stages"

    def path(self, stage: str, key: str) -> Path:
        """Return the folder of a finished stage output."""
        return self.root / stage / key

    def is_done(self, stage: str, key: str) -> bool:
        """Return whether the stage output exists and finished."""
        return (self.path(stage, key) / DONE_FILE).is_file()

    def run(
        self,
        stage: str,
        inputs: dict[str, Any],
        work: Callable[[Path], dict[str, Any] | None],
        *,
        collective: bool = False,
    ) -> tuple[Path, bool]:
        """Run ``work(tmp_dir)`` unless the output exists; return (folder, reused).

        ``work`` writes everything into the folder it is given and may return a summary
        that is stored in ``stage.json`` beside the inputs. In a run with several
        processes, ``work`` runs on the main process only, unless ``collective`` is set:
        then every process calls it with the same folder, and the summary of the main
        process is stored. Every process returns once the finished folder is in place.
        """
        key = stage_key(inputs)
        final = self.path(stage, key)
        # The main process decides for all, so that no process skips a stage that the
        # main process is about to run and then misses its barriers.
        if broadcast_from_main(self.is_done(stage, key)):
            logger.info("stage %s %s: reusing %s", stage, key, final)
            return final, True
        if collective:
            self._run_collective(stage, key, inputs, work)
        elif not is_distributed():
            self._run_here(stage, key, inputs, work)
        else:
            self._run_on_main(stage, key, inputs, work)
        return final, False

    def _remove_stale(self, stage: str, key: str) -> None:
        folder = self.root / stage
        if folder.is_dir():
            for stale in folder.glob(f"{key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def _record(
        self,
        stage: str,
        key: str,
        inputs: dict[str, Any],
        summary: dict[str, Any] | None,
        started: float,
    ) -> dict[str, Any]:
        return {
            "stage": stage,
            "key": key,
            "inputs": inputs,
            "summary": summary,
            "seconds": round(time.monotonic() - started, 1),
        }

    def _run_here(
        self,
        stage: str,
        key: str,
        inputs: dict[str, Any],
        work: Callable[[Path], dict[str, Any] | None],
    ) -> None:
        self._remove_stale(stage, key)
        started = time.monotonic()
        with atomic_folder(self.path(stage, key)) as tmp:
            summary = work(tmp)
            record = self._record(stage, key, inputs, summary, started)
            write_json_atomic(tmp / DONE_FILE, record)

    def _run_on_main(
        self,
        stage: str,
        key: str,
        inputs: dict[str, Any],
        work: Callable[[Path], dict[str, Any] | None],
    ) -> None:
        # The main process sends None when the stage finished, or else the error, so
        # the waiting processes stop with it instead of reading a missing folder.
        if is_main_process():
            try:
                self._run_here(stage, key, inputs, work)
            except BaseException as exc:
                broadcast_from_main(f"{type(exc).__name__}: {exc}")
                raise
            broadcast_from_main(None)
            return
        failure = broadcast_from_main(None)
        if failure is not None:
            raise DrirlError(
                f"stage {stage} {key} failed on the main process ({failure}). Its log "
                "shows the details, and rerunning the same command resumes the run"
            )

    def _run_collective(
        self,
        stage: str,
        key: str,
        inputs: dict[str, Any],
        work: Callable[[Path], dict[str, Any] | None],
    ) -> None:
        main = is_main_process()
        if main:
            self._remove_stale(stage, key)
        started = time.monotonic()
        with shared_atomic_folder(self.path(stage, key)) as tmp:
            summary = work(tmp)
            if main:
                record = self._record(stage, key, inputs, summary, started)
                write_json_atomic(tmp / DONE_FILE, record)

    def seconds(self, folder: Path) -> float:
        """Return how long the finished stage in ``folder`` took when it ran."""
        record = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
        return float(record.get("seconds", 0.0))

    def summary(self, stage: str, key_or_path: str | Path) -> dict[str, Any]:
        """Read the summary stored with a finished stage."""
        folder = (
            Path(key_or_path)
            if isinstance(key_or_path, Path)
            else self.path(stage, key_or_path)
        )
        return (
            json.loads((folder / DONE_FILE).read_text(encoding="utf-8")).get("summary")
            or {}
        )
