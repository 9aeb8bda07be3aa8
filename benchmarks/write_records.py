"""Render a pytest-benchmark JSON file as benchmarks/BENCHMARKS.md.

Usage: python benchmarks/write_records.py RESULTS.json benchmarks/BENCHMARKS.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def render(results: dict) -> str:
    """Return the Markdown page: the machine, the versions, and one row per benchmark."""
    machine = results.get("machine_info", {})
    lines = [
        "# Benchmark records",
        "",
        "Written by `make benchmark` (pytest-benchmark) from one run; times in milliseconds.",
        "Each suite's docstring in benchmarks/ says what it measures and its target.",
        "In `test_grpo_step_time` a round is a whole one-step training (model load and save",
        "included); `median_step_s` is the median of TRL's logged step times over the rounds,",
        "and `ratio_to_grpo` divides GRPO-S's by GRPO's.",
        "",
        f"- Recorded: {results.get('datetime', 'unknown')}",
        f"- Machine: {machine.get('cpu', {}).get('brand_raw', 'unknown CPU')}, "
        f"{machine.get('cpu', {}).get('count', '?')} logical CPUs, "
        f"Python {machine.get('python_version', '?')}",
        "",
        "| benchmark | median | IQR | min | max | rounds | extra |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench in results.get("benchmarks", []):
        stats = bench["stats"]
        lines.append(
            f"| {bench['name']} | {stats['median'] * 1e3:.3f} | {stats['iqr'] * 1e3:.3f} | "
            f"{stats['min'] * 1e3:.3f} | {stats['max'] * 1e3:.3f} | {stats['rounds']} | "
            + ", ".join(f"{k}={v}" for k, v in bench.get("extra_info", {}).items())
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Read the JSON file named first and write the page named second."""
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    Path(argv[1]).write_text(render(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
