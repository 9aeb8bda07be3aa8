"""Batched chat generation with a local causal LM, used to sample policy responses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


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
    model_path: str | Path, padding_side: str = "left"
) -> PreTrainedTokenizerBase:
    """Load a tokenizer with a pad token (eos when the model defines none)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


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
) -> list[str]:
    """Generate one chat response per prompt, in prompt order."""
    tokenizer = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    torch.manual_seed(seed)
    responses: list[str] = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(
        batches, desc=description, disable=not show_progress, unit="batch"
    ):
        texts = [chat_text(tokenizer, p) for p in prompts[start : start + batch_size]]
        encoded = tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=False
        )
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
    return [r.strip() for r in responses]
