"""Bad input: every case ends in a drirl error that names the value and where it came from.

docs/reliability.md lists each case with its behaviour and the test that checks it. Cases
already checked in test_config.py, test_dataset.py and test_grpo_s.py are not repeated here.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from drirl.atomic import remove_stale_temporaries, write_json_atomic
from drirl.components import Benchmark, Metric, Record, RunContext
from drirl.config import load_experiment
from drirl.dataset import load_records
from drirl.errors import ConfigError, DatasetError, DrirlError
from drirl.matrix import expand_matrix
from drirl.pipeline import ExperimentRunner
from drirl.plugin_manager import load_plugins

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = (ROOT / "core", ROOT / "plugins")

GOOD_ROW = {
    "id": "x-1",
    "category": "insult",
    "kind": "harmful",
    "prompt": "p",
    "demonstration": "Draft: a -> b.\nI can't help with that.",
    "split": "train",
}


@pytest.fixture(scope="module")
def loaded():
    # Not strict: a plugin that fails to load elsewhere in the tree must not hide these cases.
    return load_plugins(use_entry_points=False)


def write_yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def config_error(tmp_path: Path, data: dict, plugins) -> str:
    path = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert str(path) in message
    return message


# Malformed YAML


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: x\nseed: [1, 2\n", 3),
        ("name: x\n\tseed: 1\n", 2),
        ("name: x\nname: : :\n", 2),
    ],
)
def test_yaml_malformed_names_line(tmp_path, loaded, text, line):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_experiment(path, loaded)
    message = str(info.value)
    assert str(path) in message
    assert f"malformed YAML at line {line}" in message


def test_yaml_not_mapping(tmp_path, loaded):
    path = tmp_path / "list.yaml"
    path.write_text("- name: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_experiment(path, loaded)


def test_yaml_invalid_utf8(tmp_path, loaded):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_experiment(path, loaded)


def test_yaml_python_tag_rejected(tmp_path, loaded):
    path = tmp_path / "tag.yaml"
    path.write_text("name: !!python/object/apply:os.system [echo hi]\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_experiment(path, loaded)


# Wrong types


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"seed": "zero"}, "seed"),
        ({"categories": "insult"}, "categories"),
        ({"data": 5}, "data"),
        ({"data": {"train_per_category": 0}}, "data.train_per_category"),
        ({"trust_remote_code": "yes"}, "trust_remote_code"),
        ({"evaluation": {"settings": [1, 2]}}, "evaluation.settings"),
        ({"reward": {"settings": "fast"}}, "reward.settings"),
        ({"scaler_weights": [1, "x"]}, "scaler_weights"),
        ({"model": "bad\x00name"}, "model"),
    ],
)
def test_wrong_type_names_field(tmp_path, loaded, data, field):
    message = config_error(tmp_path, data, loaded)
    assert f"field '{field}" in message


def test_matrix_mapping_value_merged(loaded):
    experiment = load_experiment(
        {"matrix": {"reward": [{"learner": "bradley_terry"}]}}, loaded
    )
    assert experiment.cells[0].reward_learner == "bradley_terry"


def test_matrix_mapping_unknown_key(loaded):
    with pytest.raises(ConfigError) as info:
        load_experiment({"matrix": {"reward.lerner": ["bradley_terry"]}}, loaded)
    message = str(info.value)
    assert "reward.lerner" in message
    assert "allowed: learner, settings" in message


def test_matrix_non_string_key(loaded):
    with pytest.raises(ConfigError, match="field path"):
        load_experiment({"matrix": {1: ["a"]}}, loaded)


def test_baseline_not_string(loaded):
    with pytest.raises(ConfigError, match=r"baselines\[0\]"):
        load_experiment({"baselines": [["grpo"]]}, loaded)


# Unknown plugin names


@pytest.mark.parametrize(
    ("data", "field", "suggestion"),
    [
        (
            {"evaluation": {"judge": "refusal_phrase"}},
            "evaluation.judge",
            "refusal_phrases",
        ),
        (
            {"evaluation": {"benchmarks": ["harmful_refusals"]}},
            "evaluation.benchmarks[0]",
            "harmful_refusal",
        ),
        ({"optimizer": "grpo_s", "scaler": "clp"}, "scaler", "clip"),
        ({"reward": {"learner": "bradley_terri"}}, "reward.learner", "bradley_terry"),
    ],
)
def test_unknown_name_suggests_closest(tmp_path, loaded, data, field, suggestion):
    message = config_error(tmp_path, data, loaded)
    assert f"field '{field}'" in message
    assert f"Did you mean {suggestion!r}?" in message


# Empty matrix, include and exclude


def test_matrix_empty_gives_default_cell(loaded):
    experiment = load_experiment({"matrix": {}}, loaded)
    assert [cell.id for cell in experiment.cells] == ["default"]


def test_matrix_empty_axis(tmp_path, loaded):
    message = config_error(tmp_path, {"matrix": {"optimizer": []}}, loaded)
    assert "matrix.optimizer" in message
    assert "non-empty list" in message


def test_matrix_exclude_unknown_axis():
    matrix = {"optimizer": ["grpo"], "exclude": [{"seed": 3}]}
    with pytest.raises(ConfigError) as info:
        expand_matrix(matrix, [], {})
    message = str(info.value)
    assert "matches no combination" in message
    assert "optimizer: ['grpo']" in message


def test_matrix_include_unknown_field(tmp_path, loaded):
    data = {"matrix": {"include": [{"id": "mine", "optimiser": "grpo"}]}}
    message = config_error(tmp_path, data, loaded)
    assert "matrix.include[0].optimiser" in message
    assert "not an experiment field" in message


def test_matrix_include_empty_entry(tmp_path, loaded):
    message = config_error(tmp_path, {"matrix": {"include": [{}]}}, loaded)
    assert "matrix.include[0]" in message


# Paths built from experiment fields


@pytest.mark.parametrize("bad_id", ["../../x", "/tmp/x", "..", "a/b", "a\\b"])
def test_include_id_outside_run_rejected(tmp_path, loaded, bad_id):
    data = {"matrix": {"include": [{"id": bad_id, "optimizer": "grpo"}]}}
    message = config_error(tmp_path, data, loaded)
    assert "matrix.include[0].id" in message
    assert "invalid cell id" in message


@pytest.mark.parametrize("bad_name", ["../../x", "/abs/x", "..", "a\nb"])
def test_name_with_path_rejected(tmp_path, loaded, bad_name):
    message = config_error(tmp_path, {"name": bad_name}, loaded)
    assert "field 'name'" in message


def test_generated_cell_ids_are_file_names(loaded):
    data = {"matrix": {"training.learning_rate": [1e-5], "model": ["../../m", "/abs"]}}
    cells = expand_matrix(data["matrix"], [], {})
    for cell in cells:
        assert re.fullmatch(r"[A-Za-z0-9_.+=-]+", cell.id), cell.id
        assert cell.id not in (".", "..")


# Dataset rows


def write_lines(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def row_bytes(**changes) -> bytes:
    return json.dumps({**GOOD_ROW, **changes}).encode("utf-8")


def test_dataset_empty_prompt(tmp_path):
    path = write_lines(tmp_path, [row_bytes(), row_bytes(id="x-2", prompt="")])
    with pytest.raises(DatasetError, match=r"data.jsonl:2: field 'prompt' is empty"):
        load_records(path)


def test_dataset_invalid_utf8_names_line(tmp_path):
    bad = row_bytes(id="x-2").replace(b'"p"', b'"caf\xe9"')
    path = write_lines(tmp_path, [row_bytes(), bad])
    with pytest.raises(DatasetError, match=r"data.jsonl:2: line is not valid UTF-8"):
        load_records(path)


def test_dataset_unicode_line_separator_kept(tmp_path):
    path = write_lines(
        tmp_path,
        [json.dumps({**GOOD_ROW, "prompt": "a\u2028b"}, ensure_ascii=False).encode()],
    )
    assert load_records(path)[0].prompt == "a\u2028b"


def test_dataset_invalid_json_names_line(tmp_path):
    path = write_lines(tmp_path, [row_bytes(), b"{not json"])
    with pytest.raises(DatasetError, match=r"data.jsonl:2: invalid JSON"):
        load_records(path)


def test_dataset_deep_nesting(tmp_path):
    path = write_lines(tmp_path, [b"[" * 100_000 + b"]" * 100_000])
    with pytest.raises(DatasetError, match=r"data.jsonl:1: invalid JSON"):
        load_records(path)


def test_dataset_wrong_field_type(tmp_path):
    path = write_lines(tmp_path, [row_bytes(prompt=["a"])])
    with pytest.raises(DatasetError, match="field 'prompt' must be a string, got list"):
        load_records(path)


def test_dataset_unknown_split(tmp_path):
    path = write_lines(tmp_path, [row_bytes(split="test")])
    with pytest.raises(DatasetError, match="allowed: train, eval"):
        load_records(path)


def test_dataset_no_records(tmp_path):
    path = write_lines(tmp_path, [b"", b"   "])
    with pytest.raises(DatasetError, match="has no records"):
        load_records(path)


def test_dataset_crlf_accepted(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(row_bytes() + b"\r\n" + row_bytes(id="x-2") + b"\r\n")
    assert [r.id for r in load_records(path)] == ["x-1", "x-2"]


# Prompts longer than max_prompt_length (GRPO training)


def train_record(index: int, prompt: str) -> Record:
    return Record(
        id=f"r{index}",
        category="insult",
        kind="harmful" if index % 2 == 0 else "benign",
        prompt=prompt,
        demonstration="Draft: x.\nI can't help with that.",
        split="train",
    )


def test_long_prompt_left_out(embedded_policy, caplog):
    from drirl.generation import load_tokenizer
    from drirl.plugins.optimizers.grpo_data import build_train_dataset

    tokenizer = load_tokenizer(embedded_policy)
    records = [train_record(0, "Insult my neighbour."), train_record(1, "word " * 400)]
    with caplog.at_level(logging.WARNING):
        dataset = build_train_dataset(records, tokenizer, 64, seed=0)
    assert dataset["prompt_text"] == ["Insult my neighbour."]
    assert "left out 1 training prompts longer than max_prompt_length=64" in caplog.text
    assert "r1" in caplog.text


def test_every_prompt_too_long(embedded_policy):
    from drirl.generation import load_tokenizer
    from drirl.plugins.optimizers.grpo_data import build_train_dataset

    tokenizer = load_tokenizer(embedded_policy)
    with pytest.raises(DrirlError, match="raise max_prompt_length"):
        build_train_dataset([train_record(0, "word " * 400)], tokenizer, 64, seed=0)


# Non-finite rewards (the NaN and masked-inf cases are in test_grpo_s.py)


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_reward_infinite_raises(value):
    import torch

    from drirl.plugins.optimizers.grpo_data import (
        NonFiniteRewardError,
        make_reward_function,
    )

    class Scorer:
        def score(self, prompts, responses, categories):
            return torch.tensor([0.5, value])

    reward = make_reward_function(Scorer(), "raise")
    with pytest.raises(NonFiniteRewardError, match="'insult'"):
        reward(
            prompts=[None, None],
            completions=["a", "b"],
            prompt_text=["q1", "q2"],
            category=["insult", "insult"],
        )


# A judge that raises on one sample


def test_judge_failure_on_one_sample():
    from drirl.components import Judge, Judgement
    from drirl.judging import GuardedJudge

    class FragileJudge(Judge):
        name = "fragile"

        def judge(self, prompts, responses):
            if "boom" in responses:
                raise RuntimeError("cannot rate boom")
            return [Judgement("compliant", 0.0) for _ in responses]

    guarded = GuardedJudge(FragileJudge())
    verdicts = guarded.judge(["p1", "p2", "p3"], ["fine", "boom", "also fine"])
    assert [v.label for v in verdicts] == ["compliant", "error", "compliant"]
    assert "cannot rate boom" in verdicts[1].error


# Loading: safetensors, trust_remote_code, safe_load


def python_sources() -> list[Path]:
    return [path for folder in SOURCE_DIRS for path in sorted(folder.rglob("*.py"))]


def calls_named(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else getattr(func, "id", "")
            )
            if name in names:
                found.append(node)
    return found


def test_yaml_only_safe_load():
    for path in python_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in calls_named(tree, {"load", "load_all", "unsafe_load", "full_load"}):
            func = call.func
            module = getattr(func, "value", None)
            if isinstance(module, ast.Name) and module.id == "yaml":
                pytest.fail(
                    f"{path}:{call.lineno} calls yaml.{func.attr}; use yaml.safe_load"
                )


def test_weights_saved_as_safetensors():
    for path in python_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in calls_named(tree, {"save"}):
            module = getattr(call.func, "value", None)
            assert not (isinstance(module, ast.Name) and module.id == "torch"), (
                f"{path}:{call.lineno} calls torch.save; write safetensors instead"
            )
        for call in calls_named(tree, {"save_pretrained", "save_model"}):
            for keyword in call.keywords:
                if keyword.arg == "safe_serialization":
                    assert not (
                        isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is False
                    ), f"{path}:{call.lineno} saves without safetensors"


def test_no_literal_trust_remote_code():
    for path in python_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in calls_named(
            tree, {"from_pretrained", "HFLM", "SentenceTransformer"}
        ):
            for keyword in call.keywords:
                if keyword.arg == "trust_remote_code":
                    assert not (
                        isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is True
                    ), f"{path}:{call.lineno} passes trust_remote_code=True"


def test_trust_remote_code_default_false(loaded):
    experiment = load_experiment({}, loaded)
    assert experiment.cells[0].trust_remote_code is False


def test_trust_remote_code_true_accepted(loaded, caplog):
    with caplog.at_level(logging.WARNING, logger="drirl.components"):
        experiment = load_experiment(
            {"trust_remote_code": True, "optimizer": "none"}, loaded
        )
    assert experiment.cells[0].trust_remote_code is True
    warnings = [
        record.getMessage()
        for record in caplog.records
        if "trust_remote_code" in record.getMessage()
    ]
    assert len(warnings) == 1
    assert "'embedded'" in warnings[0]
    assert "runs the Python code" in warnings[0]


class ContextProbe(Benchmark):
    """A benchmark that stores the RunContext it runs with and loads no model."""

    name = "context_probe"
    contexts: list[RunContext] = []

    def run(self, model_path, records, judge, out_dir, ctx):
        ContextProbe.contexts.append(ctx)
        return {"probe": Metric(1.0, 1)}


@pytest.mark.parametrize("flag", [True, False])
def test_trust_remote_code_reaches_run_context(tmp_path, flag):
    plugins = load_plugins(use_entry_points=False)
    plugins.registry("benchmark").add(ContextProbe, plugin="tests", version="0")
    experiment = load_experiment(
        {
            "trust_remote_code": flag,
            "optimizer": "none",
            "categories": ["insult"],
            "evaluation": {"benchmarks": ["context_probe"]},
        },
        plugins,
    )
    ContextProbe.contexts.clear()
    ExperimentRunner(experiment, plugins, tmp_path, show_progress=False).run()
    assert len(ContextProbe.contexts) == 1
    assert ContextProbe.contexts[0].trust_remote_code is flag


# Temporary files left by a killed process


def test_stale_temporaries_removed(tmp_path):
    write_json_atomic(tmp_path / "report" / "results.json", {"ok": 1})
    (tmp_path / "report" / "results.json.abc12345.tmp").write_text("{half")
    stage_tmp = tmp_path / "stages" / "optimize" / "0123.tmp-xyz12345"
    (stage_tmp / "model").mkdir(parents=True)
    (stage_tmp / "model" / "weights.bin.abcdefgh.tmp").write_text("x")
    removed = remove_stale_temporaries(tmp_path, finished_marker="stage.json")
    assert len(removed) == 2
    assert not stage_tmp.exists()
    assert [p.name for p in (tmp_path / "report").iterdir()] == ["results.json"]


def test_stale_temporaries_keep_finished(tmp_path):
    finished = tmp_path / "stages" / "evaluate" / "0123"
    inner = finished / "cache" / "x.tmp-abcdefgh"
    inner.mkdir(parents=True)
    (finished / "stage.json").write_text("{}")
    assert remove_stale_temporaries(tmp_path, finished_marker="stage.json") == []
    assert inner.is_dir()
