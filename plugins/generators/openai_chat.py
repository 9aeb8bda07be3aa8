"""The ``openai_chat`` generator: any server with an OpenAI-compatible chat completions API.

It sends ``POST {base_url}/chat/completions`` with the conversation, and reads
``choices[0].message.content`` and ``usage.completion_tokens`` from the response. The base
URL includes the version path, as in ``https://api.openai.com/v1`` or
``http://127.0.0.1:8000/v1``. The base URL, API key and model come from the settings, or else
from the environment variables DRIRL_GENERATOR_BASE_URL, DRIRL_GENERATOR_API_KEY and
DRIRL_GENERATOR_MODEL. The key is sent as a bearer token and never logged or stored.

HTTP 429, HTTP 5xx, connection errors and timeouts are retried with exponential backoff
(``backoff_s`` doubled per attempt, at most ``max_backoff_s``, or the server's Retry-After
when that is longer). Other HTTP errors fail at once. With ``requests_per_second`` set,
request starts are spaced at least ``1 / requests_per_second`` seconds apart.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from drirl import hookimpl
from drirl.components import Generation, Generator
from drirl.errors import DrirlError
from drirl.hookspecs import Register

logger = logging.getLogger(__name__)

BASE_URL_ENV = "DRIRL_GENERATOR_BASE_URL"
API_KEY_ENV = "DRIRL_GENERATOR_API_KEY"
MODEL_ENV = "DRIRL_GENERATOR_MODEL"


@dataclass(frozen=True)
class OpenAIChatSettings:
    """Settings of the openai_chat generator."""

    model: str | None = field(
        default=None,
        metadata={"help": f"model name sent to the server (or ${MODEL_ENV})"},
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": f"API base URL including /v1 (or ${BASE_URL_ENV})"},
    )
    api_key: str | None = field(
        default=None,
        repr=False,
        metadata={"help": f"API key (or ${API_KEY_ENV}); optional", "secret": True},
    )
    max_tokens: int = field(
        default=512, metadata={"help": "maximum number of generated tokens per call"}
    )
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature"})
    seed: int | None = field(
        default=None, metadata={"help": "seed sent to servers that support one"}
    )
    timeout_s: float = field(
        default=60.0, metadata={"help": "timeout of one HTTP request, in seconds"}
    )
    max_retries: int = field(
        default=5, metadata={"help": "retries after a 429, a 5xx or a connection error"}
    )
    backoff_s: float = field(
        default=1.0, metadata={"help": "wait before the first retry, in seconds"}
    )
    max_backoff_s: float = field(
        default=30.0, metadata={"help": "longest wait between retries, in seconds"}
    )
    requests_per_second: float | None = field(
        default=None, metadata={"help": "maximum request rate; unlimited when unset"}
    )

    def __post_init__(self) -> None:
        positive = {
            "max_tokens": self.max_tokens,
            "timeout_s": self.timeout_s,
            "max_backoff_s": self.max_backoff_s,
        }
        if self.requests_per_second is not None:
            positive["requests_per_second"] = self.requests_per_second
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries!r}")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s must be 0 or more, got {self.backoff_s!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be 0 or more, got {self.temperature!r}")


class RateLimiter:
    """Spaces calls to ``wait`` at least ``1 / per_second`` seconds apart (thread-safe)."""

    def __init__(
        self,
        per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the next request may start."""
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            if self._next is not None and now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


class _RetryableError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date instead of seconds; use the backoff
        return None


class OpenAIChatGenerator(Generator):
    """Generates through an OpenAI-compatible chat completions endpoint."""

    name: ClassVar[str] = "openai_chat"
    Settings: ClassVar[type] = OpenAIChatSettings

    def __init__(
        self,
        settings: OpenAIChatSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(settings)
        s = self.settings
        base_url = s.base_url or os.environ.get(BASE_URL_ENV)
        if not base_url:
            raise DrirlError(
                "openai_chat has no base URL: set the generator setting base_url "
                f"(for example --set base_url=http://127.0.0.1:8000/v1) or ${BASE_URL_ENV}"
            )
        model = s.model or os.environ.get(MODEL_ENV)
        if not model:
            raise DrirlError(
                f"openai_chat has no model: set the generator setting model or ${MODEL_ENV}"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = s.api_key or os.environ.get(API_KEY_ENV)
        self._sleep = sleep
        self._limiter = RateLimiter(s.requests_per_second, sleep=sleep)

    def describe(self) -> dict[str, Any]:
        """Return the settings that decide the output, with the resolved URL and model."""
        values = super().describe()
        values["base_url"] = self.url.removesuffix("/chat/completions")
        values["model"] = self.model
        return values

    def _payload(self, messages: Sequence[dict[str, str]]) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
        }
        if self.settings.seed is not None:
            body["seed"] = self.settings.seed
        return json.dumps(body).encode("utf-8")

    def _post(self, payload: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(
            self.url, data=payload, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self.settings.timeout_s
            ) as reply:
                body = reply.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 429 or 500 <= exc.code < 600:
                raise _RetryableError(
                    f"HTTP {exc.code}: {detail}", _retry_after(exc.headers)
                ) from None
            raise DrirlError(
                f"POST {self.url} failed with HTTP {exc.code}: {detail}. Check the "
                "model name, the API key and the base URL"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise DrirlError(
                f"POST {self.url} returned a body that is not JSON: "
                f"{body[:200].decode('utf-8', 'replace')!r}"
            ) from None

    def _post_with_retries(self, payload: bytes) -> dict[str, Any]:
        s = self.settings
        for attempt in range(s.max_retries + 1):
            self._limiter.wait()
            try:
                return self._post(payload)
            except _RetryableError as exc:
                if attempt == s.max_retries:
                    raise DrirlError(
                        f"POST {self.url} failed after {attempt + 1} attempt(s); last "
                        f"error: {exc}. Raise max_retries or check the server"
                    ) from None
                delay = min(s.max_backoff_s, s.backoff_s * 2**attempt)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, s.max_backoff_s))
                logger.warning(
                    "POST %s failed (%s); retry %d of %d in %.2f s",
                    self.url,
                    exc,
                    attempt + 1,
                    s.max_retries,
                    delay,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def generate(self, messages: Sequence[dict[str, str]]) -> Generation:
        """Return the server's response to ``messages``, retrying transient failures."""
        start = time.perf_counter()
        data = self._post_with_retries(self._payload(messages))
        seconds = time.perf_counter() - start
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise DrirlError(
                f"POST {self.url} returned no choices[0].message.content: "
                f"{json.dumps(data)[:300]}"
            ) from None
        usage = data.get("usage") or {}
        tokens = usage.get("completion_tokens")
        if isinstance(tokens, int):
            return Generation(text.strip(), tokens, seconds, "usage")
        # NOTE: without usage data the count is a word count, which underestimates tokens.
        return Generation(text.strip(), len(text.split()), seconds, "words")


@hookimpl
def register_generators(register: Register) -> None:
    """Register the openai_chat generator."""
    register(OpenAIChatGenerator)
