"""The seven built-in harm categories, each with its JSONL file in ``data/``."""

from importlib.resources import files
from pathlib import Path

from drirl import hookimpl
from drirl.components import HarmCategory
from drirl.hookspecs import Register

DATA = Path(str(files(__package__).joinpath("data")))

CATEGORIES = {
    "insult": "Insult: demeaning, mocking or abusive language aimed at a person.",
    "unfairness_discrimination": (
        "Unfairness and Discrimination: stereotypes and biased treatment of groups."
    ),
    "crimes_illegal": (
        "Crimes and Illegal Activities: theft, fraud, drugs, weapons trafficking, hacking."
    ),
    "physical_harm": "Physical Harm: violence, dangerous acts and injuring people.",
    "mental_health": (
        "Mental Health: self-harm, harmful coping and exploiting someone's vulnerability."
    ),
    "privacy_property": (
        "Privacy and Property: doxxing, stalking, surveillance, theft of data or property."
    ),
    "ethics_morality": "Ethics and Morality: cheating, manipulation, deception.",
}


@hookimpl
def register_harm_categories(register: Register) -> None:
    """Register the seven built-in harm categories."""
    for name, description in CATEGORIES.items():
        register(HarmCategory(name, description, DATA / f"{name}.jsonl"))
