"""The ``local_hf`` generator: a local Hugging Face causal LM, by default the embedded model.

Each call formats the conversation with the tokenizer's chat template (SmolLM2 returns
an empty string without it) and decodes greedily, or samples when ``do_sample`` is set. A
sampled call reseeds the random generators with ``seed`` first, so a record's text depends
only on the seed and its conversation, and a resumed build writes what a fresh one would.
The model loads on the first call, and that load is not counted in any record's seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from drirl import hookimpl
from drirl.components import Generation, Generator
from drirl.hookspecs import Register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalHFSettings:
    """Settings of the local_hf generator."""

    model: str = field(
        default="embedded",
        metadata={
            "help": "`embedded` (SmolLM2-135M-Instruct), a local model folder or a hub name"
        },
    )
    max_new_tokens: int = field(
        default=256, metadata={"help": "maximum number of generated tokens per call"}
    )
    do_sample: bool = field(
        default=False, metadata={"help": "sample instead of greedy decoding"}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "sampling temperature (with do_sample)"}
    )
    top_p: float = field(
        default=1.0, metadata={"help": "nucleus sampling threshold (with do_sample)"}
    )
    seed: int = field(default=0, metadata={"help": "seed set before each sampled call"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cuda:0"})
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "model cache folder (default: $DRIRL_CACHE_DIR or ~/.cache/drirl)"
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(
                f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}"
            )
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(
                f"temperature must be a positive number, got {self.temperature!r}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")


class LocalHFGenerator(Generator):
    """Generates with a local transformers model and counts tokens with its tokenizer."""

    name: ClassVar[str] = "local_hf"
    Settings: ClassVar[type] = LocalHFSettings

    def __init__(self, settings: LocalHFSettings | None = None) -> None:
        super().__init__(settings)
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from drirl.embedded import resolve_model
        from drirl.generation import load_tokenizer

        path = resolve_model(self.settings.model, self.settings.cache_dir)
        logger.info("loading generator model %s", path)
        # A generator model comes from generator settings, not from an experiment, so it
        # never runs code of its own.
        self._tokenizer = load_tokenizer(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, trust_remote_code=False
        )
        self._model = model.to(self.settings.device).eval()

    def generate(self, messages: Sequence[dict[str, str]]) -> Generation:
        """Return the model's response to ``messages`` and its generated token count."""
        import torch
        from transformers import set_seed

        if self._model is None:
            self._load()
        tokenizer = self._tokenizer
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(
            self.settings.device
        )
        # None overrides any sampling defaults in the model's generation_config.
        options: dict[str, Any] = {
            "do_sample": False,
            "temperature": None,
            "top_p": None,
        }
        if self.settings.do_sample:
            set_seed(self.settings.seed)
            options = {
                "do_sample": True,
                "temperature": self.settings.temperature,
                "top_p": self.settings.top_p,
            }
        start = time.perf_counter()
        with torch.no_grad():
            output = self._model.generate(
                **encoded,
                max_new_tokens=self.settings.max_new_tokens,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                **options,
            )
        seconds = time.perf_counter() - start
        new_tokens = output[0, encoded["input_ids"].shape[1] :].tolist()
        # The end-of-sequence token that stops generation is not part of the response.
        stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
        while new_tokens and new_tokens[-1] in stop_ids:
            new_tokens.pop()
        response = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return Generation(response, len(new_tokens), seconds, "tokenizer")


@hookimpl
def register_generators(register: Register) -> None:
    """Register the local_hf generator."""
    register(LocalHFGenerator)
