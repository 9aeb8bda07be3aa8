"""Wall time and peak memory of the quickstart (examples/quickstart.yaml, as `make demo`).

One round: `drirl run` in a child process on a fresh run folder, so nothing is reused.
The embedded model's safetensors conversion is cached beforehand and not counted. Peak
memory is the largest resident set of the child (ru_maxrss of the waited-for children).

Target: under 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from drirl.embedded import embedded_policy_path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_wall_time(benchmark, tmp_path):
    embedded_policy_path()
    command = [
        sys.executable,
        "-m",
        "drirl.cli",
        "run",
        str(ROOT / "examples" / "quickstart.yaml"),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, check=False)

    finished = benchmark.pedantic(run, rounds=1, iterations=1)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    benchmark.extra_info["peak_rss_mib"] = round(peak_kib / 1024)
    benchmark.extra_info["minutes"] = round(benchmark.stats.stats.median / 60, 1)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert (tmp_path / "run" / "report" / "report.md").is_file()
