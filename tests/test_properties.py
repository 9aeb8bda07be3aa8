"""Property tests: the experiment and dataset loaders fail only with drirl errors.

Random experiments (known and unknown fields with values of any YAML type) must load into
an Experiment or raise a DrirlError, never a KeyError, TypeError or AttributeError. Random
JSONL files (valid rows, broken rows, random JSON and invalid UTF-8 bytes) must load into
records or raise a DatasetError that names the file and, for a bad row, its line.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drirl.config import DEFAULTS, Experiment, load_experiment, read_yaml
from drirl.dataset import REQUIRED_FIELDS, load_records
from drirl.errors import ConfigError, DatasetError, DrirlError

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@functools.lru_cache(maxsize=1)
def plugins():
    from drirl.plugin_manager import load_plugins

    return load_plugins(use_entry_points=False)


# Values of any type YAML can produce, nested a little.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "all",
            "none",
            "grpo",
            "grpo_s",
            "clip",
            "clip*reward_gap",
            "insult",
            "embedded",
        ]
        + ["bradley_terry", "refusal_phrases", "harmful_refusal", "base", "../x", "~"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers()), inner, max_size=3
        ),
    ),
    max_leaves=6,
)
FIELD_PATHS = [
    "optimizer",
    "seed",
    "scaler",
    "model",
    "categories",
    "reward",
    "reward.learner",
    "reward.settings",
    "training.learning_rate",
    "training.steps",
    "data.train_per_category",
    "evaluation.benchmarks",
    "evaluation",
    "baselines",
    "matrix",
    "seed.x",
]


@st.composite
def nested_mapping(draw, key: str):
    """A mapping for a nested field: its known sub-keys with random values, maybe one more."""
    known = list(DEFAULTS[key]) if isinstance(DEFAULTS[key], dict) else []
    names = draw(st.lists(st.sampled_from(known or ["x"]), max_size=3, unique=True))
    mapping = {name: draw(values) for name in names}
    if draw(st.integers(min_value=0, max_value=7)) == 0:
        mapping[draw(st.text(max_size=6))] = draw(values)
    return mapping


@st.composite
def matrices(draw):
    axes = draw(
        st.dictionaries(
            st.one_of(st.sampled_from(FIELD_PATHS), st.text(max_size=6), st.integers()),
            st.one_of(st.lists(values, max_size=3), values),
            max_size=3,
        )
    )
    for key in ("include", "exclude"):
        if draw(st.booleans()):
            entries = st.dictionaries(
                st.one_of(st.sampled_from(FIELD_PATHS + ["id"]), st.text(max_size=4)),
                values,
                max_size=3,
            )
            axes[key] = draw(st.one_of(st.lists(entries, max_size=2), values))
    return axes


@st.composite
def experiments(draw):
    raw = {}
    for key in draw(st.lists(st.sampled_from(list(DEFAULTS)), max_size=6, unique=True)):
        kind = draw(st.integers(min_value=0, max_value=2))
        if key == "matrix" and kind:
            raw[key] = draw(matrices())
        elif kind == 1 and isinstance(DEFAULTS[key], dict):
            raw[key] = draw(nested_mapping(key))
        else:
            raw[key] = draw(values)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        raw[draw(st.text(max_size=8))] = draw(values)
    return raw


@PROPERTY_SETTINGS
@given(experiments())
def test_experiment_loads_or_config_error(raw):
    try:
        experiment = load_experiment(raw, plugins(), file="random.yaml")
    except DrirlError as exc:
        assert str(exc)
        if isinstance(exc, ConfigError):
            assert exc.file == "random.yaml"
        return
    assert isinstance(experiment, Experiment)
    assert experiment.cells


@PROPERTY_SETTINGS
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_yaml_text_reads_or_config_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "experiment.yaml"
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        else:
            path.write_bytes(text)
        try:
            data = read_yaml(path)
        except ConfigError as exc:
            assert exc.file == str(path)
            return
        assert isinstance(data, dict)


@PROPERTY_SETTINGS
@given(experiments())
def test_experiment_yaml_round_trip(raw):
    try:
        text = yaml.safe_dump(raw)
    except yaml.YAMLError:
        return  # a value that YAML cannot represent
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "experiment.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_experiment(path, plugins())
        except DrirlError as exc:
            assert str(path) in str(exc) or not isinstance(exc, ConfigError)


# Datasets

GOOD_ROW = {
    "id": "x",
    "category": "insult",
    "kind": "harmful",
    "prompt": "Insult my neighbour.",
    "demonstration": "Draft: insult -> refuse.\nI can't help with that.",
    "split": "train",
}
field_values = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["harmful", "benign", "train", "eval", "insult", " ", ""]),
    values,
)


@st.composite
def row_lines(draw, index: int) -> bytes:
    """One JSONL line: a valid row, a row with a changed or missing field, or noise."""
    choice = draw(st.integers(min_value=0, max_value=5))
    row = {**GOOD_ROW, "id": f"r{index}"}
    if choice == 0:
        return json.dumps(row).encode("utf-8")
    if choice == 1:
        row[draw(st.sampled_from(REQUIRED_FIELDS))] = draw(field_values)
        return json.dumps(row, ensure_ascii=draw(st.booleans())).encode(
            "utf-8", "surrogatepass"
        )
    if choice == 2:
        row.pop(draw(st.sampled_from(REQUIRED_FIELDS)))
        return json.dumps(row).encode("utf-8")
    if choice == 3:
        return json.dumps(draw(values)).encode("utf-8")
    if choice == 4:
        return draw(st.binary(max_size=40)).replace(b"\n", b" ")
    text = json.dumps(row).encode("utf-8")
    cut = draw(st.integers(min_value=0, max_value=len(text)))
    return text[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b""]))


@st.composite
def jsonl_files(draw) -> list[bytes]:
    count = draw(st.integers(min_value=0, max_value=6))
    return [draw(row_lines(index)) for index in range(count)]


def write_jsonl(folder: str, lines: list[bytes]) -> Path:
    path = Path(folder) / "data.jsonl"
    path.write_bytes(b"\n".join(lines))
    return path


@PROPERTY_SETTINGS
@given(jsonl_files())
def test_dataset_loads_or_dataset_error(lines):
    with tempfile.TemporaryDirectory() as folder:
        path = write_jsonl(folder, lines)
        try:
            records = load_records(path)
        except DatasetError as exc:
            assert exc.file == str(path)
            assert str(exc).startswith(str(path))
            if exc.line is not None:
                assert 1 <= exc.line <= max(len(lines), 1)
                assert str(exc).startswith(f"{path}:{exc.line}: ")
            else:
                assert "not found" in str(exc) or "no records" in str(exc)
            return
        assert records
        assert len({record.id for record in records}) == len(records)


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20).filter(str.strip),
            st.sampled_from(["harmful", "benign"]),
            st.sampled_from(["train", "eval"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_dataset_valid_rows_round_trip(rows):
    lines = [
        json.dumps(
            {**GOOD_ROW, "id": f"r{i}", "prompt": prompt, "kind": kind, "split": split},
            ensure_ascii=False,
        ).encode("utf-8", "surrogatepass")
        for i, (prompt, kind, split) in enumerate(rows)
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = write_jsonl(folder, lines)
        try:
            records = load_records(path)
        except DatasetError as exc:
            # A lone surrogate cannot be UTF-8, so that line must be the one named.
            assert "not valid UTF-8" in str(exc)
            assert any(0xD800 <= ord(c) <= 0xDFFF for c in rows[exc.line - 1][0])
            return
    assert [(r.prompt, r.kind, r.split) for r in records] == rows
