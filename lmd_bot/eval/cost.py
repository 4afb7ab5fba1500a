"""What a benchmark run of the planner costs: an estimate before, the bill after.

Prices are US dollars per million tokens, as listed for the Claude API in November 2026
(Anthropic's published price list). Cache writes are billed at 1.25x the input price and cache reads at
0.1x, the 5-minute cache's rule. A model without a known price (a local OpenAI-compatible
server, a new id) gets token counts only.
"""

from __future__ import annotations

from pydantic import BaseModel

from lmd_bot.planner.base import Usage

# model id -> (input, output) $/MTok
PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-5-5": (0.10, 0.50),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-fable-5-2": (8.0, 40.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-haiku-4-5-20251001": (1.0, 5.0),
}
CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1

# What one planning call of the LMD template costs, roughly: the instructions and seven examples
# (~2k tokens) and a short layout (~300 tokens). The planner's repairs and retries add to it.
DEFAULT_INPUT_TOKENS = 2500
DEFAULT_OUTPUT_TOKENS = 400


class CostEstimate(BaseModel):
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    usd: float | None

    def describe(self) -> str:
        tokens = (
            f"{self.calls} planner calls, about {self.input_tokens:,} input "
            f"and {self.output_tokens:,} output tokens"
        )
        if self.usd is None:
            return f"{tokens} on {self.model} (no price known for this model)"
        return f"{tokens} on {self.model}: about ${self.usd:.2f} before cache discounts and retries"


def estimate_cost(
    model: str,
    calls: int,
    *,
    input_tokens_per_call: int = DEFAULT_INPUT_TOKENS,
    output_tokens_per_call: int = DEFAULT_OUTPUT_TOKENS,
) -> CostEstimate:
    usage = Usage(input_tokens=calls * input_tokens_per_call, output_tokens=calls * output_tokens_per_call)
    return CostEstimate(
        model=model,
        calls=calls,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        usd=usage_cost(model, usage),
    )


def usage_cost(model: str, usage: Usage) -> float | None:
    """Dollars for the tokens used, or None when the model's price is unknown."""
    if model not in PRICES:
        return None
    price_in, price_out = PRICES[model]
    millions = (
        usage.input_tokens * price_in
        + usage.cache_write_tokens * price_in * CACHE_WRITE_FACTOR
        + usage.cache_read_tokens * price_in * CACHE_READ_FACTOR
        + usage.output_tokens * price_out
    )
    return millions / 1_000_000
