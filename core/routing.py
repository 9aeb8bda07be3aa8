"""Route a prompt without a harm category to the category whose train prompts it is nearest.

The router is a nearest-centroid classifier over the text encoder's unit-length embeddings
(see ``drirl.text_encoder``). A category's centroid is the mean embedding of its train
prompts, harmful and benign look-alike alike, scaled back to unit length. A prompt goes to
the category of highest cosine similarity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from drirl.components import Record
from drirl.dataset import select
from drirl.errors import DrirlError
from drirl.reward_model import ROUTER_FILE
from drirl.text_encoder import TextEncoder, load_text_encoder

logger = logging.getLogger(__name__)

__all__ = ["ROUTER_FILE", "CentroidRouter", "fill_categories"]


class CentroidRouter:
    """A nearest-centroid classifier from prompt embeddings to harm categories."""

    def __init__(
        self,
        categories: Sequence[str],
        centroids: torch.Tensor,
        encoder: TextEncoder,
        encoder_spec: str | None = None,
        *,
        normalize: bool = True,
    ) -> None:
        if centroids.ndim != 2 or centroids.shape[0] != len(categories):
            raise DrirlError(
                f"router centroids have shape {tuple(centroids.shape)}, expected "
                f"({len(categories)}, dimension) for categories {list(categories)!r}"
            )
        if not categories:
            raise DrirlError("a router needs at least one category")
        self.categories = list(categories)
        # Saved centroids are unit length already; normalising again would change the
        # last bits, so a reloaded router would not repeat the saved one exactly.
        centroids = centroids.float()
        if normalize:
            centroids = torch.nn.functional.normalize(centroids, dim=-1)
        self.centroids = centroids
        self.encoder = encoder
        self.encoder_spec = encoder_spec

    @classmethod
    def fit(
        cls, records: Sequence[Record], encoder_spec: str | None = None
    ) -> CentroidRouter:
        """Build the centroids from the train split of ``records``."""
        train = select(records, split="train")
        if not train:
            raise DrirlError(
                "no records with split 'train', so the router has no prompts to fit"
            )
        categories = sorted({record.category for record in train})
        encoder = load_text_encoder(encoder_spec)
        embeddings = encoder.encode([record.prompt for record in train])
        labels = torch.tensor([categories.index(r.category) for r in train])
        centroids = torch.stack(
            [embeddings[labels == i].mean(dim=0) for i in range(len(categories))]
        )
        return cls(categories, centroids, encoder, encoder_spec)

    def similarities(self, prompts: Sequence[str]) -> torch.Tensor:
        """Return the cosine similarity of each prompt to each centroid, (N, categories)."""
        return self.encoder.encode(list(prompts)) @ self.centroids.T

    def route(self, prompts: Sequence[str]) -> list[str]:
        """Return the nearest category of each prompt."""
        if not prompts:
            return []
        nearest = self.similarities(prompts).argmax(dim=-1).tolist()
        return [self.categories[i] for i in nearest]

    def routed_correctly(self, records: Sequence[Record]) -> list[bool]:
        """Return, for each eval record of a known category, whether it routes home."""
        known = set(self.categories)
        evaluation = [r for r in select(records, split="eval") if r.category in known]
        if not evaluation:
            raise DrirlError(
                "no eval records of the router's categories "
                f"({', '.join(self.categories)}), so routing accuracy is undefined"
            )
        routed = self.route([r.prompt for r in evaluation])
        return [predicted == r.category for predicted, r in zip(routed, evaluation)]

    def accuracy(self, records: Sequence[Record]) -> tuple[float, int]:
        """Return the fraction of eval records routed to their own category, and their count.

        Only records of categories that have a centroid count.
        """
        correct = self.routed_correctly(records)
        return sum(correct) / len(correct), len(correct)

    def save(self, path: Path) -> None:
        """Write the centroids, categories and encoder spec to a safetensors file."""
        metadata = {"categories": json.dumps(self.categories)}
        if self.encoder_spec is not None:
            metadata["encoder"] = self.encoder_spec
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {"centroids": self.centroids.contiguous()}, str(tmp), metadata=metadata
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> CentroidRouter:
        """Load a router written by ``save``, with the same text encoder."""
        path = Path(path)
        if not path.is_file():
            raise DrirlError(f"router file {path} not found; fit the router first")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            centroids = handle.get_tensor("centroids")
        if "categories" not in metadata:
            raise DrirlError(f"{path} has no 'categories' metadata; refit the router")
        spec = metadata.get("encoder")
        return cls(
            json.loads(metadata["categories"]),
            centroids,
            load_text_encoder(spec),
            spec,
            normalize=False,
        )


def fill_categories(
    prompts: Sequence[str],
    categories: Sequence[str | None],
    router: CentroidRouter | None,
) -> list[str]:
    """Return ``categories`` with each None or empty entry replaced by its routed category."""
    missing = [i for i, category in enumerate(categories) if not category]
    filled = list(categories)
    if not missing:
        return filled
    if router is None:
        raise DrirlError(
            f"{len(missing)} row(s) have no category and no router was fitted; give "
            "every row a category, or train the reward models with routing data"
        )
    for index, category in zip(missing, router.route([prompts[i] for i in missing])):
        filled[index] = category
    return filled
