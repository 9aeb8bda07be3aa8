"""The local_hf generator with the embedded SmolLM2-135M-Instruct model."""

from __future__ import annotations

import pytest
import torch

from drirl.plugins.generators.local_hf import LocalHFGenerator, LocalHFSettings

MESSAGES = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What colour is the sky on a clear day?"},
]


@pytest.fixture(autouse=True)
def one_thread():
    # Many test processes share two CPU cores here, and competing OpenMP threads slow
    # small-batch generation several times over; one thread avoids that.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def greedy(embedded_policy):
    return LocalHFGenerator(
        LocalHFSettings(model=str(embedded_policy), max_new_tokens=8)
    )


def test_local_hf_greedy_repeats(greedy):
    first = greedy.generate(MESSAGES)
    second = greedy.generate(MESSAGES)
    assert first.text
    assert first.text == second.text
    assert 0 < first.tokens <= 8
    assert first.token_source == "tokenizer"


def test_local_hf_seeded_sampling(embedded_policy):
    def sample(seed: int) -> str:
        settings = LocalHFSettings(
            model=str(embedded_policy),
            max_new_tokens=12,
            do_sample=True,
            temperature=1.5,
            seed=seed,
        )
        return LocalHFGenerator(settings).generate(MESSAGES).text

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_local_hf_registered(plugins):
    assert plugins.get("generator", "local_hf") is LocalHFGenerator


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_new_tokens", 0), ("temperature", 0.0), ("top_p", 1.5), ("model", " ")],
)
def test_local_hf_settings_invalid(field, value):
    with pytest.raises(ValueError, match=field):
        LocalHFSettings(**{field: value})
