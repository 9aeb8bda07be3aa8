"""Benchmark responses kept per run, so that a second judge rates them without generating.

A matrix over ``evaluation.judge`` evaluates each policy once per judge. The judged
benchmarks decode greedily, so every judge would rate the same responses, and generating
them is most of an evaluation's time. With ``RunContext.generation_cache`` set (``drirl
run`` sets ``<run>/generations``), the responses of one benchmark for one policy
are written there once as JSON lines and read back by the next judge.

The file name is a hash of the model folder, the prompts with their record ids and the
generation settings. The model folder enters as its resolved path and the name, size and
modification time of each file in it. So rewritten weights or other settings generate
again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drirl.atomic import to_jsonable
from drirl.components import Record
from drirl.lm_eval_runner import weights_signature, write_jsonl

logger = logging.getLogger(__name__)

GENERATIONS_DIR = "generations"

Pairs = list[tuple[Record, str]]


def generation_key(
    model_path: Path, records: Sequence[Record], settings: dict[str, Any]
) -> str:
    """Return the hash that names the cached responses of these inputs."""
    folder = Path(model_path).resolve()
    inputs = {
        "model": [str(folder), weights_signature(folder)],
        "prompts": [[record.id, record.prompt] for record in records],
        "settings": to_jsonable(settings),
    }
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _read_pairs(path: Path, records: Sequence[Record]) -> Pairs | None:
    """Return the cached pairs, or None when the file does not match ``records``."""
    try:
        rows = [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable cached responses %s: %s", path, error)
        return None
    ids = [row.get("id") for row in rows if isinstance(row, dict)]
    if ids != [record.id for record in records]:
        logger.warning(
            "ignoring cached responses %s: their record ids differ from the prompts",
            path,
        )
        return None
    if not all(isinstance(row.get("response"), str) for row in rows):
        logger.warning("ignoring cached responses %s: a row has no response text", path)
        return None
    return [(record, row["response"]) for record, row in zip(records, rows)]


def cached_generate(
    cache_dir: Path | None,
    model_path: Path,
    records: Sequence[Record],
    settings: dict[str, Any],
    generate: Callable[[], Pairs],
) -> Pairs:
    """Return ``generate()``'s (record, response) pairs, from the cache when present.

    Without ``cache_dir`` this calls ``generate`` every time. ``settings`` are the
    generation settings that change the responses (the task, token budget, batch size
    and backend). They enter the key with the model and the prompts.
    """
    if cache_dir is None:
        return generate()
    path = Path(cache_dir) / f"{generation_key(model_path, records, settings)}.jsonl"
    if path.is_file():
        pairs = _read_pairs(path, records)
        if pairs is not None:
            logger.info(
                "reusing %d responses generated for %s (%s)",
                len(pairs),
                model_path,
                path.name,
            )
            return pairs
    pairs = generate()
    write_jsonl(
        ({"id": record.id, "response": response} for record, response in pairs),
        path,
    )
    return pairs
