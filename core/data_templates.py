"""The Chain-of-Draft and Chain-of-Thought templates that ask a generator for a demonstration.

Both templates ask for reasoning first and a refusal last, and differ in how long the
reasoning is. Chain-of-Draft (CoD) keeps a few draft steps of at most about five words each.
Chain-of-Thought (CoT) reasons in full sentences, step by step. The refusal names the harm and
offers a safe alternative in both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from drirl.errors import DrirlError

_EXAMPLE_REQUEST = "Write a message that mocks my classmate's accent."

_COD_SYSTEM = """\
You write training examples that show an assistant how to refuse a harmful request.
The request belongs to this harm category: {category}
Answer in exactly two lines and nothing else.
Line 1 starts with "Draft:" and has three or four short steps separated by " -> ". \
Each step has at most five words.
Line 2 is the refusal. Start it with "I can't help with", name what was requested and the \
harm it causes, then add one sentence that starts with "If you want, I can" and offers a \
safe alternative.

Example request: {example}
Example answer:
Draft: mock classmate's accent -> ridicule, exclusion -> decline, offer kind wording.
I can't help with mocking your classmate's accent, because ridiculing how someone speaks \
is harassment that isolates them. If you want, I can help you write a friendly message to \
get to know them."""

_COT_SYSTEM = """\
You write training examples that show an assistant how to refuse a harmful request.
The request belongs to this harm category: {category}
First reason step by step in full sentences, one step per line, each starting with \
"Step 1:", "Step 2:" and so on. Explain what is requested, who could be harmed and how, \
why helping would be wrong, and what help would be safe instead.
After the steps, write the refusal on its own line. Start it with "I can't help with", name \
what was requested and the harm it causes, then add one sentence that starts with \
"If you want, I can" and offers a safe alternative.

Example request: {example}
Example answer:
Step 1: The user wants a message that mocks a classmate's accent.
Step 2: Mocking how someone speaks singles them out for something they cannot change.
Step 3: Such a message is harassment and can isolate the classmate at school.
Step 4: Helping would make me a participant in that harassment.
Step 5: A safe alternative is to help the user reach out to the classmate kindly.
I can't help with mocking your classmate's accent, because ridiculing how someone speaks \
is harassment that isolates them. If you want, I can help you write a friendly message to \
get to know them."""

_USER = "Request: {prompt}\nAnswer:"

# A line of reasoning, not of the final answer: "Draft: ...", "Step 2: ...", "Reasoning:",
# or a numbered item such as "3. ..." or "3) ...".
_REASONING_LINE = re.compile(r"^\s*(?:draft\b|step\s*\d+|reasoning\b|\d+[.)]\s)", re.I)


@dataclass(frozen=True)
class DemonstrationTemplate:
    """A system prompt and a user message that ask for one demonstration."""

    name: str
    system: str
    user: str = _USER

    def messages(self, prompt: str, category: str) -> list[dict[str, str]]:
        """Return the chat turns that ask for a demonstration for ``prompt``."""
        system = self.system.format(category=category, example=_EXAMPLE_REQUEST)
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": self.user.format(prompt=prompt)},
        ]

    def fingerprint(self) -> str:
        """Return a short hash of the template text, stored with every build."""
        text = f"{self.name}\n{self.system}\n{self.user}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


TEMPLATES = {
    "cod": DemonstrationTemplate("cod", _COD_SYSTEM),
    "cot": DemonstrationTemplate("cot", _COT_SYSTEM),
}


def get_template(name: str) -> DemonstrationTemplate:
    """Return the template called ``name``; an unknown name lists the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise DrirlError(
            f"unknown demonstration template {name!r}; allowed: {', '.join(TEMPLATES)}"
        ) from None


def final_answer(text: str) -> str:
    """Return what follows the reasoning: the lines after the last reasoning line.

    A response whose last line is still reasoning (for example one cut off by the token
    limit) has no final answer, so this returns an empty string.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last_reasoning = -1
    for index, line in enumerate(lines):
        if _REASONING_LINE.match(line):
            last_reasoning = index
    return "\n".join(lines[last_reasoning + 1 :])
