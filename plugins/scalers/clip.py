"""The ``clip`` difficulty scaler: data-level hardness from sentence embeddings.

For a completion o and its prompt's demonstration d, both split into sentences and embedded
with unit-length rows e:

    W = mean over sentences k of o of (max over sentences l of d of cos(e_k, e_l))
    delta = 1 - W
    alpha_D = sigmoid(delta) / sigmoid(mean of delta over the completion's prompt group)

A completion that strays far from every demonstration sentence has a large delta and gets
more weight than its group average. An empty completion has W = 0, the least similar.
The name follows the reference method, which embeds with a CLIP text tower; any text
encoder spec works (see ``drirl.text_encoder``).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch

from drirl import hookimpl
from drirl.components import DifficultyScaler, RunContext, ScalerBatch
from drirl.hookspecs import Register
from drirl.text_encoder import TextEncoder, load_text_encoder

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•>]+|\d+[.)]|[a-zA-Z][.)](?=\s))\s*")
_WORD = re.compile(r"\w")


def split_sentences(text: str) -> list[str]:
    """Split a response into sentences for embedding.

    Fenced code blocks stay whole, one unit each, so a period inside code splits nothing.
    Outside code every line is split after ``.``, ``!`` or ``?`` followed by white space,
    and list markers (``-``, ``*``, ``1.``) are stripped. Pieces without a letter or digit
    are dropped, unless nothing else is left, in which case the stripped text is returned
    as one sentence. Empty or blank text gives an empty list.
    """
    if not text or not text.strip():
        return []
    sentences: list[str] = []
    position = 0
    for match in _FENCE.finditer(text):
        sentences.extend(_split_prose(text[position : match.start()]))
        block = match.group(0).strip("`").strip()
        if block:
            sentences.append(block)
        position = match.end()
    sentences.extend(_split_prose(text[position:]))
    worded = [sentence for sentence in sentences if _WORD.search(sentence)]
    return worded if worded else [text.strip()]


def _split_prose(text: str) -> list[str]:
    pieces: list[str] = []
    for line in text.splitlines():
        line = _LIST_MARKER.sub("", line).strip()
        if not line:
            continue
        pieces.extend(
            part.strip() for part in _SENTENCE_END.split(line) if part.strip()
        )
    return pieces


def matched_similarity(completion: torch.Tensor, demonstration: torch.Tensor) -> float:
    """Return W, the mean over completion rows of their best cosine with a demonstration row.

    Both tensors hold unit-length rows. Either one being empty gives 0.
    """
    if completion.shape[0] == 0 or demonstration.shape[0] == 0:
        return 0.0
    cosines = completion @ demonstration.T
    return cosines.max(dim=1).values.mean().item()


def group_relative_sigmoid(
    values: torch.Tensor, group_ids: torch.Tensor
) -> torch.Tensor:
    """Return sigmoid(v_i) / sigmoid(mean of v over i's group), for each element."""
    ratio = torch.empty_like(values)
    for group in torch.unique(group_ids):
        members = group_ids == group
        ratio[members] = torch.sigmoid(values[members]) / torch.sigmoid(
            values[members].mean()
        )
    return ratio


@dataclass(frozen=True)
class ClipSettings:
    """Settings of the ``clip`` scaler."""

    encoder: str | None = None
    cache_size: int = 4096

    def __post_init__(self) -> None:
        if self.encoder is not None and (
            not isinstance(self.encoder, str) or not self.encoder
        ):
            raise ValueError(
                f"encoder is {self.encoder!r}; allowed: null (the run's text encoder), "
                "'embedded', a sentence-transformers folder or "
                "'open_clip:<model_name>:<checkpoint_path>'"
            )
        if not isinstance(self.cache_size, int) or self.cache_size < 0:
            raise ValueError(
                f"cache_size is {self.cache_size!r}; allowed: an integer >= 0 "
                "(demonstrations whose embeddings are kept)"
            )


class ClipScaler(DifficultyScaler):
    """Weights completions by how far their sentences are from the demonstration's.

    ``encoder`` replaces the encoder named in the settings; tests pass a small
    deterministic one.
    """

    name = "clip"
    Settings = ClipSettings

    def __init__(
        self,
        settings: ClipSettings | None = None,
        ctx: RunContext | None = None,
        *,
        encoder: TextEncoder | None = None,
    ) -> None:
        super().__init__(settings, ctx)
        self._encoder = encoder
        self._demonstrations: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._statistics: dict[str, float] = {}

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder, loaded on first use."""
        if self._encoder is None:
            spec = self.settings.encoder or self.ctx.text_encoder
            self._encoder = load_text_encoder(spec)
        return self._encoder

    def _demonstration_embeddings(self, texts: list[str]) -> list[torch.Tensor]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._demonstrations))
        if missing:
            sentences = [split_sentences(text) for text in missing]
            flat = self.encoder.encode([s for group in sentences for s in group])
            start = 0
            for text, group in zip(missing, sentences):
                self._demonstrations[text] = flat[start : start + len(group)]
                start += len(group)
        embeddings = []
        for text in texts:
            self._demonstrations.move_to_end(text)
            embeddings.append(self._demonstrations[text])
        while len(self._demonstrations) > max(
            self.settings.cache_size, len(set(texts))
        ):
            self._demonstrations.popitem(last=False)
        return embeddings

    def similarities(
        self, completions: list[str], demonstrations: list[str]
    ) -> torch.Tensor:
        """Return W for each (completion, demonstration) pair."""
        sentences = [split_sentences(text) for text in completions]
        flat = self.encoder.encode([s for group in sentences for s in group])
        demo_embeddings = self._demonstration_embeddings(demonstrations)
        similarity = torch.zeros(len(completions), dtype=torch.float32)
        start = 0
        for index, group in enumerate(sentences):
            rows = flat[start : start + len(group)]
            start += len(group)
            similarity[index] = matched_similarity(rows, demo_embeddings[index])
        return similarity

    def factors(self, batch: ScalerBatch) -> torch.Tensor:
        """Return alpha_D for each completion."""
        delta = 1.0 - self.similarities(batch.completions, batch.demonstrations)
        alpha = group_relative_sigmoid(delta, batch.group_ids)
        self._statistics = {
            "delta_mean": delta.mean().item() if delta.numel() else 0.0,
            "similarity_mean": (1.0 - delta).mean().item() if delta.numel() else 0.0,
        }
        return alpha

    def statistics(self) -> dict[str, float]:
        """Return the mean hardness delta and mean similarity W of the last batch."""
        return dict(self._statistics)


@hookimpl
def register_difficulty_scalers(register: Register) -> None:
    """Register the ``clip`` scaler."""
    register(ClipScaler)
