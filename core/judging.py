"""Running a judge so that a failure on one response does not lose the others.

``GuardedJudge`` wraps any Judge. It first judges all responses in one call. When that call
raises, it judges each response alone. A response whose call raises again gets the label
"error" with the exception's message in ``Judgement.error``. When every response raises,
the judge cannot run at all, so the wrapper raises JudgeError. The wrapper counts the
"error" labels, whether the wrapped judge returned them or the wrapper recorded them, and
adds the count to the wrapped judge's ``report()``.

Assumptions: a judge that raises on the whole batch is called once more per response, so a
slow judge takes up to twice as long on a batch that fails.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from drirl.components import Judge, Judgement, JudgeRun, Record
from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

ERROR_LABEL = "error"
# Error messages of the first few failures are logged in full; later ones only count.
LOGGED_ERRORS = 5


class JudgeError(DrirlError):
    """A judge that cannot rate a response or cannot start (missing model, bad reply)."""


def error_judgement(message: str, independent: bool = True) -> Judgement:
    """Return the Judgement of a response the judge failed to rate."""
    return Judgement(
        label=ERROR_LABEL, score=0.0, independent=independent, error=message
    )


def check_lengths(prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Raise ValueError unless there is one response per prompt."""
    if len(prompts) != len(responses):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(responses)} responses. "
            "Pass one response per prompt"
        )


def public_settings(settings: Any) -> dict[str, Any]:
    """Return a judge's settings as a dict without the fields marked ``secret`` (API keys).

    Stage inputs are written to ``stage.json`` in the run folder, so a secret must not be
    among them.
    """
    if not dataclasses.is_dataclass(settings):
        return {}
    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if not f.metadata.get("secret")
    }


def records_by_prompt(records: Sequence[Record]) -> dict[str, Record]:
    """Map each prompt text to its record; the first record wins for a repeated prompt."""
    index: dict[str, Record] = {}
    for record in records:
        index.setdefault(record.prompt, record)
    return index


class GuardedJudge(Judge):
    """A judge wrapper that records a failure per response instead of raising."""

    def __init__(self, inner: Judge) -> None:
        super().__init__(inner.settings)
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.judged = 0
        self.errors = 0

    def prepare(self, run: JudgeRun) -> None:
        """Pass the run to the wrapped judge."""
        self.inner.prepare(run)

    def judge(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> list[Judgement]:
        """Return one Judgement per (prompt, response); failures get the label "error"."""
        check_lengths(prompts, responses)
        try:
            judgements = self.inner.judge(prompts, responses)
            if len(judgements) != len(prompts):
                raise JudgeError(
                    f"judge {self.name!r} returned {len(judgements)} judgements for "
                    f"{len(prompts)} responses"
                )
        except Exception as exc:  # noqa: BLE001 - any judge failure is retried per response
            logger.warning(
                "judge %s failed on a batch of %d responses (%s: %s); judging each "
                "response alone",
                self.name,
                len(prompts),
                type(exc).__name__,
                exc,
            )
            judgements = self._judge_each(prompts, responses, exc)
        self._count(judgements)
        return judgements

    def _judge_each(
        self, prompts: Sequence[str], responses: Sequence[str], batch_error: Exception
    ) -> list[Judgement]:
        judgements = []
        raised = 0
        for prompt, response in zip(prompts, responses, strict=True):
            try:
                (judgement,) = self.inner.judge([prompt], [response])
            except Exception as exc:  # noqa: BLE001 - recorded as an "error" label
                raised += 1
                judgement = error_judgement(f"{type(exc).__name__}: {exc}")
            judgements.append(judgement)
        # A judge that raises on every response cannot run at all (a missing model, no
        # reward models), so the run stops with its error instead of rating nothing.
        if raised == len(prompts):
            raise JudgeError(
                f"judge {self.name!r} failed on every one of {len(prompts)} responses: "
                f"{type(batch_error).__name__}: {batch_error}"
            ) from batch_error
        return judgements

    def _count(self, judgements: Sequence[Judgement]) -> None:
        for judgement in judgements:
            self.judged += 1
            if judgement.label != ERROR_LABEL:
                continue
            self.errors += 1
            if self.errors <= LOGGED_ERRORS:
                logger.error(
                    "judge %s could not rate response %d: %s",
                    self.name,
                    self.judged,
                    judgement.error,
                )
            elif self.errors == LOGGED_ERRORS + 1:
                logger.error(
                    "judge %s: more responses failed; only the count is logged from now on",
                    self.name,
                )

    def report(self) -> dict[str, Any]:
        """Return the wrapped judge's report with the judged and error counts."""
        return {
            "judge": self.name,
            **self.inner.report(),
            "judged": self.judged,
            "errors": self.errors,
        }
