"""trust_remote_code reaches the loaders: a model with its own code loads only when set.

The model folder is built in the test: a config.json whose ``auto_map`` names classes in a
Python file of the folder. Those classes subclass transformers' Llama classes under a model
type that transformers does not know, so transformers can load them only by running the
file. The weights are a tiny random Llama (one layer, hidden size 16) with the embedded
SmolLM2 tokenizer, because only loading is under test and the embedded model has no file
of its own code.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from drirl.cli import build_parser
from drirl.eval_command import EvalRequest, run_eval
from drirl.generation import generate_responses
from drirl.lm_eval_runner import clear_lm_cache, load_lm
from drirl.multihead_reward import MultiHeadRewardModel
from drirl.plugins.reward_learners.pair_training import RewardUnit

MODEL_TYPE = "drirl_test_remote"

MODEL_CODE = f'''
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers import LlamaForSequenceClassification, LlamaPreTrainedModel


class RemoteConfig(LlamaConfig):
    model_type = "{MODEL_TYPE}"


class RemoteModel(LlamaModel):
    config_class = RemoteConfig


class RemoteForCausalLM(LlamaForCausalLM):
    config_class = RemoteConfig


class RemoteForSequenceClassification(LlamaForSequenceClassification):
    config_class = RemoteConfig

    # Llama's own __init__ builds the body with AutoModel.from_config, which would look
    # the body up through auto_map again without trust_remote_code.
    def __init__(self, config):
        LlamaPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = RemoteModel(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()
'''

AUTO_MAP = {
    "AutoConfig": "remote_model.RemoteConfig",
    "AutoModel": "remote_model.RemoteModel",
    "AutoModelForCausalLM": "remote_model.RemoteForCausalLM",
    "AutoModelForSequenceClassification": (
        "remote_model.RemoteForSequenceClassification"
    ),
}

# Part of the message transformers 5.25 raises for custom code without the flag.
REMOTE_CODE_ERROR = "trust_remote_code=True"


@pytest.fixture(scope="module")
def remote_model(tmp_path_factory, embedded_policy) -> Path:
    """A model folder that transformers can load only by running its remote_model.py."""
    folder = tmp_path_factory.mktemp("remote") / "remote-model"
    folder.mkdir()
    code_file = folder / "remote_model.py"
    code_file.write_text(MODEL_CODE, encoding="utf-8")

    spec = importlib.util.spec_from_file_location("drirl_test_remote_model", code_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    policy_config = json.loads(
        (embedded_policy / "config.json").read_text(encoding="utf-8")
    )
    config = module.RemoteConfig(
        vocab_size=policy_config["vocab_size"],
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=policy_config["bos_token_id"],
        eos_token_id=policy_config["eos_token_id"],
        pad_token_id=policy_config["eos_token_id"],
    )
    torch.manual_seed(0)
    module.RemoteForCausalLM(config).save_pretrained(folder, safe_serialization=True)

    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    saved["auto_map"] = AUTO_MAP
    (folder / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(embedded_policy / name, folder / name)
    return folder


def test_folder_needs_remote_code(remote_model):
    from transformers import AutoConfig

    with pytest.raises(ValueError, match=REMOTE_CODE_ERROR):
        AutoConfig.from_pretrained(remote_model)


def test_generation_rejects_without_flag(remote_model):
    with pytest.raises(ValueError, match=REMOTE_CODE_ERROR):
        generate_responses(remote_model, ["Hello"], max_new_tokens=2, show_progress=False)


def test_generation_runs_model_code(remote_model):
    responses = generate_responses(
        remote_model,
        ["Hello"],
        max_new_tokens=2,
        show_progress=False,
        trust_remote_code=True,
    )
    assert len(responses) == 1
    assert isinstance(responses[0], str)


def test_reward_unit_rejects_without_flag(remote_model):
    with pytest.raises(ValueError, match=REMOTE_CODE_ERROR):
        RewardUnit.create(remote_model, "insult", ["insult"], seed=0)


def test_reward_unit_runs_model_code(remote_model):
    unit = RewardUnit.create(
        remote_model, "insult", ["insult"], seed=0, trust_remote_code=True
    )
    assert type(unit.model).__name__ == "RemoteForSequenceClassification"


def test_multihead_rejects_without_flag(remote_model):
    with pytest.raises(ValueError, match=REMOTE_CODE_ERROR):
        MultiHeadRewardModel.from_policy(remote_model, ["insult"])


def test_multihead_runs_model_code(remote_model):
    model = MultiHeadRewardModel.from_policy(
        remote_model, ["insult"], trust_remote_code=True
    )
    assert type(model.backbone).__name__ == "RemoteModel"


def test_lm_eval_loader_rejects_without_flag(remote_model):
    clear_lm_cache()
    with pytest.raises(ValueError, match=REMOTE_CODE_ERROR):
        load_lm(remote_model, batch_size=1)


def test_eval_flag_defaults_off():
    args = build_parser().parse_args(
        ["eval", "--model", "m", "--benchmark", "harmful_refusal"]
    )
    assert args.trust_remote_code is False


def test_eval_flag_parsed():
    args = build_parser().parse_args(
        [
            "eval",
            "--model",
            "m",
            "--benchmark",
            "harmful_refusal",
            "--trust-remote-code",
        ]
    )
    assert args.trust_remote_code is True


def eval_request(model: Path, out_dir: Path, flag: bool) -> EvalRequest:
    return EvalRequest(
        model=str(model),
        benchmarks=["harmful_refusal"],
        out_dir=out_dir,
        max_new_tokens=2,
        limit=1,
        trust_remote_code=flag,
    )


def test_eval_rejects_remote_model_without_flag(remote_model, plugins, tmp_path):
    clear_lm_cache()
    with pytest.raises(ValueError, match=REMOTE_CODE_ERROR):
        run_eval(eval_request(remote_model, tmp_path, False), plugins)


def test_eval_runs_remote_model_with_flag(remote_model, plugins, tmp_path, caplog):
    clear_lm_cache()
    with caplog.at_level(logging.WARNING, logger="drirl.components"):
        results = run_eval(eval_request(remote_model, tmp_path, True), plugins)
    clear_lm_cache()
    warnings = [
        record.getMessage()
        for record in caplog.records
        if "trust_remote_code" in record.getMessage()
    ]
    assert len(warnings) == 1
    assert str(remote_model) in warnings[0]
    assert results["harmful_refusal"]["harmful_refusal/all"].n == 7
