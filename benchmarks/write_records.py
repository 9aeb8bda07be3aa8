"""Render a pytest-benchmark JSON file as benchmarks/BENCHMARKS.md.

Usage: python benchmarks/write_records.py RESULTS.json [MORE.json ...] benchmarks/BENCHMARKS.md

Several result files (suites run one after another) become one table, in the order given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The targets from the design: (extra_info key, comparison, bound, what it measures).
TARGETS = (
    ("ratio_to_grpo", "<=", 1.05, "GRPO-S step time / GRPO step time"),
    ("throughput_ratio", ">=", 5.0, "multihead / separate reward scoring throughput"),
    ("model_memory_ratio", "<=", 0.2, "multihead / separate reward model memory"),
    ("ratio_to_plain", "<=", 1.10, "drirl eval time / plain generate loop time"),
    ("minutes", "<", 15.0, "quickstart wall time in minutes"),
)


def targets(results: dict) -> list[str]:
    """Return the Markdown lines of the targets table: measured value, bound, met or not."""
    found = {
        key: value
        for bench in results.get("benchmarks", [])
        for key, value in bench.get("extra_info", {}).items()
    }
    lines = ["| measure | value | target | met |", "|---|---|---|---|"]
    for key, comparison, bound, label in TARGETS:
        if key not in found:
            continue
        value = found[key]
        met = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}
        verdict = "yes" if met[comparison] else "no"
        lines.append(f"| {label} | {value} | {comparison} {bound} | {verdict} |")
    return [*lines, ""] if len(lines) > 2 else []


def render(results: dict) -> str:
    """Return the Markdown page: the machine, the versions, and one row per benchmark."""
    machine = results.get("machine_info", {})
    lines = [
        "# Benchmark records",
        "",
        "Written by `make benchmark` (pytest-benchmark); times in milliseconds.",
        "Each suite's docstring in benchmarks/ says what it measures and its target.",
        "In `test_grpo_step_time` a round trains GRPO and GRPO-S for one step each (model load",
        "and save included, order alternating); `median_step_s_*` are medians of TRL's logged",
        "step times, and `ratio_to_grpo` is the median over rounds of GRPO-S's step time",
        "divided by GRPO's in the same round.",
        "",
        f"- Recorded: {results.get('datetime', 'unknown')}",
        f"- Machine: {machine.get('cpu', {}).get('brand_raw', 'unknown CPU')}, "
        f"{machine.get('cpu', {}).get('count', '?')} logical CPUs, "
        f"Python {machine.get('python_version', '?')}",
        "",
        *targets(results),
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
    """Read the JSON files named first and write the page named last."""
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    documents = [
        json.loads(Path(name).read_text(encoding="utf-8")) for name in argv[:-1]
    ]
    results = dict(documents[0])
    results["benchmarks"] = [b for d in documents for b in d.get("benchmarks", [])]
    Path(argv[-1]).write_text(render(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
