"""The openai_chat generator against a local HTTP server.

The server (tests/chat_server.py) runs on 127.0.0.1 and stands in for a remote
OpenAI-compatible API, which the tests cannot reach. Waits between retries go to a recording
function instead of time.sleep, so the backoff delays are checked without sleeping.
"""

from __future__ import annotations

import pytest
from chat_server import CANNED_REFUSAL, ChatServer

from drirl.errors import DrirlError
from drirl.plugins.generators.openai_chat import (
    API_KEY_ENV,
    BASE_URL_ENV,
    OpenAIChatGenerator,
    OpenAIChatSettings,
    RateLimiter,
)

MESSAGES = [
    {"role": "system", "content": "Write a refusal."},
    {"role": "user", "content": "Request: insult my boss"},
]


@pytest.fixture()
def server():
    with ChatServer() as running:
        yield running


def make_generator(server, sleeps=None, **settings):
    recorded = sleeps if sleeps is not None else []
    values = {"base_url": server.base_url, "model": "test-model", **settings}
    return OpenAIChatGenerator(OpenAIChatSettings(**values), sleep=recorded.append)


def test_openai_chat_returns_canned_answer(server):
    generation = make_generator(server, api_key="secret-key").generate(MESSAGES)
    assert generation.text == CANNED_REFUSAL
    assert generation.tokens == len(CANNED_REFUSAL.split()) + 1
    assert generation.token_source == "usage"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["authorization"] == "Bearer secret-key"
    assert request["body"]["messages"] == MESSAGES
    assert request["body"]["model"] == "test-model"


def test_openai_chat_retries_429_and_500(server):
    server.failures = [429, 500]
    sleeps: list[float] = []
    generator = make_generator(server, sleeps, backoff_s=0.5)
    generation = generator.generate(MESSAGES)
    assert generation.text == CANNED_REFUSAL
    assert len(server.requests) == 3
    # Exponential backoff: 0.5 s, then 0.5 * 2 = 1.0 s.
    assert sleeps == [0.5, 1.0]


def test_openai_chat_backoff_capped(server):
    server.failures = [503, 503, 503]
    sleeps: list[float] = []
    make_generator(server, sleeps, backoff_s=1.0, max_backoff_s=3.0).generate(MESSAGES)
    assert sleeps == [1.0, 2.0, 3.0]


def test_openai_chat_gives_up_after_retries(server):
    server.failures = [500, 500, 500]
    with pytest.raises(DrirlError, match="failed after 3 attempt"):
        make_generator(server, max_retries=2, backoff_s=0.0).generate(MESSAGES)


def test_openai_chat_client_error_not_retried(server):
    server.failures = [400]
    with pytest.raises(DrirlError, match="HTTP 400"):
        make_generator(server).generate(MESSAGES)
    assert len(server.requests) == 1


def test_openai_chat_connection_error_retried():
    with ChatServer() as stopped:
        base_url = stopped.base_url
    sleeps: list[float] = []
    generator = OpenAIChatGenerator(
        OpenAIChatSettings(base_url=base_url, model="m", max_retries=2, backoff_s=0.25),
        sleep=sleeps.append,
    )
    with pytest.raises(DrirlError, match="ConnectionRefusedError|URLError"):
        generator.generate(MESSAGES)
    assert sleeps == [0.25, 0.5]


def test_openai_chat_settings_from_environment(server, monkeypatch):
    monkeypatch.setenv(BASE_URL_ENV, server.base_url)
    monkeypatch.setenv(API_KEY_ENV, "env-key")
    generator = OpenAIChatGenerator(OpenAIChatSettings(model="m"))
    generator.generate(MESSAGES)
    assert server.requests[0]["authorization"] == "Bearer env-key"
    assert "env-key" not in repr(generator.settings)
    assert "api_key" not in generator.describe()


def test_openai_chat_missing_base_url(monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    with pytest.raises(DrirlError, match=BASE_URL_ENV):
        OpenAIChatGenerator(OpenAIChatSettings(model="m"))


def test_openai_chat_word_count_without_usage(server):
    server.usage = False
    generation = make_generator(server).generate(MESSAGES)
    assert generation.tokens == len(CANNED_REFUSAL.split())
    assert generation.token_source == "words"


def test_rate_limiter_spaces_requests():
    now = [10.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    limiter.wait()
    now[0] += 0.1
    limiter.wait()
    limiter.wait()
    now[0] += 1.0
    limiter.wait()
    # 4 requests per second = 0.25 s apart: the second waits 0.25 - 0.1, the third 0.25,
    # and the fourth comes 1.0 s after the third, so it does not wait.
    assert sleeps == pytest.approx([0.15, 0.25])


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 0), ("requests_per_second", 0.0), ("max_retries", -1)],
)
def test_openai_chat_settings_invalid(field, value):
    with pytest.raises(ValueError, match=field):
        OpenAIChatSettings(**{field: value})


def test_openai_chat_registered(plugins):
    assert plugins.get("generator", "openai_chat") is OpenAIChatGenerator
