"""Chat models that LLM judges query: a local transformers model or an OpenAI-compatible API.

Both take conversations (lists of {"role", "content"} messages) and return the assistant's
reply text. ``LocalChatModel`` generates greedily in batches and raises on failure.
``ChatEndpoint`` sends one request per conversation to ``<base_url>/chat/completions``.
It retries timeouts, connection errors, HTTP 408, 429 and 5xx with exponential backoff. A
conversation that still fails gets a ``JudgeError`` in place of its reply, so the other
conversations keep their replies.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import torch

from drirl.judging import JudgeError

logger = logging.getLogger(__name__)

Conversation = Sequence[dict[str, str]]
API_KEY_ENV = "DRIRL_JUDGE_API_KEY"
# HTTP statuses worth retrying: rate limiting and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class LocalChatModel:
    """A local causal LM folder used as a judge, generating greedily on ``device``."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_new_tokens: int,
        batch_size: int = 8,
        device: str = "cpu",
        setting: str = "model_path",
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM

        from drirl.generation import load_tokenizer

        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            raise JudgeError(
                f"judge model folder {str(path)!r} (setting {setting}) not found or has no "
                "config.json; give a local Hugging Face model folder, for example one "
                "saved with save_pretrained"
            )
        self.path = path
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = load_tokenizer(
            path, padding_side="left", trust_remote_code=trust_remote_code
        )
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
        self.model.to(device)
        self.model.eval()

    @property
    def chat_template(self) -> str:
        """The tokenizer's chat template text, or "" when it has none."""
        template = self.tokenizer.chat_template
        return template if isinstance(template, str) else ""

    def format(self, conversation: Conversation) -> str:
        """Return the conversation as the model's prompt text, ending with its reply turn."""
        return self.tokenizer.apply_chat_template(
            list(conversation), tokenize=False, add_generation_prompt=True
        )

    @torch.no_grad()
    def generate_texts(self, texts: Sequence[str]) -> list[str]:
        """Continue already formatted prompt texts; return the new text of each."""
        replies: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            encoded = self.tokenizer(
                chunk, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            output = self.model.generate(
                **encoded,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            replies.extend(
                self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            )
        return [reply.strip() for reply in replies]

    def complete(self, conversations: Sequence[Conversation]) -> list[str | JudgeError]:
        """Return the reply to each conversation."""
        return list(self.generate_texts([self.format(c) for c in conversations]))


class ChatEndpoint:
    """An OpenAI-compatible chat completions API."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 256,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key else os.environ.get(API_KEY_ENV) or None
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    def _post(self, conversation: Conversation) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "messages": list(conversation),
                "max_tokens": self.max_tokens,
                "temperature": 0,
            }
        ).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            payload = json.loads(response.read().decode("utf-8"))
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(
                f"{self.url} returned no choices[0].message.content: {str(payload)[:200]}"
            ) from None
        if not isinstance(content, str):
            raise JudgeError(f"{self.url} returned non-text content {content!r}")
        return content

    def _post_with_retries(self, conversation: Conversation) -> str:
        attempt = 0
        while True:
            try:
                return self._post(conversation)
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUSES:
                    hint = (
                        " Check api_key or $" + API_KEY_ENV
                        if exc.code in (401, 403)
                        else ""
                    )
                    raise JudgeError(
                        f"{self.url} rejected the request with HTTP {exc.code} "
                        f"{exc.reason}.{hint}"
                    ) from None
                problem = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except json.JSONDecodeError as exc:
                problem = f"invalid JSON in the reply ({exc.msg})"
            if attempt >= self.retries:
                raise JudgeError(
                    f"{self.url} failed after {attempt + 1} attempt(s): {problem}"
                )
            delay = self.backoff_s * 2**attempt
            logger.warning(
                "judge endpoint %s: %s; retry %d of %d in %.1f s",
                self.url,
                problem,
                attempt + 1,
                self.retries,
                delay,
            )
            time.sleep(delay)
            attempt += 1

    def complete(self, conversations: Sequence[Conversation]) -> list[str | JudgeError]:
        """Return the reply to each conversation, or the JudgeError that stopped it."""
        replies: list[str | JudgeError] = []
        for conversation in conversations:
            try:
                replies.append(self._post_with_retries(conversation))
            except JudgeError as exc:
                logger.error("judge endpoint %s: %s", self.url, exc)
                replies.append(exc)
        return replies
