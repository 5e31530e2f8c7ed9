"""Quality against cost: what each variant costs to serve and to train, the variants no other beats on both,
and the winner under a suite's cost budget.

Costs come from the answers' own measurements (``answers.answer_cases``): batched tokens/s, single-stream
decode tokens/s and time to the first token over the suite's probe cases, the process's peak memory while
the variant answered; and from the adapter's card, the minutes its training took (a DPO adapter adds the
minutes of the SFT adapter it started from). A prompt-only variant trains for 0 minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from assistant.config import Variant


@dataclass(frozen=True)
class Budget:
    """A suite's cost budget: the winner is the best variant that meets every limit set here."""

    min_decode_tokens_per_second: float | None = None
    """Slowest acceptable single-stream decode, in tokens per second."""
    max_first_token_seconds: float | None = None
    """Longest acceptable wait for the first token of an answer (median over the probe cases)."""
    min_tokens_per_second: float | None = None
    """Slowest acceptable batched throughput, in tokens per second."""
    max_training_minutes: float | None = None
    """Longest acceptable training run (0 for prompt-only variants)."""

    def misses(self, cost: "VariantCost") -> list[str]:
        """Why ``cost`` is over this budget (empty: it fits). A limit on a cost not measured is missed."""
        out = []
        for limit, value, unit, low in (
                (self.min_decode_tokens_per_second, cost.decode_tokens_per_second, "decode tokens/s", True),
                (self.max_first_token_seconds, cost.first_token_seconds, "s to the first token", False),
                (self.min_tokens_per_second, cost.tokens_per_second, "batched tokens/s", True),
                (self.max_training_minutes, cost.training_minutes, "training minutes", False)):
            if limit is None:
                continue
            if not math.isfinite(value) or (value < limit if low else value > limit):
                out.append(f"{_number(value)} {unit} ({'at least' if low else 'at most'} {_number(limit)})")
        return out

    def describe(self) -> str:
        parts = {"min_decode_tokens_per_second": "decode ≥ {} tokens/s", "max_first_token_seconds": "first token ≤ {} s",
                 "min_tokens_per_second": "batched ≥ {} tokens/s", "max_training_minutes": "training ≤ {} minutes"}
        return ", ".join(parts[f.name].format(_number(getattr(self, f.name))) for f in fields(self)
                         if getattr(self, f.name) is not None) or "none"

    def is_set(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


BUDGET_FIELDS = {f.name for f in fields(Budget)}


@dataclass(frozen=True)
class VariantCost:
    tokens_per_second: float
    decode_tokens_per_second: float
    first_token_seconds: float
    peak_memory_gib: float
    training_minutes: float

    @classmethod
    def of(cls, run: Any) -> "VariantCost":
        c = run.cost
        return cls(c.get("tokens_per_second", math.nan), c.get("decode_tokens_per_second", math.nan),
                   c.get("first_token_seconds", math.nan), c.get("peak_memory_bytes", math.nan) / 2**30,
                   training_minutes(run.variant))


def training_minutes(variant: Variant) -> float:
    """Minutes the variant's adapter took to train, from its card (and its SFT start's, for DPO); 0 without
    an adapter; nan when the card does not say."""
    if not variant.model.adapter:
        return 0.0
    return _card_minutes(variant.resolve(variant.model.adapter), depth=0)


def _card_minutes(folder: Path, depth: int) -> float:
    import yaml

    try:
        card = yaml.safe_load((folder / "card.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return math.nan
    seconds = card.get("seconds") if card.get("method") == "dpo" else (card.get("training") or {}).get("wall_seconds")
    minutes = float(seconds) / 60 if isinstance(seconds, (int, float)) else math.nan
    if card.get("start_from") and depth < 5:
        minutes += _card_minutes((folder / card["start_from"]).resolve(), depth + 1)
    return minutes


def frontier(points: dict[str, tuple[float, float]], higher_is_better: bool = True) -> list[str]:
    """The names no other point beats on both quality and cost: {name: (quality, cost)}, lower cost better.
    A point with an unmeasured value is never on the frontier."""
    def better_or_equal(a: tuple[float, float], b: tuple[float, float]) -> bool:
        quality = a[0] >= b[0] if higher_is_better else a[0] <= b[0]
        return quality and a[1] <= b[1]

    finite = {n: p for n, p in points.items() if all(math.isfinite(x) for x in p)}
    return [n for n, p in finite.items()
            if not any(m != n and better_or_equal(q, p) and q != p for m, q in finite.items())]


def budget_winner(ranking: list[str], costs: dict[str, VariantCost], budget: Budget | None) -> str:
    """The best-ranked variant within the budget; the best overall when no budget is set or none fits."""
    if budget is None or not budget.is_set():
        return ranking[0]
    return next((name for name in ranking if not budget.misses(costs[name])), ranking[0])


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "not measured"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
