"""Statistics for comparing variants on the same evaluation cases.

Every comparison here is paired: two variants answered the same cases, so a case is the unit that gets
resampled. A metric is a function of the cases it is computed over (``statistic(indices)``); for most
metrics that is the mean of per-case scores, but corpus perplexity and macro-F1 are not means, so the
bootstrap recomputes the whole statistic on each resample instead of averaging per-case numbers.

    bootstrap_ci       mean (or any statistic) with a 95% percentile-bootstrap interval
    paired_bootstrap   difference between two variants, its interval, and a two-sided p-value
    sign_test          exact binomial test on per-case wins and losses (ties dropped)
    cases_needed       how many cases a difference of this size would need to be told apart
    bradley_terry      ratings from pairwise votes (used by the arena leaderboard)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Statistic = Callable[[np.ndarray], float]
"""Computes a metric over the cases at the given indices (indices may repeat: a bootstrap resample)."""


def mean_of(scores: Sequence[float]) -> Statistic:
    values = np.asarray(scores, dtype=float)
    return lambda idx: float(values[idx].mean())


def _resamples(n: int, rounds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_ci(statistic: Statistic, n: int, rounds: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """The statistic over all ``n`` cases with a percentile-bootstrap confidence interval."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    draws = np.array([statistic(idx) for idx in _resamples(n, rounds, seed)])
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return Estimate(statistic(np.arange(n)), float(low), float(high))


@dataclass
class Comparison:
    """Variant A against variant B on one metric, over the same cases."""

    difference: Estimate
    """A minus B, with its bootstrap interval (higher-is-better metrics: positive favours A)."""
    p_value: float
    """Two-sided paired-bootstrap p-value for 'no difference'."""
    sign_p_value: float
    """Two-sided exact sign test on per-case wins and losses."""
    wins: int
    ties: int
    losses: int
    cases: int
    cases_needed: int | None
    """Cases a difference of this size would need for 95% confidence; None when already separated."""

    @property
    def significant(self) -> bool:
        """The decision rule, one for every report: the paired bootstrap at 5% (it uses the size of each
        difference, which the sign test ignores). The sign test is reported beside it as a check."""
        return self.p_value < 0.05

    @property
    def tests_disagree(self) -> bool:
        """The sign test falls on the other side of 5%: a difference carried by a few large cases (bootstrap
        significant, sign test not) or by many tiny ones (the reverse). Reports flag it."""
        return self.sign_p_value == self.sign_p_value and (self.sign_p_value < 0.05) != self.significant


def paired_bootstrap(
    stat_a: Statistic,
    stat_b: Statistic,
    n: int,
    per_case_a: Sequence[float] | None = None,
    per_case_b: Sequence[float] | None = None,
    higher_is_better: bool = True,
    rounds: int = 2000,
    seed: int = 0,
    tie_tolerance: float = 1e-9,
) -> Comparison:
    """Compares two variants that answered the same ``n`` cases.

    The same resampled case indices feed both statistics, which is what makes the test paired. The
    p-value is twice the share of resampled differences on the far side of zero (at least 1/rounds).
    Per-case scores, when given, give win/tie/loss counts and the sign test; a win is a case where A is
    better, whatever the metric's direction.
    """
    samples = _resamples(n, rounds, seed)
    draws = np.array([stat_a(idx) - stat_b(idx) for idx in samples])
    observed = stat_a(np.arange(n)) - stat_b(np.arange(n))
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    beyond = min(np.mean(draws <= 0), np.mean(draws >= 0))
    p_value = float(min(1.0, max(2 * beyond, 1 / rounds)))

    wins = ties = losses = 0
    if per_case_a is not None and per_case_b is not None:
        delta = np.asarray(per_case_a, dtype=float) - np.asarray(per_case_b, dtype=float)
        if not higher_is_better:
            delta = -delta
        wins = int((delta > tie_tolerance).sum())
        losses = int((delta < -tie_tolerance).sum())
        ties = n - wins - losses
    needed = None
    if p_value >= 0.05:
        needed = cases_needed(draws, n, observed)
    return Comparison(Estimate(float(observed), float(low), float(high)), p_value, sign_test(wins, losses),
                      wins, ties, losses, n, needed)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test that wins and losses are equally likely (ties excluded)."""
    trials = wins + losses
    if trials == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(trials, i) for i in range(k + 1)) / 2**trials
    return float(min(1.0, 2 * tail))


def cases_needed(draws: np.ndarray, n: int, observed: float) -> int | None:
    """Cases needed to separate a true difference of ``observed`` at 95% confidence (normal approximation
    from the bootstrap spread: the standard error shrinks as 1/sqrt(cases)). None when the observed
    difference is zero, because no number of cases separates identical variants."""
    spread = float(np.nanstd(draws))
    if observed == 0 or spread == 0 or not math.isfinite(spread):
        return None
    per_case_sd = spread * math.sqrt(n)
    return int(math.ceil((1.96 * per_case_sd / abs(observed)) ** 2))


# -- pairwise preferences --------------------------------------------------------------------------------


def length_controlled_win_rate(outcomes: Sequence[float], length_delta: Sequence[float]) -> float:
    """Win rate of A over B at equal answer length (the idea of AlpacaEval's length control).

    Fits ``P(A wins) = sigmoid(b0 + b1 * z)`` where z is the standardised length difference (A minus B) and
    outcomes are 1 (A wins), 0 (B wins) or 0.5 (tie), by Newton's method on the logistic log-likelihood;
    the answer is ``sigmoid(b0)``: the predicted win rate when both answers have the same length. A judge
    that simply prefers longer answers has its preference absorbed by ``b1``.
    """
    y = np.asarray(outcomes, dtype=float)
    d = np.asarray(length_delta, dtype=float)
    if len(y) == 0:
        return math.nan
    scale = d.std() or 1.0
    x = np.column_stack([np.ones_like(d), d / scale])
    beta = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ beta)))
        gradient = x.T @ (y - p) - 1e-3 * beta  # a whisper of L2 keeps perfect separation finite
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    return float(1 / (1 + np.exp(-beta[0])))


def bradley_terry(
    players: Sequence[str], games: Sequence[tuple[str, str, float]], iterations: int = 500, prior: float = 1.0
) -> dict[str, float]:
    """Bradley-Terry strengths from games ``(a, b, score_of_a)``, score 1 win, 0 loss, 0.5 tie.

    Fitted by the minorise-maximise updates of Hunter (2004); the result does not depend on the order of
    the games (unlike online Elo). ``prior`` adds that many virtual ties against an average opponent per
    player, which keeps a player with only wins or only losses finite. Returned on the Elo-like scale
    ``400 * log10(strength)`` centred on 1000.
    """
    names = list(players)
    index = {name: i for i, name in enumerate(names)}
    k = len(names)
    wins = np.full(k, prior / 2)  # `prior` virtual ties against a strength-1 opponent
    pair_games = np.zeros((k, k))
    for a, b, score in games:
        i, j = index[a], index[b]
        wins[i] += score
        wins[j] += 1 - score
        pair_games[i, j] += 1
        pair_games[j, i] += 1
    strength = np.ones(k)
    for _ in range(iterations):
        denominator = (pair_games / (strength[:, None] + strength[None, :])).sum(1) + prior / (strength + 1)
        updated = wins / denominator
        updated /= np.exp(np.log(updated).mean())
        if np.allclose(updated, strength, rtol=1e-10):
            strength = updated
            break
        strength = updated
    return {name: float(1000 + 400 * math.log10(strength[index[name]])) for name in names}
