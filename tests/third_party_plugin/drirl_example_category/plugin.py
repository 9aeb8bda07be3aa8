"""Registers the 'misinformation' harm category with drirl through the `drirl` entry point."""

from pathlib import Path

import drirl
from drirl.components import HarmCategory

DATA = Path(__file__).with_name("misinformation.jsonl")


@drirl.hookimpl
def register_harm_categories(register):
    """Register the misinformation category."""
    register(
        HarmCategory(
            "misinformation",
            "Misinformation: fabricated news, fake health claims and deceptive propaganda.",
            DATA,
        )
    )
