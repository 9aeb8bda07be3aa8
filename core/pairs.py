"""Preference pairs built from demonstrations, for reward learners that train on fixed pairs.

Two kinds of pair come out of a harm category's train split:

- harmful prompt: chosen = its safe demonstration, rejected = a base-model sample, which for
  an uncensored base model usually complies with the request;
- benign look-alike prompt: chosen = its helpful demonstration, rejected = a refusal taken
  from a harmful demonstration of the same category, so refusing a benign request ranks below
  answering it;
- with ``style_matched``, two more kinds whose sides are both written by the project, so
  that only refusing or answering tells them apart:
  harmful prompt: chosen = its safe demonstration, rejected = the helpful answer of a benign
  look-alike of the same category (``harmful_vs_answer``);
  benign prompt: chosen = its helpful demonstration, rejected = a whole harmful
  demonstration, drafts included (``benign_vs_drafted_refusal``).
  Without them a reward model can separate the first kind by who wrote the response (the
  project or the base model) and reward drafted text as such. A policy trained against it
  then complies in the project's style, or drafts a refusal for every prompt.
- with ``warm_start_refusals``, each benign train prompt's answer against the
  warm-started policy's drafted refusal of that prompt (``benign_vs_warm_start_refusal``).
  The policy writes it when its response is started with the benign demonstration's
  draft turned to a refusal (``drafted_refusal_prefix``), so it is the on-topic refusal an
  over-refusing policy would write.
- with ``warm_start_compliance``, the mirror image: each harmful train prompt's refusal
  against the warm-started policy's compliance, started with the prompt's draft turned to
  an answer (``harmful_vs_warm_start_compliance``).
- with ``warm_start_samples``, pairs of two samples of the warm-started policy for the
  same train prompt (harmful and benign): the one closer to the prompt's demonstration in
  text-embedding similarity is chosen (``harmful_vs_warm_start``, ``benign_vs_warm_start``).
  The other kinds reject only off-topic text or base-model writing. None of them ranks the
  policy's own on-topic refusal of a benign prompt below its own answer; these do.

Base-model samples are drawn once and cached in a JSONL file, so a rerun reuses them.
Pairs can also come from a file (``load_pairs_file``) with prompt, chosen, rejected and
optional margin and category columns.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from drirl.atomic import write_text_atomic
from drirl.components import Record, RunContext
from drirl.dataset import select
from drirl.errors import DatasetError, DrirlError

logger = logging.getLogger(__name__)

HARMFUL_PAIR = "harmful_vs_sample"
BENIGN_PAIR = "benign_vs_refusal"
ANSWER_PAIR = "harmful_vs_answer"
DRAFTED_REFUSAL_PAIR = "benign_vs_drafted_refusal"
# The pair kinds that ``style_matched`` adds.
STYLE_MATCHED_PAIRS = (ANSWER_PAIR, DRAFTED_REFUSAL_PAIR)
# Pairs of two warm-start samples, the one closer to the demonstration chosen.
HARMFUL_WARM_PAIR = "harmful_vs_warm_start"
BENIGN_WARM_PAIR = "benign_vs_warm_start"
WARM_START_SAMPLES_FILE = "warm_start_samples.jsonl"
# A benign prompt's answer against the warm-started policy's drafted refusal of it.
BENIGN_WARM_REFUSAL_PAIR = "benign_vs_warm_start_refusal"
WARM_START_REFUSALS_FILE = "warm_start_refusals.jsonl"
# A harmful prompt's refusal against the warm-started policy's drafted compliance with it.
HARMFUL_WARM_COMPLIANCE_PAIR = "harmful_vs_warm_start_compliance"
WARM_START_COMPLIANCE_FILE = "warm_start_compliance.jsonl"
FILE_PAIR = "pairs_file"
PAIR_FILE_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a chosen and a rejected response, and where the pair came from.

    ``margin`` is subtracted from the reward difference in the loss, so a pair with a larger
    margin is pushed further apart. ``category`` is None for a file row without one, until
    the learner routes it.
    """

    record_id: str
    category: str | None
    source: str
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0


def refusal_line(demonstration: str) -> str:
    """Return the refusal of a harmful demonstration, which is its last non-empty line.

    Demonstrations are Chain-of-Draft steps followed by the refusal on the final line.
    """
    lines = [line.strip() for line in demonstration.splitlines() if line.strip()]
    if not lines:
        raise DrirlError("a harmful demonstration is empty, so it has no refusal line")
    return lines[-1]


def _pair(record: Record, source: str, rejected: str) -> PreferencePair:
    """Build the pair of ``record``'s prompt with its demonstration as the chosen side."""
    return PreferencePair(
        record_id=record.id,
        category=record.category,
        source=source,
        prompt=record.prompt,
        chosen=record.demonstration,
        rejected=rejected,
    )


def build_pairs(
    records: Sequence[Record],
    samples: Mapping[str, str],
    split: str = "train",
    style_matched: bool = False,
) -> list[PreferencePair]:
    """Build the preference pairs of the ``split`` split of ``records``.

    ``samples`` maps the id of each harmful record of the split to its model sample. The
    benign record at position i of its category is paired with the refusal of harmful
    record i mod H of the same category and split (H such records), so the choice is
    deterministic and spreads over the category's refusals. With ``style_matched``, the
    harmful record at position i is also paired with the demonstration of benign record
    i mod B. The benign record at position i is also paired with the whole demonstration
    of harmful record i mod H.
    """
    train = select(records, split=split)
    harmful_by_category: dict[str, list[Record]] = {}
    for record in select(train, kind="harmful"):
        harmful_by_category.setdefault(record.category, []).append(record)
    benign_by_category: dict[str, list[Record]] = {}
    for record in select(train, kind="benign"):
        benign_by_category.setdefault(record.category, []).append(record)
    harmful_seen: dict[str, int] = {}

    pairs: list[PreferencePair] = []
    benign_seen: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for record in train:
        if record.kind == "harmful":
            if record.id not in samples:
                raise DrirlError(
                    f"no base-model sample for harmful record {record.id!r}; generate the "
                    "samples of every harmful train record before building pairs"
                )
            rejected = samples[record.id]
            source = HARMFUL_PAIR
            answers = benign_by_category.get(record.category, [])
            if style_matched and answers:
                position = harmful_seen.get(record.category, 0)
                harmful_seen[record.category] = position + 1
                answer = answers[position % len(answers)].demonstration
                pairs.append(_pair(record, ANSWER_PAIR, answer))
        else:
            refusals = harmful_by_category.get(record.category, [])
            if not refusals:
                skipped[record.category] = skipped.get(record.category, 0) + 1
                continue
            position = benign_seen.get(record.category, 0)
            benign_seen[record.category] = position + 1
            refusal = refusals[position % len(refusals)].demonstration
            rejected = refusal_line(refusal)
            source = BENIGN_PAIR
            if style_matched:
                pairs.append(_pair(record, DRAFTED_REFUSAL_PAIR, refusal))
        pairs.append(_pair(record, source, rejected))

    for category, count in skipped.items():
        logger.warning(
            "skipped %d benign record(s) of category %r: the category has no harmful train "
            "record to take a refusal from",
            count,
            category,
        )
    return pairs


def ranked_pair(
    demonstration: torch.Tensor, samples: torch.Tensor, min_gap: float
) -> tuple[int, int, float] | None:
    """Return (closest, furthest, gap) of ``samples`` by cosine to ``demonstration``.

    Embeddings are unit vectors (rows of ``samples``). None when the gap between the
    closest and the furthest sample is not above ``min_gap``.
    """
    similarity = samples @ demonstration
    closest = int(similarity.argmax())
    furthest = int(similarity.argmin())
    gap = float(similarity[closest] - similarity[furthest])
    if gap <= min_gap:
        return None
    return closest, furthest, gap


def warm_start_pairs(
    records: Sequence[Record],
    out_dir: Path,
    *,
    count: int,
    min_gap: float,
    max_new_tokens: int,
    ctx: RunContext,
    split: str = "train",
) -> list[PreferencePair]:
    """Pair samples of the warm-started policy by their similarity to the demonstration.

    Each prompt of ``split`` gets ``count`` samples (temperature 1.0). The sample whose
    text embedding is closest to the prompt's demonstration is chosen over the furthest
    one, when their cosine similarities differ by more than ``min_gap``. Both sides are
    the policy's own writing, so its style cannot decide the pair. Measured with the
    embedded encoder on a trained policy's eval responses: benign answers averaged 0.70
    similarity to their demonstration and benign refusals 0.44; harmful refusals 0.70
    and harmful compliance 0.29. The samples and their similarities are written to
    ``out_dir/warm_start_samples.jsonl``.
    """
    from drirl.generation import generate_responses
    from drirl.text_encoder import load_text_encoder

    if ctx.warm_start_model is None:
        raise DrirlError(
            f"warm_start_samples is {count}, but this run has no warm-started model to "
            "sample; set the experiment's warm_start, or set warm_start_samples to 0"
        )
    split_records = select(records, split=split)
    prompts = [record.prompt for record in split_records for _ in range(count)]
    logger.info(
        "sampling %d responses of the warm-started policy %s",
        len(prompts),
        ctx.warm_start_model,
    )
    responses = generate_responses(
        ctx.warm_start_model,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=1.0,
        seed=ctx.seed,
        show_progress=ctx.show_progress,
        description="warm-start samples",
        trust_remote_code=ctx.trust_remote_code,
    )
    encoder = load_text_encoder(ctx.text_encoder)
    sample_embeddings = encoder.encode(responses)
    demo_embeddings = encoder.encode([record.demonstration for record in split_records])
    pairs: list[PreferencePair] = []
    rows: dict[str, dict] = {}
    for index, record in enumerate(split_records):
        group = slice(index * count, (index + 1) * count)
        texts = responses[group]
        similarity = sample_embeddings[group] @ demo_embeddings[index]
        for number, (text, value) in enumerate(zip(texts, similarity.tolist())):
            rows[f"{record.id}/{number}"] = {
                "id": record.id,
                "prompt": record.prompt,
                "sample": text,
                "similarity": round(value, 4),
            }
        ranked = ranked_pair(demo_embeddings[index], sample_embeddings[group], min_gap)
        if ranked is None:
            continue
        closest, furthest, _ = ranked
        source = HARMFUL_WARM_PAIR if record.kind == "harmful" else BENIGN_WARM_PAIR
        pairs.append(
            replace(_pair(record, source, texts[furthest]), chosen=texts[closest])
        )
    _write_samples(Path(out_dir) / WARM_START_SAMPLES_FILE, rows)
    logger.info(
        "%d of %d prompts have warm-start samples more than %.2f apart in similarity "
        "to the demonstration; each gives one pair",
        len(pairs),
        len(split_records),
        min_gap,
    )
    return pairs


def turned_draft_prefix(demonstration: str, other: str) -> str | None:
    """Return ``demonstration``'s draft line ending in ``other``'s decision, or None.

    Both texts must open with the same draft marker, and both first lines must have two
    or more ``->`` steps. The prefix is ``demonstration``'s first line up to its last step,
    ended by the first word of ``other``'s last draft step. For example, ``Draft: stealing
    bases -> baseball tactic -> answer.`` with a harmful demonstration ending in ``->
    decline, ...`` gives ``Draft: stealing bases -> baseball tactic -> decline``.
    """
    marker = other.split()[:1]
    steps = demonstration.split("\n", 1)[0].split("->")
    other_steps = other.split("\n", 1)[0].split("->")
    decision = other_steps[-1].split()
    if not marker or demonstration.split()[:1] != marker:
        return None
    if len(steps) < 2 or len(other_steps) < 2 or not decision:
        return None
    return "->".join(steps[:-1]) + "-> " + decision[0].rstrip(",.;:")


def drafted_refusal_prefix(answer: str, refusal: str) -> str:
    """Return the text that the warm-started policy's refusal of a benign prompt starts with.

    ``answer`` is the benign prompt's demonstration and ``refusal`` a harmful demonstration
    of its category. The prefix is the answer's draft turned to the refusal's decision
    (``turned_draft_prefix``), so the policy refuses the prompt in its own words after the
    project's draft of it. When the draft cannot be turned, the prefix is the refusal's
    first word, the draft marker alone.
    """
    turned = turned_draft_prefix(answer, refusal)
    if turned is not None:
        return turned
    words = refusal.split()
    return words[0] if words else ""


def _first_demonstrations(records: Sequence[Record], kind: str) -> dict[str, str]:
    """Map each category to its first non-empty demonstration of ``kind``."""
    first: dict[str, str] = {}
    for record in select(records, kind=kind):
        if record.demonstration.split():
            first.setdefault(record.category, record.demonstration)
    return first


def _prefixed_warm_start_pairs(
    prefixed: Sequence[tuple[Record, str]],
    source: str,
    samples_file: Path,
    *,
    max_new_tokens: int,
    ctx: RunContext,
    description: str,
) -> list[PreferencePair]:
    """Pair each record's demonstration against the warm-started policy's continuation.

    Each record's greedy response is started with its prefix. The responses are written
    to ``samples_file``.
    """
    from drirl.generation import generate_responses

    if not prefixed:
        _write_samples(samples_file, {})
        return []
    records = [record for record, _ in prefixed]
    responses = generate_responses(
        ctx.warm_start_model,
        [record.prompt for record in records],
        max_new_tokens=max_new_tokens,
        seed=ctx.seed,
        show_progress=ctx.show_progress,
        description=description,
        trust_remote_code=ctx.trust_remote_code,
        response_prefix=[prefix for _, prefix in prefixed],
    )
    pairs: list[PreferencePair] = []
    rows: dict[str, dict] = {}
    for record, response in zip(records, responses, strict=True):
        pairs.append(_pair(record, source, response))
        rows[record.id] = {"id": record.id, "prompt": record.prompt, "sample": response}
    _write_samples(samples_file, rows)
    return pairs


def _check_warm_start_model(ctx: RunContext, setting: str) -> None:
    if ctx.warm_start_model is None:
        raise DrirlError(
            f"{setting} is true, but this run has no warm-started model to sample; set "
            f"the experiment's warm_start, or set {setting} to false"
        )


def warm_start_refusal_pairs(
    records: Sequence[Record],
    out_dir: Path,
    *,
    max_new_tokens: int,
    ctx: RunContext,
    split: str = "train",
) -> list[PreferencePair]:
    """Pair each benign prompt's answer against the warm-started policy's drafted refusal.

    The policy's greedy response to each benign prompt of ``split`` is started with the
    ``drafted_refusal_prefix`` of its demonstration and its category's first harmful
    demonstration. The refusals are written to ``out_dir/warm_start_refusals.jsonl``.
    """
    _check_warm_start_model(ctx, "warm_start_refusals")
    train = select(records, split=split)
    first_refusal = _first_demonstrations(train, "harmful")
    all_benign = select(train, kind="benign")
    benign = [record for record in all_benign if record.category in first_refusal]
    skipped = len(all_benign) - len(benign)
    if skipped:
        logger.warning(
            "%d benign record(s) get no drafted refusal: their category has no harmful "
            "train demonstration to take the draft marker from",
            skipped,
        )
    prefixed = [
        (record, drafted_refusal_prefix(record.demonstration, first_refusal[record.category]))
        for record in benign
    ]
    return _prefixed_warm_start_pairs(
        prefixed,
        BENIGN_WARM_REFUSAL_PAIR,
        Path(out_dir) / WARM_START_REFUSALS_FILE,
        max_new_tokens=max_new_tokens,
        ctx=ctx,
        description="warm-start drafted refusals",
    )


def warm_start_compliance_pairs(
    records: Sequence[Record],
    out_dir: Path,
    *,
    max_new_tokens: int,
    ctx: RunContext,
    split: str = "train",
) -> list[PreferencePair]:
    """Pair each harmful prompt's refusal against the warm-started policy's drafted compliance.

    The policy's greedy response to each harmful prompt of ``split`` is started with the
    prompt's draft turned to the decision of its category's first benign demonstration
    (``turned_draft_prefix``). In the built-in data that decision is ``answer``. The
    response is then the on-topic compliance an under-refusing policy would write. A
    harmful prompt whose draft cannot be turned gets no pair. The responses are written to
    ``out_dir/warm_start_compliance.jsonl``.
    """
    _check_warm_start_model(ctx, "warm_start_compliance")
    train = select(records, split=split)
    first_answer = _first_demonstrations(train, "benign")
    prefixed: list[tuple[Record, str]] = []
    for record in select(train, kind="harmful"):
        answer = first_answer.get(record.category)
        prefix = None if answer is None else turned_draft_prefix(record.demonstration, answer)
        if prefix is not None:
            prefixed.append((record, prefix))
    skipped = len(select(train, kind="harmful")) - len(prefixed)
    if skipped:
        logger.warning(
            "%d harmful record(s) get no drafted compliance: their demonstration or their "
            "category's first benign demonstration has no draft line of two or more '->' "
            "steps",
            skipped,
        )
    return _prefixed_warm_start_pairs(
        prefixed,
        HARMFUL_WARM_COMPLIANCE_PAIR,
        Path(out_dir) / WARM_START_COMPLIANCE_FILE,
        max_new_tokens=max_new_tokens,
        ctx=ctx,
        description="warm-start drafted compliance",
    )


def load_or_generate_samples(
    policy_path: Path,
    records: Sequence[Record],
    cache_file: Path,
    *,
    max_new_tokens: int,
    ctx: RunContext,
    split: str = "train",
) -> dict[str, str]:
    """Return a greedy base-model sample for each harmful record of ``split``, by record id.

    Samples already in ``cache_file`` are reused when their prompt, policy and
    ``max_new_tokens`` match; the others are generated and the file is rewritten atomically.
    """
    from drirl.generation import generate_responses

    harmful = select(records, split=split, kind="harmful")
    cached = _read_samples(cache_file)
    policy = str(policy_path)
    samples: dict[str, str] = {}
    missing: list[Record] = []
    for record in harmful:
        row = cached.get(record.id)
        if (
            row is not None
            and row.get("prompt") == record.prompt
            and row.get("policy") == policy
            and row.get("max_new_tokens") == max_new_tokens
        ):
            samples[record.id] = row["sample"]
        else:
            missing.append(record)

    if not missing:
        logger.info(
            "reusing %d cached base-model samples from %s", len(samples), cache_file
        )
        return samples

    logger.info("sampling %d base-model responses from %s", len(missing), policy_path)
    generated = generate_responses(
        policy_path,
        [r.prompt for r in missing],
        max_new_tokens=max_new_tokens,
        do_sample=False,
        seed=ctx.seed,
        show_progress=ctx.show_progress,
        description="base-model samples",
        trust_remote_code=ctx.trust_remote_code,
    )
    for record, sample in zip(missing, generated, strict=True):
        samples[record.id] = sample
        cached[record.id] = {
            "id": record.id,
            "prompt": record.prompt,
            "policy": policy,
            "max_new_tokens": max_new_tokens,
            "sample": sample,
        }
    _write_samples(cache_file, cached)
    return samples


def _read_samples(cache_file: Path) -> dict[str, dict]:
    if not cache_file.is_file():
        return {}
    rows: dict[str, dict] = {}
    for line_no, text in enumerate(
        cache_file.read_text(encoding="utf-8").splitlines(), 1
    ):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            # A damaged cache costs only a regeneration, so it is not an error.
            logger.warning(
                "ignoring invalid line %d of sample cache %s", line_no, cache_file
            )
            continue
        if isinstance(row, dict) and isinstance(row.get("id"), str):
            rows[row["id"]] = row
    return rows


def _write_samples(cache_file: Path, rows: Mapping[str, dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows.values())
    write_text_atomic(cache_file, text)


def pairs_to_rows(pairs: Sequence[PreferencePair]) -> list[dict[str, str]]:
    """Return the pairs as plain dicts, for saving or for a datasets.Dataset."""
    return [asdict(pair) for pair in pairs]


def _pair_from_row(row: Any, path: Path, line: int) -> PreferencePair:
    if not isinstance(row, dict):
        raise DatasetError("a pair must be a JSON object", file=path, line=line)
    for name in PAIR_FILE_COLUMNS:
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(
                f"column {name!r} is missing or empty; a pair needs non-empty "
                f"{', '.join(PAIR_FILE_COLUMNS)} (margin and category are optional)",
                file=path,
                line=line,
            )
    margin = row.get("margin")
    if margin is None or margin == "":
        margin = 0.0
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise DatasetError(
            f"margin {row.get('margin')!r} is not a number", file=path, line=line
        ) from None
    if not math.isfinite(margin):
        raise DatasetError(f"margin {margin} is not finite", file=path, line=line)
    category = row.get("category")
    if category is not None and not isinstance(category, str):
        raise DatasetError(
            f"category {category!r} must be a string", file=path, line=line
        )
    return PreferencePair(
        record_id=f"{path.name}:{line}",
        category=category.strip() or None if category else None,
        source=FILE_PAIR,
        prompt=row["prompt"],
        chosen=row["chosen"],
        rejected=row["rejected"],
        margin=margin,
    )


def load_pairs_file(path: Path) -> list[PreferencePair]:
    """Read preference pairs from a JSONL or CSV file; errors name the file and line.

    Columns: ``prompt``, ``chosen``, ``rejected`` (required), ``margin`` (number, default 0)
    and ``category`` (a harm category name; empty or absent means route by prompt).
    CSV line numbers count the header as line 1.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("pairs file not found", file=path)
    suffix = path.suffix.lower()
    rows: list[tuple[int, Any]] = []
    if suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8")
        for line, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                rows.append((line, json.loads(raw)))
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"invalid JSON: {exc.msg}", file=path, line=line
                ) from None
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream)
            missing = [
                c for c in PAIR_FILE_COLUMNS if c not in (reader.fieldnames or [])
            ]
            if missing:
                raise DatasetError(
                    f"the header lacks column(s) {', '.join(missing)}",
                    file=path,
                    line=1,
                )
            rows = [(reader.line_num, row) for row in reader]
    else:
        raise DatasetError(
            f"unknown pairs file type {path.suffix!r}; use .jsonl or .csv", file=path
        )
    pairs = [_pair_from_row(row, path, line) for line, row in rows]
    if not pairs:
        raise DatasetError("the pairs file contains no pairs", file=path)
    return pairs
