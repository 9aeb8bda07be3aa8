"""`drirl run` killed with SIGKILL, then resumed: the artifacts end complete and uncorrupted.

One tiny experiment (one category, one harmful and one benign prompt, one GRPO step of four
short completions) runs in `drirl run` subprocesses. A clean run goes straight through. A
second run folder goes through a chain of runs:

1. killed once ``stages/optimize/<key>.tmp-*`` exists (training has started);
2. resumed, then killed once ``stages/evaluate/<key>.tmp-*`` exists (evaluation started);
3. resumed with DRIRL_TEST_PAUSE_AT=report, which makes write_report sleep after
   results.json, and killed during that sleep (the report is half written);
4. resumed to the end.

The final artifacts of the chain are compared with the clean run's: every metric (value,
sample count and confidence interval) of the cell must be equal. That is true because every
stage is seeded (TRL's seed for training and sampling, greedy generation for evaluation,
a seeded bootstrap for the intervals).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from drirl.atomic import TEMP_FILE, TEMP_FOLDER

pytestmark = pytest.mark.slow

EXPERIMENT = {
    "name": "kill",
    "categories": ["insult"],
    "data": {"train_per_category": 1, "eval_per_category": 1},
    "reward": {"learner": "bradley_terry", "settings": {"max_new_tokens": 8}},
    "optimizer": "grpo",
    "training": {
        "steps": 1,
        "batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 8,
    },
    "evaluation": {"settings": {"max_new_tokens": 8}},
}
# Upper bound on one phase of the chain, so a hung run fails the test instead of the suite.
# One whole run of this experiment took 7.5 min on 2 CPU cores at load average 10, so the
# limit leaves room on a busy machine.
PHASE_TIMEOUT_S = 900


def start_run(experiment: Path, out: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "drirl.cli", "run", str(experiment), "--out", str(out)]
        + ["--quiet"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], what: str) -> int:
    """Send SIGKILL to ``process`` as soon as ``ready()``; return its exit status."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            pytest.fail(
                f"drirl run exited with {process.returncode} before {what}:\n"
                f"{process.stderr.read()[-3000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not happen within {PHASE_TIMEOUT_S} s")
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    return process.returncode


def finish(process: subprocess.Popen) -> None:
    try:
        _, stderr = process.communicate(timeout=PHASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-3000:]


def temporary_folder(out: Path, stage: str) -> Callable[[], bool]:
    return lambda: any((out / "stages" / stage).glob("*.tmp-*"))


def done_stages(out: Path, stage: str) -> list[Path]:
    return sorted((out / "stages" / stage).glob("*/stage.json"))


def log_since(log: Path, offset: int) -> str:
    return log.read_text(encoding="utf-8")[offset:]


@pytest.fixture(scope="module")
def experiment() -> Iterator[Path]:
    # A folder of its own rather than tmp_path_factory's: pytest sessions running at the
    # same time on the machine delete each other's older numbered tmp_path folders.
    with tempfile.TemporaryDirectory(prefix="drirl-kill-") as folder:
        path = Path(folder) / "kill.yaml"
        path.write_text(yaml.safe_dump(EXPERIMENT), encoding="utf-8")
        yield path


@pytest.fixture(scope="module")
def clean(experiment) -> Path:
    out = experiment.parent / "clean"
    finish(start_run(experiment, out))
    return out


@pytest.fixture(scope="module")
def chain(experiment) -> dict:
    """Run the kill-and-resume chain; return what each phase left behind."""
    out = experiment.parent / "resumed"
    log = out / "run.log"
    seen: dict = {"out": out}

    status = kill_when(
        start_run(experiment, out), temporary_folder(out, "optimize"), "training"
    )
    seen["training"] = {
        "status": status,
        "reward_done": len(done_stages(out, "reward")),
        "optimize_done": len(done_stages(out, "optimize")),
    }

    offset = log.stat().st_size
    status = kill_when(
        start_run(experiment, out), temporary_folder(out, "evaluate"), "evaluation"
    )
    seen["evaluation"] = {
        "status": status,
        "log": log_since(log, offset),
        "optimize_done": len(done_stages(out, "optimize")),
        "evaluate_done": len(done_stages(out, "evaluate")),
    }

    offset = log.stat().st_size
    paused = start_run(experiment, out, DRIRL_TEST_PAUSE_AT="report")
    status = kill_when(
        paused, lambda: "DRIRL_TEST_PAUSE_AT=report" in log_since(log, offset), "report"
    )
    seen["report"] = {
        "status": status,
        "log": log_since(log, offset),
        "results": (out / "report" / "results.json").read_text(encoding="utf-8"),
        "markdown_written": (out / "report" / "report.md").exists(),
    }

    offset = log.stat().st_size
    finish(start_run(experiment, out))
    seen["final_log"] = log_since(log, offset)
    return seen


def results(out: Path) -> dict:
    return json.loads((out / "report" / "results.json").read_text(encoding="utf-8"))


def test_kill_training_exit_status(chain):
    assert chain["training"]["status"] == -signal.SIGKILL


def test_kill_training_keeps_reward(chain):
    assert chain["training"]["reward_done"] == 1
    assert chain["training"]["optimize_done"] == 0


def test_resume_after_training_kill(chain):
    log = chain["evaluation"]["log"]
    assert "reward models reused" in log
    assert "policy trained" in log
    assert "removed 1 temporary file(s)" in log


def test_kill_evaluation_keeps_policy(chain):
    assert chain["evaluation"]["status"] == -signal.SIGKILL
    assert chain["evaluation"]["optimize_done"] == 1


def test_resume_after_evaluation_kill(chain):
    log = chain["report"]["log"]
    assert "policy reused" in log
    assert "harmful_refusal: evaluating" in log or "over_refusal: evaluating" in log


def test_kill_report_half_written(chain):
    assert chain["report"]["status"] == -signal.SIGKILL
    assert json.loads(chain["report"]["results"])["cells"][0]["id"] == "default"
    assert chain["report"]["markdown_written"] is False


def test_resume_after_report_kill_reuses_stages(chain):
    log = chain["final_log"]
    finished = list((chain["out"] / "stages").glob("*/*/stage.json"))
    assert len(finished) >= 4  # at least reward, optimize and two evaluations
    assert log.count(": reusing ") == len(finished)
    assert " trained" not in log


def test_resumed_json_parses(chain):
    files = sorted(chain["out"].rglob("*.json"))
    assert len(files) >= 8
    for path in files:
        json.loads(path.read_text(encoding="utf-8"))


def test_resumed_no_temporaries(chain):
    found = [
        path
        for path in chain["out"].rglob("*")
        if TEMP_FILE.fullmatch(path.name) or TEMP_FOLDER.fullmatch(path.name)
    ]
    assert found == []


def test_resumed_report_complete(chain):
    report = chain["out"] / "report"
    for name in ("results.json", "results.csv", "report.md"):
        assert (report / name).stat().st_size > 0, name
    assert "| default |" in (report / "report.md").read_text(encoding="utf-8")


def test_resumed_metrics_equal_clean(chain, clean):
    resumed_cells = results(chain["out"])["cells"]
    clean_cells = results(clean)["cells"]
    assert [c["id"] for c in resumed_cells] == [c["id"] for c in clean_cells]
    assert resumed_cells[0]["metrics"] == clean_cells[0]["metrics"]


def test_resumed_stage_keys_equal_clean(chain, clean):
    assert (
        results(chain["out"])["cells"][0]["stages"]
        == results(clean)["cells"][0]["stages"]
    )
