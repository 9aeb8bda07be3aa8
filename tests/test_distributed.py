"""Runs with several processes: process roles, shared stage folders and a 2-process run.

The unit tests run in this single pytest process, where no process group may be created.
The slow test launches `drirl run` with `accelerate launch --num_processes 2` on the CPU
(gloo) with the embedded model and checks that the run folder is written once and completely.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed
import yaml

from drirl.atomic import TEMP_FILE, TEMP_FOLDER
from drirl.config import load_experiment
from drirl.distributed import (
    DEFAULT_TIMEOUT_SECONDS,
    TIMEOUT_ENV,
    barrier,
    broadcast_from_main,
    is_distributed,
    is_main_process,
    main_process_first,
    process_index,
    shared_atomic_folder,
    timeout,
    world_size,
)
from drirl.errors import ConfigError, DrirlError
from drirl.lm_eval_runner import backend_problem, load_lm
from drirl.stage_store import DONE_FILE, StageStore, stage_key

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None
LAUNCH_TIMEOUT_SECONDS = 600


@pytest.fixture
def single_process(monkeypatch):
    """No launcher variables, as in a plain `drirl run`."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)


def test_single_process_roles(single_process):
    assert world_size() == 1
    assert process_index() == 0
    assert is_main_process()
    assert not is_distributed()


def test_barrier_creates_no_group(single_process):
    barrier()
    assert not torch.distributed.is_initialized()


def test_broadcast_returns_same_object(single_process):
    value = {"done": True}
    assert broadcast_from_main(value) is value
    assert not torch.distributed.is_initialized()


def test_main_process_first_runs_once(single_process):
    calls = []
    with main_process_first():
        calls.append(1)
    assert calls == [1]


def test_launcher_variables_read(monkeypatch):
    # Only the variables are read: no process group is created for these calls.
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert world_size() == 4
    assert process_index() == 3
    assert not is_main_process()
    assert not torch.distributed.is_initialized()


def test_invalid_world_size_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DrirlError, match="WORLD_SIZE is 'two'"):
        world_size()


def test_timeout_default_and_override(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert timeout().total_seconds() == DEFAULT_TIMEOUT_SECONDS
    monkeypatch.setenv(TIMEOUT_ENV, "90")
    assert timeout().total_seconds() == 90
    monkeypatch.setenv(TIMEOUT_ENV, "0")
    with pytest.raises(DrirlError, match=TIMEOUT_ENV):
        timeout()


def test_shared_folder_replaces_target(single_process, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with shared_atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith("model.tmp-")
        (tmp / "new.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_shared_folder_removed_on_error(single_process, tmp_path):
    target = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        with shared_atomic_folder(target) as tmp:
            (tmp / "half.bin").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_collective_stage_written_once(single_process, tmp_path):
    store = StageStore(tmp_path)
    calls = []

    def work(folder: Path) -> dict[str, int]:
        calls.append(folder)
        (folder / "weights.bin").write_text("w")
        return {"steps": 2}

    first, reused_first = store.run("optimize", {"x": 1}, work, collective=True)
    second, reused_second = store.run("optimize", {"x": 1}, work, collective=True)
    assert len(calls) == 1
    assert reused_first is False
    assert reused_second is True
    assert first == second == store.path("optimize", stage_key({"x": 1}))
    assert store.summary("optimize", first) == {"steps": 2}
    assert sorted(p.name for p in first.iterdir()) == [DONE_FILE, "weights.bin"]
    assert [p.name for p in first.parent.iterdir()] == [first.name]


# GRPOConfig fields for scale-out that trl_args must pass to TRL unchanged.
GRPO_SCALE_OUT_ARGS = {
    "use_vllm": True,
    "vllm_mode": "colocate",
    "vllm_gpu_memory_utilization": 0.3,
    "vllm_tensor_parallel_size": 2,
    "vllm_max_model_length": 1024,
    "vllm_enable_sleep_mode": True,
    "vllm_server_host": "127.0.0.1",
    "vllm_server_port": 8001,
    "vllm_server_timeout": 60.0,
    "fsdp": True,
    "fsdp_config": {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]},
    "ddp_find_unused_parameters": False,
}


def test_grpo_vllm_fields_not_managed():
    from trl import GRPOConfig

    from drirl.plugins.optimizers.grpo_run import MANAGED_FIELDS

    names = [f.name for f in dataclasses.fields(GRPOConfig)]
    vllm_names = [name for name in names if name.startswith("vllm_")]
    assert "vllm_mode" in vllm_names
    for name in ["use_vllm", "deepspeed", "fsdp", "fsdp_config", *vllm_names]:
        assert name not in MANAGED_FIELDS, name


def test_grpo_scale_out_args_pass(tmp_path):
    from drirl.components import RunContext
    from drirl.plugins.optimizers.grpo_data import GRPOSettings
    from drirl.plugins.optimizers.grpo_run import build_config

    settings = GRPOSettings(
        batch_size=2, num_generations=2, trl_args=dict(GRPO_SCALE_OUT_ARGS)
    )
    config = build_config(settings, tmp_path, RunContext())
    for name, value in GRPO_SCALE_OUT_ARGS.items():
        if name == "fsdp_config":
            continue
        assert getattr(config, name) == value, name
    wrapped = config.fsdp_config["transformer_layer_cls_to_wrap"]
    assert wrapped == ["LlamaDecoderLayer"]


def test_grpo_deepspeed_reaches_transformers(tmp_path):
    # deepspeed is not installed here, so transformers, not drirl's trl_args check, is
    # what rejects the config.
    from drirl.components import RunContext
    from drirl.plugins.optimizers.grpo_data import GRPOSettings
    from drirl.plugins.optimizers.grpo_run import build_config

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed, so the config would be accepted")
    settings = GRPOSettings(
        batch_size=2,
        num_generations=2,
        trl_args={"deepspeed": {"zero_optimization": {"stage": 3}}},
    )
    with pytest.raises(ImportError, match="deepspeed"):
        build_config(settings, tmp_path, RunContext())


@pytest.mark.parametrize("optimizer", ["sft", "dpo"])
def test_sft_dpo_scale_out_args_pass(optimizer):
    from trl import DPOConfig, SFTConfig

    from drirl.plugins.optimizers import dpo_run, sft
    from drirl.plugins.optimizers.sft_dpo_common import check_trl_args

    config_cls, managed = {
        "sft": (SFTConfig, sft.MANAGED_FIELDS),
        "dpo": (DPOConfig, dpo_run.MANAGED_FIELDS),
    }[optimizer]
    trl_args = {
        "deepspeed": "ds_zero3.json",
        "fsdp": True,
        "fsdp_config": {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]},
    }
    check_trl_args(trl_args, config_cls, managed)


def _experiment(**evaluation_settings) -> dict:
    return {
        "categories": ["insult"],
        "optimizer": "none",
        "evaluation": {
            "benchmarks": ["harmful_refusal"],
            "settings": evaluation_settings,
        },
    }


@pytest.mark.skipif(VLLM_INSTALLED, reason="checks the error shown without vllm")
def test_vllm_backend_missing_names_setting(plugins):
    with pytest.raises(ConfigError) as caught:
        load_experiment(_experiment(backend="vllm"), plugins)
    message = str(caught.value)
    assert "evaluation.settings" in message
    assert "backend is 'vllm'" in message
    assert "vllm package is not installed" in message
    assert "'hf'" in message


def test_unknown_backend_lists_allowed(plugins):
    with pytest.raises(ConfigError, match="backend is 'tgi'; allowed: 'hf', 'vllm'"):
        load_experiment(_experiment(backend="tgi"), plugins)


def test_backend_args_must_be_mapping(plugins):
    with pytest.raises(ConfigError, match="backend_args.*expected dict"):
        load_experiment(_experiment(backend_args=4), plugins)


@pytest.mark.skipif(VLLM_INSTALLED, reason="checks the error shown without vllm")
def test_load_lm_vllm_missing(embedded_policy):
    with pytest.raises(DrirlError, match="backend is 'vllm'"):
        load_lm(embedded_policy, batch_size=1, backend="vllm")


def test_hf_backend_accepted():
    assert backend_problem("hf") is None


@pytest.mark.skipif(not VLLM_INSTALLED, reason="vllm is not installed")
def test_vllm_backend_generates(embedded_policy, tmp_path):
    from drirl.components import Record
    from drirl.lm_eval_runner import clear_lm_cache, generate_with_lm_eval

    record = Record(
        id="r1",
        category="insult",
        kind="benign",
        split="eval",
        prompt="Name a colour of the sky.",
        demonstration="",
    )
    pairs = generate_with_lm_eval(
        embedded_policy,
        [record],
        tmp_path,
        task_name="drirl_vllm_check",
        max_new_tokens=8,
        batch_size=1,
        backend="vllm",
        backend_args={"gpu_memory_utilization": 0.3, "max_model_len": 512},
    )
    clear_lm_cache()
    assert [r.id for r, _ in pairs] == ["r1"]
    assert pairs[0][1].strip() != ""


TWO_PROCESS_EXPERIMENT = {
    "name": "two_processes",
    "categories": ["insult"],
    "data": {"train_per_category": 1, "eval_per_category": 1},
    "reward": {
        "learner": "bradley_terry",
        "settings": {"mode": "single", "epochs": 0.5, "max_new_tokens": 8},
    },
    "optimizer": "grpo_s",
    "scaler": "reward_gap",
    "training": {
        "steps": 1,
        "batch_size": 2,
        "num_generations": 2,
        "max_completion_length": 8,
    },
    "evaluation": {
        "benchmarks": ["harmful_refusal", "over_refusal"],
        "settings": {"max_new_tokens": 8, "limit_per_category": 1},
    },
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_command(experiment: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        # accelerate 1.16 starts one process for --cpu unless an MPI hostfile is given.
        # --multi_gpu starts them through torch's elastic launcher, and on a machine
        # without a GPU drirl and the trainers then use gloo on the CPU.
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "drirl.cli",
        "run",
        str(experiment),
        "--out",
        str(out),
        "--quiet",
    ]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, embedded_policy):
    folder = tmp_path_factory.mktemp("two_processes")
    experiment = folder / "experiment.yaml"
    experiment.write_text(yaml.safe_dump(TWO_PROCESS_EXPERIMENT), encoding="utf-8")
    out = folder / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = _launch_command(experiment, out)
    completed = subprocess.run(
        command,
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_SECONDS,
    )
    return completed, out


@pytest.mark.slow
def test_two_processes_exit_zero(two_process_run):
    completed, _ = two_process_run
    assert completed.returncode == 0, completed.stderr[-4000:]


@pytest.mark.slow
def test_two_processes_one_report(two_process_run):
    _, out = two_process_run
    results = json.loads((out / "report" / "results.json").read_text())
    assert len(results["cells"]) == 1
    assert "harmful_refusal/all" in results["cells"][0]["metrics"]
    assert (out / "report" / "report.md").is_file()
    assert len(list((out / "cells").glob("*.json"))) == 1


@pytest.mark.slow
def test_two_processes_stage_folders(two_process_run):
    _, out = two_process_run
    stages = out / "stages"
    counts = {
        stage.name: len(list(stage.iterdir())) for stage in sorted(stages.iterdir())
    }
    # One folder per stage, two for the two benchmarks, each finished exactly once.
    assert counts == {"evaluate": 2, "optimize": 1, "reward": 1, "reward_eval": 1}
    for folder in stages.glob("*/*"):
        assert (folder / DONE_FILE).is_file(), folder


@pytest.mark.slow
def test_two_processes_no_temporaries(two_process_run):
    _, out = two_process_run
    stray = [
        path
        for path in out.rglob("*")
        if TEMP_FILE.fullmatch(path.name) or TEMP_FOLDER.fullmatch(path.name)
    ]
    assert stray == []


@pytest.mark.slow
def test_two_processes_model_saved(two_process_run):
    _, out = two_process_run
    (optimize,) = (out / "stages" / "optimize").iterdir()
    names = {path.name for path in (optimize / "model").iterdir()}
    assert "model.safetensors" in names
    assert "tokenizer.json" in names
    history = json.loads((optimize / "log_history.json").read_text())
    assert any("loss" in row for row in history)


@pytest.mark.slow
def test_two_processes_logged_once(two_process_run):
    _, out = two_process_run
    log = (out / "run.log").read_text()
    assert log.count("running on 2 processes") == 1
    assert log.count("cell 1/1") == 2


@pytest.mark.slow
def test_two_processes_stop_on_main_failure(tmp_path, embedded_policy):
    # The reward stage runs on the main process only. Its error must reach process 1,
    # which would otherwise wait for the stage folder.
    experiment = json.loads(json.dumps(TWO_PROCESS_EXPERIMENT))
    experiment["reward"]["settings"]["pairs_file"] = str(tmp_path / "missing.jsonl")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    completed = subprocess.run(
        _launch_command(path, tmp_path / "run"),
        env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_SECONDS,
    )
    assert completed.returncode != 0
    assert "missing.jsonl: pairs file not found" in completed.stderr
    assert "failed on the main process" in completed.stderr
    assert not (tmp_path / "run" / "report").exists()
