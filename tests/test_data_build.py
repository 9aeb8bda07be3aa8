"""`drirl data build` logic: sources, duplicates, balancing, shortfalls and resuming.

These tests use ScriptedGenerator, a test generator that returns a chosen response per prompt
and counts its calls, because the counts checked here depend on which demonstrations end in
a refusal. The embedded model writes real demonstrations in test_data_build_cli.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from drirl.components import Generation, Generator, HarmCategory
from drirl.data_build import BuildSettings, build_dataset
from drirl.data_build_log import RECORDS_FILE, read_build_records
from drirl.data_sources import normalize_prompt
from drirl.data_templates import TEMPLATES, final_answer
from drirl.dataset import load_records
from drirl.errors import DatasetError, DrirlError

REFUSAL = (
    "Draft: wants insult -> harassment -> decline, offer help.\n"
    "I can't help with insulting them, because it is harassment. If you want, I can "
    "help you talk it through."
)
COMPLIANCE = (
    "Draft: wants insult -> write it.\nSure, here is a mean paragraph about them."
)


class ScriptedGenerator(Generator):
    """Returns COMPLIANCE for prompts containing a marker word, else REFUSAL."""

    name: ClassVar[str] = "scripted"

    def __init__(self, comply_marker: str = "COMPLY") -> None:
        super().__init__()
        self.comply_marker = comply_marker
        self.calls: list[str] = []

    def generate(self, messages: Sequence[dict[str, str]]) -> Generation:
        prompt = messages[-1]["content"]
        self.calls.append(prompt)
        text = COMPLIANCE if self.comply_marker in prompt else REFUSAL
        return Generation(text, len(text.split()), 0.01, "words")


@pytest.fixture()
def judge(plugins):
    return plugins.get("judge", "refusal_phrases")()


@pytest.fixture()
def known(plugins):
    return plugins.registry("harm_category").names()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def category_file(tmp_path: Path, name: str, prompts: list[str]) -> HarmCategory:
    rows = [
        {
            "id": f"{name}-h{i:02d}",
            "category": name,
            "kind": "harmful",
            "prompt": prompt,
            "demonstration": "placeholder",
            "split": "train",
        }
        for i, prompt in enumerate(prompts)
    ]
    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    return HarmCategory(name, f"{name} description", path)


def build(tmp_path, categories, generator, judge, **kwargs):
    settings = BuildSettings(
        categories=tuple(c.name for c in categories),
        out_dir=tmp_path / "out",
        **kwargs,
    )
    known = [c.name for c in categories]
    return build_dataset(
        settings, categories, known, generator, judge, show_progress=False
    )


def test_build_balanced_per_category(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", [f"alpha prompt {i}" for i in range(4)])
    beta = category_file(tmp_path, "beta", [f"beta prompt {i}" for i in range(3)])
    summary = build(tmp_path, [alpha, beta], ScriptedGenerator(), judge, per_category=2)
    records = load_records(tmp_path / "out" / "dataset.jsonl")
    assert [r.id for r in records] == ["alpha-h00", "alpha-h01", "beta-h00", "beta-h01"]
    assert all(r.kind == "harmful" for r in records)
    assert records[0].demonstration == REFUSAL
    assert summary.short_categories == []


def test_build_default_count_smallest_category(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", [f"alpha prompt {i}" for i in range(4)])
    beta = category_file(tmp_path, "beta", [f"beta prompt {i}" for i in range(3)])
    generator = ScriptedGenerator()
    summary = build(tmp_path, [alpha, beta], generator, judge)
    assert summary.needed == 3
    assert len(generator.calls) == 6
    assert len(load_records(tmp_path / "out" / "dataset.jsonl")) == 6


def test_build_short_category_reported(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", [f"alpha prompt {i}" for i in range(4)])
    beta = category_file(
        tmp_path, "beta", ["beta prompt 0", "beta COMPLY 1", "beta prompt 2"]
    )
    summary = build(tmp_path, [alpha, beta], ScriptedGenerator(), judge, per_category=4)
    short = {c.name: (c.refusals, c.needed) for c in summary.short_categories}
    # beta has 3 prompts, and one of them is not refused: 2 refusals of 4 needed.
    assert short == {"beta": (2, 4)}
    counts = {c.name: c.kept for c in summary.categories}
    assert counts == {"alpha": 2, "beta": 2}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- beta: 2 of 4 needed" in report
    assert "alpha: " not in report.split("## Short categories")[1].split("##")[0]


def test_build_top_up_replaces_failed(tmp_path, judge):
    beta = category_file(
        tmp_path, "beta", ["beta prompt 0", "beta COMPLY 1", "beta prompt 2"]
    )
    summary = build(
        tmp_path, [beta], ScriptedGenerator(), judge, per_category=2, top_up=True
    )
    records = load_records(tmp_path / "out" / "dataset.jsonl")
    assert [r.id for r in records] == ["beta-h00", "beta-h02"]
    assert summary.categories[0].generated == 3


def test_build_records_cost_fields(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", ["alpha prompt 0", "alpha COMPLY 1"])
    build(tmp_path, [alpha], ScriptedGenerator(), judge)
    records = read_build_records(tmp_path / "out" / RECORDS_FILE)
    assert [(r.id, r.refusal_ok) for r in records] == [
        ("alpha-h00", True),
        ("alpha-h01", False),
    ]
    assert records[0].tokens == len(REFUSAL.split())
    assert records[0].seconds == 0.01


def test_resume_generates_only_missing(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", [f"alpha prompt {i}" for i in range(5)])
    build(tmp_path, [alpha], ScriptedGenerator(), judge)
    log = tmp_path / "out" / RECORDS_FILE
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 5
    # Keep two complete records and half of the third, as a crash mid-write would.
    log.write_text("".join(lines[:2]) + lines[2][:25])

    counting = ScriptedGenerator()
    summary = build(tmp_path, [alpha], counting, judge)
    assert len(counting.calls) == 3
    assert all(f"alpha prompt {i}" in counting.calls[i - 2] for i in (2, 3, 4))
    assert summary.categories[0].reused == 2
    assert log.read_text().splitlines(keepends=True) == lines


def test_resume_rejects_other_template(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", ["alpha prompt 0"])
    build(tmp_path, [alpha], ScriptedGenerator(), judge, template="cod")
    with pytest.raises(DrirlError, match="different template"):
        build(tmp_path, [alpha], ScriptedGenerator(), judge, template="cot")


def test_sources_deduplicated(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", ["Alpha prompt 0.", "alpha prompt 1"])
    user = write_jsonl(
        tmp_path / "user.jsonl",
        [
            {"category": "alpha", "prompt": "  alpha   PROMPT 0 "},
            {"category": "alpha", "prompt": "alpha prompt 2"},
            {"category": "alpha", "prompt": "Alpha prompt 2!"},
        ],
    )
    generator = ScriptedGenerator()
    summary = build(tmp_path, [alpha], generator, judge, sources=("package", str(user)))
    assert len(summary.sources.duplicates) == 2
    assert [d.line for d, _ in summary.sources.duplicates] == [1, 3]
    assert len(generator.calls) == 3
    assert (
        "duplicate prompts dropped: 2" in (tmp_path / "out" / "report.md").read_text()
    )


def test_csv_source_read(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", ["alpha prompt 0"])
    user = tmp_path / "user.csv"
    user.write_text(
        'category,prompt,split\nalpha,"Roast my friend, hard",eval\n'
        "alpha,How do I bake bread?,train\n",
        encoding="utf-8-sig",  # with a byte order mark, as Excel writes CSV files
    )
    build(tmp_path, [alpha], ScriptedGenerator(), judge, sources=(str(user),))
    records = load_records(tmp_path / "out" / "dataset.jsonl")
    assert [(r.prompt, r.split) for r in records] == [
        ("Roast my friend, hard", "eval"),
        ("How do I bake bread?", "train"),
    ]
    assert records[0].id.startswith("alpha-")


@pytest.mark.parametrize(
    ("content", "suffix", "line", "message"),
    [
        ('{"category": "alpha"}\n', ".jsonl", 1, "missing field(s) prompt"),
        (
            '{"category": "alpha", "prompt": "a"}\n{"category": "alpah", "prompt": "b"}\n',
            ".jsonl",
            2,
            "Did you mean 'alpha'?",
        ),
        (
            '{"category": "alpha", "promt": "a"}\n',
            ".jsonl",
            1,
            "unknown field(s) 'promt'",
        ),
        (
            '\n{"category": "alpha", "prompt": "a", "split": "test"}\n',
            ".jsonl",
            2,
            "field 'split' is 'test'",
        ),
        ("{not json\n", ".jsonl", 1, "invalid JSON"),
        ('{"category": "alpha", "prompt": "   "}\n', ".jsonl", 1, "'prompt' is empty"),
        ("category,prompt\nalpha,a\nalpha,b,extra\n", ".csv", 3, "more values"),
        (
            '{"category": "alpha", "prompt": "' + "x" * 4001 + '"}\n',
            ".jsonl",
            1,
            "4001 characters",
        ),
    ],
)
def test_source_errors_name_line(tmp_path, judge, content, suffix, line, message):
    alpha = category_file(tmp_path, "alpha", ["alpha prompt 0"])
    user = tmp_path / f"user{suffix}"
    user.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        build(tmp_path, [alpha], ScriptedGenerator(), judge, sources=(str(user),))
    assert info.value.line == line
    assert info.value.file == str(user)
    assert message in str(info.value)


def test_source_id_collision_rejected(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", ["alpha prompt 0"])
    user = write_jsonl(
        tmp_path / "user.jsonl",
        [{"id": "alpha-h00", "category": "alpha", "prompt": "another prompt"}],
    )
    with pytest.raises(DatasetError, match="already used by a different prompt"):
        build(
            tmp_path,
            [alpha],
            ScriptedGenerator(),
            judge,
            sources=("package", str(user)),
        )


def test_normalize_prompt_folds_case_space():
    assert normalize_prompt("  Hello\u2019s   WORLD?! ") == "hello's world"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (REFUSAL, REFUSAL.splitlines()[1]),
        ("Step 1: a\nStep 2: b\n\nI can't help with that.", "I can't help with that."),
        ("Step 1: a\nStep 2: b", ""),
        ("I can't help with that.", "I can't help with that."),
    ],
)
def test_final_answer_after_reasoning(text, expected):
    assert final_answer(text) == expected


def test_templates_format_messages():
    for template in TEMPLATES.values():
        messages = template.messages("Insult my boss.", "Insult: abuse.")
        assert messages[0]["role"] == "system"
        assert "Insult: abuse." in messages[0]["content"]
        assert messages[1] == {
            "role": "user",
            "content": "Request: Insult my boss.\nAnswer:",
        }


def test_build_category_without_prompts(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", ["alpha prompt 0"])
    beta = category_file(tmp_path, "beta", ["beta prompt 0"])
    user = write_jsonl(tmp_path / "user.jsonl", [{"category": "alpha", "prompt": "p"}])
    with pytest.raises(DrirlError, match="no harmful prompts for beta"):
        build(tmp_path, [alpha, beta], ScriptedGenerator(), judge, sources=(str(user),))


def test_build_empty_category_short_with_count(tmp_path, judge):
    alpha = category_file(tmp_path, "alpha", ["alpha prompt 0"])
    beta = category_file(tmp_path, "beta", ["beta prompt 0"])
    user = write_jsonl(tmp_path / "user.jsonl", [{"category": "alpha", "prompt": "p"}])
    summary = build(
        tmp_path,
        [alpha, beta],
        ScriptedGenerator(),
        judge,
        sources=(str(user),),
        per_category=1,
    )
    assert [(c.name, c.refusals) for c in summary.short_categories] == [("beta", 0)]
    assert (tmp_path / "out" / "dataset.jsonl").read_text() == ""


def test_build_log_keeps_line_separator(tmp_path, judge):
    prompt = "alpha prompt\u2028with a line separator"
    alpha = category_file(tmp_path, "alpha", [prompt])
    build(tmp_path, [alpha], ScriptedGenerator(), judge)
    records = read_build_records(tmp_path / "out" / RECORDS_FILE)
    assert [r.prompt for r in records] == [prompt]
