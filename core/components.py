"""The component contracts that plugins implement, and the values they exchange.

Every component class carries a ``name`` (the key users write in experiment YAML) and a
``Settings`` dataclass. The experiment loader builds ``Settings`` from the YAML fields, so a
misspelled or wrongly typed field fails at load time, before any training starts.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch

logger = logging.getLogger(__name__)

RecordKind = Literal["harmful", "benign"]
Split = Literal["train", "eval"]
# "error" marks a response the judge failed to rate (see drirl.judging). It is not a
# refusal, a harmful response or a compliant one.
JudgeLabel = Literal["refusal", "harmful", "compliant", "error"]


@dataclass(frozen=True)
class Record:
    """One prompt of a harm category with its demonstration.

    For a harmful prompt the demonstration is Chain-of-Draft reasoning followed by a refusal
    that names the harm and offers a safe alternative. For a benign look-alike prompt it is a
    short helpful answer.
    """

    id: str
    category: str
    kind: RecordKind
    prompt: str
    demonstration: str
    split: Split


@dataclass(frozen=True)
class HarmCategory:
    """A harm category: its name, a description, and the JSONL file of its records."""

    name: str
    description: str
    data_path: Path

    def load_records(self) -> list[Record]:
        """Read and validate the category's records (see ``drirl.dataset``)."""
        from drirl.dataset import load_records

        return load_records(self.data_path, expected_category=self.name)


@dataclass
class RunContext:
    """The settings every stage receives: the seed, the device and the shared caches.

    ``trust_remote_code`` is passed to every ``from_pretrained`` and lm-eval model call that
    loads the policy or a reward model trained from it. When True, transformers runs the Python files that a
    model folder names in its config's ``auto_map``. Judge models named in judge settings
    are loaded with it False. ``warm_start_model`` is the cell's warm-started policy when
    its reward stage samples it (``warm_start_samples``), else None.
    ``checkpoint_every`` is set for the optimize stage of a cell with
    ``evaluation.checkpoint_every``: an optimizer then saves the policy every that many
    steps with ``drirl.checkpoints`` (see there for the folders).
    ``generation_cache`` is the folder where the judged benchmarks keep their responses
    for the next judge (``drirl.generation_cache``), or None to generate every time.
    """

    seed: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None
    text_encoder: str | None = None
    show_progress: bool = True
    trust_remote_code: bool = False
    warm_start_model: Path | None = None
    checkpoint_every: int | None = None
    generation_cache: Path | None = None


def warn_remote_code(model: str) -> None:
    """Log that loading ``model`` will run the Python code that comes with it."""
    logger.warning(
        "trust_remote_code is true, so loading model %r runs the Python code that comes "
        "with it (the files its config.json names in auto_map); use it only for a model "
        "whose code you have read or trust",
        model,
    )


@dataclass(frozen=True)
class EmptySettings:
    """Settings of a component that takes none."""


class RewardScorer(Protocol):
    """A trained reward model, or a set of them routed by category."""

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        categories: Sequence[str],
    ) -> torch.Tensor:
        """Return one float32 reward per (prompt, response, category), shape (N,).

        A scorer whose ``kind_heads`` attribute is true also takes ``kinds=``, each row's
        prompt kind (see ``drirl.kind_heads``).
        """
        ...


class Component(ABC):
    """Base of every pluggable component class."""

    name: ClassVar[str]
    Settings: ClassVar[type] = EmptySettings

    def __init__(self, settings: Any | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @classmethod
    def settings_fields(cls) -> list[str]:
        """Return the names of the YAML fields this component accepts."""
        return [f.name for f in dataclasses.fields(cls.Settings)]


class RewardLearner(Component):
    """Trains reward models from demonstrations and returns a scorer."""

    @abstractmethod
    def train(
        self,
        policy_path: Path,
        records: Sequence[Record],
        out_dir: Path,
        ctx: RunContext,
    ) -> None:
        """Train on the records' train split and save everything needed to ``out_dir``."""

    @abstractmethod
    def load(self, out_dir: Path, ctx: RunContext) -> RewardScorer:
        """Load what ``train`` saved in ``out_dir`` as a scorer."""


@dataclass
class ScalerBatch:
    """One GRPO batch as the difficulty scalers see it.

    N = number of prompt groups x completions per group. ``group_ids`` gives each completion
    the index of its prompt group, so the same prompt twice in a batch keeps two groups.
    """

    prompts: list[str]
    completions: list[str]
    demonstrations: list[str]
    categories: list[str]
    group_ids: torch.Tensor
    rewards: torch.Tensor
    scorer: RewardScorer | None = None
    # Each completion's prompt kind (harmful or benign), or None where the optimizer has none.
    kinds: list[str] | None = None


class DifficultyScaler(Component):
    """Computes a positive multiplier per completion for the normalised advantage."""

    def __init__(
        self, settings: Any | None = None, ctx: RunContext | None = None
    ) -> None:
        super().__init__(settings)
        self.ctx = ctx if ctx is not None else RunContext()

    @abstractmethod
    def factors(self, batch: ScalerBatch) -> torch.Tensor:
        """Return alpha, a float32 tensor of shape (N,)."""

    def statistics(self) -> dict[str, float]:
        """Return the scaler's extra statistics from its last ``factors`` call, for logging."""
        return {}


@dataclass(frozen=True)
class OptimizerSettings:
    """Settings shared by every optimizer; an optimizer's own Settings extends this."""

    learning_rate: float = 1e-5
    steps: int = 20
    batch_size: int = 8
    beta: float = 0.04
    max_prompt_length: int = 256
    max_completion_length: int = 64


@dataclass
class TrainResult:
    """The output of an optimizer: the aligned model folder and its training log."""

    model_path: Path
    log_history: list[dict[str, Any]] = field(default_factory=list)


class Optimizer(Component):
    """Aligns a policy against a reward scorer (or preference pairs), optionally scaled."""

    Settings: ClassVar[type] = OptimizerSettings
    needs_reward: ClassVar[bool] = True
    # False for an optimizer that has a scaled variant of its own (grpo beside grpo_s).
    accepts_scaler: ClassVar[bool] = True

    @abstractmethod
    def train(
        self,
        policy_path: Path,
        records: Sequence[Record],
        scorer: RewardScorer | None,
        scaler: DifficultyScaler | None,
        out_dir: Path,
        ctx: RunContext,
    ) -> TrainResult:
        """Train on the records' train split; save the model under ``out_dir / "model"``."""


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one response: a label and a score in [0, 1].

    Each judge documents what its score measures; for ``refusal_phrases`` it is 1.0 for a
    refusal and 0.0 otherwise. ``independent`` is False when the judge rates a policy with
    the reward models that policy was trained against. ``error`` contains the reason for a judgement
    with label "error".
    """

    label: JudgeLabel
    score: float
    independent: bool = True
    error: str | None = None


@dataclass(frozen=True)
class JudgeRun:
    """The parts of the evaluating run that a judge may use.

    ``reward_dir`` is the reward-model folder the evaluated policy was trained against, or
    None when the policy was trained against no reward model. ``records`` are the eval
    records, so a judge can look up a prompt's harm category and kind.
    """

    ctx: RunContext
    reward_dir: Path | None = None
    records: Sequence[Record] = ()


class Judge(Component):
    """Labels responses as refusal, harmful or compliant."""

    @abstractmethod
    def judge(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> list[Judgement]:
        """Return one Judgement per (prompt, response)."""

    def prepare(self, run: JudgeRun) -> None:
        """Store what the judge needs from the run before it judges; the default stores nothing."""

    def report(self) -> dict[str, Any]:
        """Return facts about the judge for the run report (accuracy, independence)."""
        return {}


@dataclass(frozen=True)
class Metric:
    """A rate or score with its sample count and a bootstrap 95% confidence interval."""

    value: float
    n: int
    ci_low: float | None = None
    ci_high: float | None = None


class Benchmark(Component):
    """An evaluation task run through lm-eval."""

    @abstractmethod
    def run(
        self,
        model_path: Path,
        records: Sequence[Record],
        judge: Judge,
        out_dir: Path,
        ctx: RunContext,
    ) -> dict[str, Metric]:
        """Evaluate the model on the records' eval split; keep per-sample records in out_dir."""


@dataclass(frozen=True)
class Generation:
    """One generated response with its cost.

    ``tokens`` counts the generated (completion) tokens. ``token_source`` names where the count
    came from: ``"tokenizer"`` (counted locally), ``"usage"`` (reported by a remote API) or
    ``"words"`` (an estimate from whitespace-separated words when the API reported none).
    """

    text: str
    tokens: int
    seconds: float
    token_source: str = "tokenizer"


class Generator(Component):
    """Writes one assistant response to a chat conversation (used to build demonstrations)."""

    @abstractmethod
    def generate(self, messages: Sequence[dict[str, str]]) -> Generation:
        """Return the response to ``messages``, a list of {"role", "content"} turns."""

    def describe(self) -> dict[str, Any]:
        """Return the settings that decide the output, without secrets, for build manifests."""
        values = dataclasses.asdict(self.settings)
        secret = {
            f.name for f in dataclasses.fields(self.settings) if f.metadata.get("secret")
        }
        return {k: v for k, v in values.items() if k not in secret}
