"""Batched chat generation with a local causal LM, used to sample policy responses.

Prompts longer than the model's context minus ``max_new_tokens`` are cut from the left,
so the chat template's generation prompt stays at the end, and one warning names them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BatchEncoding,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

# A tokenizer whose model_max_length is at least this has none set (transformers stores
# int(1e30) there).
UNSET_MODEL_MAX_LENGTH = 10**18
# A warning about long prompts lists at most this many of them.
MAX_LISTED = 10
# Words of a prompt shown to name it when it has no id.
PROMPT_LABEL_WORDS = 8


def chat_messages(prompt: str) -> list[dict[str, str]]:
    """Return a conversation with ``prompt`` as its single user turn."""
    return [{"role": "user", "content": prompt}]


def chat_text(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """Format ``prompt`` with the tokenizer's chat template, ending with the generation prompt.

    SmolLM2-135M-Instruct answers with an empty string when prompted without its template.
    """
    return tokenizer.apply_chat_template(
        chat_messages(prompt), tokenize=False, add_generation_prompt=True
    )


def load_tokenizer(
    model_path: str | Path,
    padding_side: str = "left",
    *,
    trust_remote_code: bool = False,
) -> PreTrainedTokenizerBase:
    """Load a tokenizer with a pad token (eos when the model defines none)."""
    tokenizer = AutoTokenizer.from_pretrained(
        model_path, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def max_context_length(
    config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> int | None:
    """Return the model's maximum sequence length in tokens, or None when nothing sets one.

    The config's position limit comes first, then the tokenizer's ``model_max_length``,
    in the order lm-eval 0.4.13 uses, but without lm-eval's fallback of 2048 tokens.
    Tokenizers without a limit report about 1e30.
    """
    text_config = config.get_text_config()
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < UNSET_MODEL_MAX_LENGTH:
        return length
    return None


def prompt_token_limit(max_context: int, max_new_tokens: int) -> int:
    """Return the tokens left for a prompt once ``max_new_tokens`` are reserved."""
    limit = max_context - max_new_tokens
    if limit <= 0:
        raise DrirlError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {max_context} tokens; set max_new_tokens below {max_context}"
        )
    return limit


def _prompt_label(prompt: str) -> str:
    words = prompt.split()
    first = " ".join(words[:PROMPT_LABEL_WORDS])
    return repr(first + (" ..." if len(words) > PROMPT_LABEL_WORDS else ""))


def warn_long_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_context: int,
    max_new_tokens: int,
    ids: Sequence[str] | None = None,
) -> int:
    """Log one warning for the prompts that will be cut from the left, and return the limit.

    A prompt is counted after the chat template is applied. One whose count exceeds
    ``max_context - max_new_tokens`` keeps only its last tokens, so the chat template's
    generation prompt stays at its end. The warning names each such prompt by its id, or by
    its first words when ``ids`` is None, with its length, up to ten prompts.
    """
    limit = prompt_token_limit(max_context, max_new_tokens)
    if not prompts:
        return limit
    texts = [chat_text(tokenizer, prompt) for prompt in prompts]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    counts = [len(row) for row in encoded]
    long = [(index, count) for index, count in enumerate(counts) if count > limit]
    if not long:
        return limit
    names = [
        f"{ids[index]!r}" if ids is not None else _prompt_label(prompts[index])
        for index, _ in long
    ]
    listed = ", ".join(
        f"{name} ({count} tokens)"
        for name, (_, count) in zip(names[:MAX_LISTED], long[:MAX_LISTED], strict=True)
    )
    more = f" and {len(long) - MAX_LISTED} more" if len(long) > MAX_LISTED else ""
    logger.warning(
        "%d prompt(s) exceed the prompt limit of %d tokens (the model's context of %d "
        "minus max_new_tokens %d), so each is cut from the left to its last %d tokens, "
        "which end with the chat template's generation prompt: %s%s",
        len(long),
        limit,
        max_context,
        max_new_tokens,
        limit,
        listed,
        more,
    )
    return limit


def encode_left_truncated(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], limit: int | None
) -> BatchEncoding:
    """Tokenize chat texts, keep each row's last ``limit`` tokens, and pad the batch."""
    rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if limit is not None:
        rows = [row[-limit:] for row in rows]
    return tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")


@torch.no_grad()
def generate_responses(
    model_path: str | Path,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    show_progress: bool = True,
    description: str = "generating",
    trust_remote_code: bool = False,
    response_prefix: str | Sequence[str] = "",
) -> list[str]:
    """Generate one chat response per prompt, in prompt order.

    With ``response_prefix`` each response starts with that text, written after the chat
    template's generation prompt, and the model continues it; the returned responses
    include it. A sequence gives one prefix per prompt.

    A prompt longer than the model's context minus ``max_new_tokens`` is cut from the
    left with a warning (see ``warn_long_prompts``).
    """
    if isinstance(response_prefix, str):
        prefixes = [response_prefix] * len(prompts)
    else:
        prefixes = list(response_prefix)
        if len(prefixes) != len(prompts):
            raise ValueError(
                f"response_prefix has {len(prefixes)} prefixes for {len(prompts)} prompts; "
                "give one per prompt, or a single string for all"
            )
    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    model.eval()
    max_context = max_context_length(model.config, tokenizer)
    limit = None
    if max_context is not None:
        limit = warn_long_prompts(
            tokenizer, prompts, max_context=max_context, max_new_tokens=max_new_tokens
        )
    torch.manual_seed(seed)
    responses: list[str] = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(
        batches, desc=description, disable=not show_progress, unit="batch"
    ):
        texts = [
            chat_text(tokenizer, prompt) + prefix
            for prompt, prefix in zip(
                prompts[start : start + batch_size], prefixes[start : start + batch_size]
            )
        ]
        encoded = encode_left_truncated(tokenizer, texts, limit)
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        responses.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return [(prefix + r).strip() for prefix, r in zip(prefixes, responses)]
