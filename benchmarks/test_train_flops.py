"""A training step's FLOP/s as a fraction of this machine's measured matmul peak.

The peak is the best of square fp32 and bf16 matrix products (2 n^3 FLOPs each) measured
in the same run. The training step is one forward and backward pass of the embedded
SmolLM2-135M-Instruct plus an AdamW update, on a batch of 4 sequences of 64 tokens, in fp32
and under CPU bf16 autocast. Its work is estimated as 6 * parameters * tokens FLOPs (2 for
the forward pass, 4 for the backward pass; Kaplan et al. 2020, "Scaling Laws for Neural
Language Models"), which leaves out attention's sequence-squared term, small at 64 tokens.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from drirl.embedded import embedded_policy_path

MATMUL_SIZE = 1024
BATCH, TOKENS = 4, 64
peaks: dict[str, float] = {}


def _matmul_flops(dtype: torch.dtype, benchmark) -> float:
    torch.manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype)
    torch.mm(a, b)
    benchmark.pedantic(torch.mm, args=(a, b), rounds=20, iterations=3)
    return 2 * MATMUL_SIZE**3 / benchmark.stats.stats.min


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_peak(benchmark, dtype):
    flops = _matmul_flops(getattr(torch, dtype), benchmark)
    peaks[dtype] = flops
    benchmark.extra_info["gflops"] = round(flops / 1e9, 1)
    assert flops > 0


@pytest.fixture(scope="module")
def model():
    policy = AutoModelForCausalLM.from_pretrained(
        embedded_policy_path(), dtype=torch.float32
    )
    policy.train()
    return policy


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16_autocast"])
def test_train_step_flops(benchmark, model, autocast):
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, TOKENS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    parameters = sum(p.numel() for p in model.parameters())

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    benchmark.pedantic(step, rounds=3, iterations=1)
    flops = 6 * parameters * BATCH * TOKENS / benchmark.stats.stats.median
    benchmark.extra_info["gflops"] = round(flops / 1e9, 1)
    for dtype, peak in peaks.items():
        benchmark.extra_info[f"fraction_of_{dtype}_peak"] = round(flops / peak, 3)
    assert flops > 0
