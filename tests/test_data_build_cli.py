"""`drirl data build --template cod,cot` and `drirl data compare` with the embedded model.

The embedded SmolLM2-135M-Instruct writes the demonstrations, limited to 48 new tokens on 2
prompts of one category. It may not end in a refusal, which the compared share reports.
"""

from __future__ import annotations

import json

import pytest
import torch

from drirl.cli import main
from drirl.data_build_log import RECORDS_FILE, read_build_records


@pytest.fixture(scope="module")
def cod_cot_build(tmp_path_factory, embedded_policy):
    out = tmp_path_factory.mktemp("cod_cot")
    # Many test processes share two CPU cores here, and competing OpenMP threads slow
    # small-batch generation several times over; one thread avoids that.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(
            [
                "data",
                "build",
                "--categories",
                "insult",
                "--template",
                "cod,cot",
                "--per-category",
                "2",
                "--set",
                f"model={embedded_policy}",
                "--set",
                "max_new_tokens=48",
                "--out",
                str(out),
                "--quiet",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    return code, out


def test_cod_cot_build_exit_code(cod_cot_build):
    code, _ = cod_cot_build
    assert code == 0


@pytest.mark.parametrize("template", ["cod", "cot"])
def test_cod_cot_build_records(cod_cot_build, template):
    _, out = cod_cot_build
    records = read_build_records(out / template / RECORDS_FILE)
    assert [r.id for r in records] == ["insult-h01", "insult-h02"]
    assert all(r.template == template for r in records)
    assert all(0 < r.tokens <= 48 for r in records)
    assert all(r.seconds > 0 for r in records)
    assert all(r.demonstration for r in records)


def test_cod_cot_compare_table(cod_cot_build):
    _, out = cod_cot_build
    table = (out / "compare.md").read_text()
    assert "On the 2 prompt(s) that every build generated." in table
    rows = [line for line in table.splitlines() if line.startswith("| co")]
    assert [row.split("|")[1].strip() for row in rows] == ["cod", "cot"]
    for template, row in zip(["cod", "cot"], rows, strict=True):
        records = read_build_records(out / template / RECORDS_FILE)
        refusals = sum(r.refusal_ok for r in records)
        assert row.split("|")[2].strip() == "2"
        assert row.rstrip(" |").endswith(f"({refusals}/2)")


def test_cod_cot_dataset_matches_refusals(cod_cot_build):
    _, out = cod_cot_build
    for template in ("cod", "cot"):
        summary = json.loads((out / template / "summary.json").read_text())
        refusals = summary["categories"][0]["refusals"]
        lines = (out / template / "dataset.jsonl").read_text().splitlines()
        assert len(lines) == min(refusals, 2)
        assert summary["short"] == ([] if refusals == 2 else ["insult"])


def test_data_compare_command(cod_cot_build, capsys):
    _, out = cod_cot_build
    target = out / "again.md"
    code = main(
        ["data", "compare", str(out / "cod"), str(out / "cot"), "--out", str(target)]
    )
    assert code == 0
    assert target.read_text() == (out / "compare.md").read_text()
    assert "| cot |" in capsys.readouterr().out


def test_data_compare_rejects_other_folder(tmp_path, capsys):
    code = main(["data", "compare", str(tmp_path), str(tmp_path)])
    assert code == 2
    assert "build.json is missing" in capsys.readouterr().err


def test_data_build_bad_setting(tmp_path, capsys):
    code = main(
        [
            "data",
            "build",
            "--categories",
            "insult",
            "--set",
            "max_new_tokenz=4",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "max_new_tokenz" in capsys.readouterr().err


def test_data_build_unknown_category(tmp_path, capsys):
    code = main(["data", "build", "--categories", "insults", "--out", str(tmp_path)])
    assert code == 2
    assert "Did you mean 'insult'?" in capsys.readouterr().err
