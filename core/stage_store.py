"""Stage outputs keyed by a hash of their inputs, written atomically.

Each stage writes into ``<run>/stages/<stage>/<key>/``. The folder is built under a
temporary name and renamed into place only when the stage has finished, so a folder that
exists is complete. An interrupted run therefore redoes only the unfinished stage, and cells
with the same inputs (one reward model for several optimizers) share the output.
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
    ) -> tuple[Path, bool]:
        """Run ``work(tmp_dir)`` unless the output exists; return (folder, reused).

        ``work`` writes everything into the folder it is given and may return a summary
        that is stored in ``stage.json`` beside the inputs.
        """
        key = stage_key(inputs)
        final = self.path(stage, key)
        if self.is_done(stage, key):
            logger.info("stage %s %s: reusing %s", stage, key, final)
            return final, True
        if final.parent.is_dir():
            for stale in final.parent.glob(f"{key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        with atomic_folder(final) as tmp:
            summary = work(tmp)
            record = {
                "stage": stage,
                "key": key,
                "inputs": inputs,
                "summary": summary,
                "seconds": round(time.monotonic() - started, 1),
            }
            write_json_atomic(tmp / DONE_FILE, record)
        return final, False

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
