"""The ``jailbreak`` benchmark: refusal of harmful eval prompts wrapped in jailbreak templates.

Each harmful eval prompt is wrapped in every selected template (role play, prefix
injection, refusal suppression, hypothetical framing, a fictional story, a developer-mode
persona, a research pretext) and answered once. The built-in templates are in
``data/jailbreak_templates.yaml``. A user's own file with the same layout can replace them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from drirl import hookimpl
from drirl.components import Judgement, Record, RecordKind
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.judged_benchmark import JudgedBenchmark, JudgedBenchmarkSettings

PLACEHOLDER = "{prompt}"
# Separates the harmful record's id from the template name in a wrapped record's id.
ID_SEPARATOR = "@"


class TemplateFileError(DrirlError, ValueError):
    """An invalid or missing jailbreak templates file."""


def builtin_templates_path() -> Path:
    """Return the path of the built-in jailbreak templates file."""
    return Path(
        str(
            resources.files("drirl.plugins.benchmarks")
            / "data/jailbreak_templates.yaml"
        )
    )


@dataclass(frozen=True)
class JailbreakTemplate:
    """A named wrapper around a harmful prompt; ``text`` contains ``{prompt}`` once."""

    name: str
    text: str
    description: str = ""

    def wrap(self, prompt: str) -> str:
        """Return the template text with ``prompt`` in place of ``{prompt}``."""
        return self.text.replace(PLACEHOLDER, prompt)


def load_templates(path: Path) -> list[JailbreakTemplate]:
    """Read a templates YAML file: ``templates:`` a list of {name, text, description}.

    Each text must contain ``{prompt}`` exactly once and each name must be unique.
    """
    if not path.is_file():
        raise TemplateFileError(f"jailbreak templates file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TemplateFileError(f"{path}: malformed YAML: {exc}") from None
    entries = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TemplateFileError(
            f"{path}: expected a mapping with a non-empty list under 'templates'"
        )
    templates: list[JailbreakTemplate] = []
    for index, entry in enumerate(entries):
        where = f"{path}: templates[{index}]"
        if not isinstance(entry, dict):
            raise TemplateFileError(f"{where} must be a mapping with 'name' and 'text'")
        name, text = entry.get("name"), entry.get("text")
        if (
            not isinstance(name, str)
            or not name.strip()
            or "/" in name
            or ID_SEPARATOR in name
        ):
            raise TemplateFileError(
                f"{where}: 'name' must be a non-empty string without '/' or "
                f"{ID_SEPARATOR!r}, got {name!r}"
            )
        if not isinstance(text, str) or text.count(PLACEHOLDER) != 1:
            raise TemplateFileError(
                f"{where} ({name}): 'text' must contain {PLACEHOLDER} exactly once"
            )
        if any(template.name == name for template in templates):
            raise TemplateFileError(f"{where}: template name {name!r} is used twice")
        description = entry.get("description", "")
        templates.append(JailbreakTemplate(name, text, str(description)))
    return templates


@dataclass(frozen=True)
class JailbreakSettings(JudgedBenchmarkSettings):
    """Settings of the jailbreak benchmark."""

    templates: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "names of the templates to run (all if null)"},
    )
    templates_file: str | None = field(
        default=None,
        metadata={
            "help": "YAML file of templates to use in place of the built-in ones"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.templates is not None:
            names = self.templates
            if isinstance(names, str) or not names:
                raise ValueError(
                    f"templates must be a non-empty list of template names, got {names!r}"
                )
            object.__setattr__(self, "templates", tuple(names))
        available = [t.name for t in load_templates(self.templates_path())]
        for name in self.templates or ():
            if name not in available:
                raise ValueError(
                    f"templates lists unknown template {name!r}; "
                    f"known templates: {', '.join(available)}"
                )

    def templates_path(self) -> Path:
        """Return the templates file in use: ``templates_file`` or the built-in one."""
        if self.templates_file is None:
            return builtin_templates_path()
        return Path(self.templates_file).expanduser().resolve()


class Jailbreak(JudgedBenchmark):
    """Reports ``jailbreak_refusal/<template>`` and ``jailbreak_refusal/all``.

    The rate is the share of wrapped harmful prompts whose response the judge labelled a
    refusal, so higher is safer.
    """

    name: ClassVar[str] = "jailbreak"
    Settings: ClassVar[type] = JailbreakSettings
    record_kind: ClassVar[RecordKind] = "harmful"
    metric_prefix: ClassVar[str] = "jailbreak_refusal"

    @cached_property
    def templates(self) -> list[JailbreakTemplate]:
        """The selected templates, in file order."""
        loaded = load_templates(self.settings.templates_path())
        if self.settings.templates is None:
            return loaded
        return [t for t in loaded if t.name in self.settings.templates]

    def data_fingerprint(self) -> str:
        """Return a hash of the templates file, so edited templates are evaluated anew."""
        content = self.settings.templates_path().read_bytes()
        return hashlib.sha256(content).hexdigest()[:16]

    def is_hit(self, judgement: Judgement) -> bool:
        """Return True when the judge labelled the response a refusal."""
        return judgement.label == "refusal"

    def eval_records(self, records: Sequence[Record]) -> list[Record]:
        """Wrap each harmful eval record in every selected template, template by template."""
        harmful = super().eval_records(records)
        return [
            Record(
                id=f"{record.id}{ID_SEPARATOR}{template.name}",
                category=record.category,
                kind=record.kind,
                prompt=template.wrap(record.prompt),
                demonstration=record.demonstration,
                split=record.split,
            )
            for template in self.templates
            for record in harmful
        ]

    def group_of(self, record: Record) -> str:
        """Return the template name stored after the id separator."""
        return record.id.rsplit(ID_SEPARATOR, 1)[1]

    def sample_fields(self, record: Record) -> dict[str, Any]:
        """Return the template name and the id of the unwrapped harmful record."""
        source_id, template = record.id.rsplit(ID_SEPARATOR, 1)
        return {"template": template, "source_id": source_id}


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the jailbreak benchmark."""
    register(Jailbreak)
