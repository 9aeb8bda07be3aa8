"""Sentence embedding models used by the difficulty scalers.

A text encoder spec is one of:

- ``None`` or ``"embedded"``: the embedded all-MiniLM-L6-v2 sentence-transformers model;
- the path of a local sentence-transformers folder (one that contains ``modules.json``);
- ``"open_clip:<model_name>:<checkpoint_path>"``: the text tower of an open_clip model, with
  weights from a local checkpoint file, for example ``open_clip:ViT-B-32:/models/clip.pt``.

Loaded encoders are cached per spec for the life of the process.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from drirl.embedded import encoder_path
from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

EMBEDDED_ENCODER = "embedded"
OPEN_CLIP_PREFIX = "open_clip:"

_cache: dict[str, TextEncoder] = {}
_cache_lock = threading.Lock()


class TextEncoderError(DrirlError, ValueError):
    """A text encoder spec that names no usable model."""


class TextEncoder:
    """Maps texts to L2-normalised float32 embeddings, one row per text."""

    dimension: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Return a (len(texts), dimension) float32 tensor of unit-length rows."""
        raise NotImplementedError


def _normalise(embeddings: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(
        embeddings.detach().float().cpu(), p=2.0, dim=-1
    )


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model on the CPU."""

    def __init__(self, path: str | Path, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.path = Path(path)
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(path), device="cpu")
        self.dimension = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Return a (len(texts), dimension) float32 tensor of unit-length rows."""
        if not texts:
            return torch.zeros(0, self.dimension)
        embeddings = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        return _normalise(embeddings)


class OpenClipTextEncoder(TextEncoder):
    """The text tower of an open_clip model loaded from a local checkpoint."""

    def __init__(self, model_name: str, checkpoint: str | Path) -> None:
        import open_clip

        self.model_name = model_name
        self.checkpoint = Path(checkpoint)
        model = open_clip.create_model(
            model_name, pretrained=str(checkpoint), device="cpu"
        )
        model.eval()
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(model_name)
        with torch.no_grad():
            probe = self.model.encode_text(self.tokenizer(["probe"]))
        self.dimension = int(probe.shape[-1])

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Return a (len(texts), dimension) float32 tensor of unit-length rows."""
        if not texts:
            return torch.zeros(0, self.dimension)
        return _normalise(self.model.encode_text(self.tokenizer(list(texts))))


def _load_open_clip(spec: str) -> TextEncoder:
    parts = spec[len(OPEN_CLIP_PREFIX) :].split(":", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise TextEncoderError(
            f"invalid open_clip text encoder spec {spec!r}; expected "
            "'open_clip:<model_name>:<checkpoint_path>', for example "
            "'open_clip:ViT-B-32:/models/open_clip_vit_b_32.pt'"
        )
    model_name, checkpoint = parts
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise TextEncoderError(
            f"open_clip checkpoint {str(path)!r} not found (text encoder spec {spec!r}). "
            "drirl does not download weights: download the checkpoint for "
            f"{model_name!r} (for example with open_clip or from the Hugging Face hub) "
            "and give its local file path after the model name"
        )
    import open_clip

    if model_name not in open_clip.list_models():
        raise TextEncoderError(
            f"unknown open_clip model {model_name!r} in text encoder spec {spec!r}; "
            "run `python -c 'import open_clip; print(open_clip.list_models())'` "
            "for the known names"
        )
    return OpenClipTextEncoder(model_name, path)


def _load_uncached(spec: str | None) -> TextEncoder:
    if spec is None or spec == EMBEDDED_ENCODER:
        return SentenceTransformerEncoder(encoder_path())
    if spec.startswith(OPEN_CLIP_PREFIX):
        return _load_open_clip(spec)
    path = Path(spec).expanduser()
    if (path / "modules.json").is_file():
        return SentenceTransformerEncoder(path)
    raise TextEncoderError(
        f"text encoder {spec!r} is not {EMBEDDED_ENCODER!r}, a sentence-transformers folder "
        "(a folder with modules.json) or 'open_clip:<model_name>:<checkpoint_path>'"
    )


def load_text_encoder(spec: str | None = None) -> TextEncoder:
    """Load the text encoder named by ``spec``, reusing one already loaded in this process."""
    key = EMBEDDED_ENCODER if spec is None else spec
    with _cache_lock:
        if key not in _cache:
            logger.info("loading text encoder %s", key)
            _cache[key] = _load_uncached(spec)
        return _cache[key]
