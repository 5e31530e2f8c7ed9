"""Statistics on synthetic data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assistant.stats import (
    bootstrap_ci,
    bradley_terry,
    length_controlled_win_rate,
    mean_of,
    paired_bootstrap,
    sign_test,
)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    small = rng.normal(0.5, 0.2, 30)
    large = rng.normal(0.5, 0.2, 600)
    e_small = bootstrap_ci(mean_of(small), len(small))
    e_large = bootstrap_ci(mean_of(large), len(large))
    assert e_small.low < small.mean() < e_small.high
    assert e_small.value == pytest.approx(small.mean())
    # the standard error shrinks as 1/sqrt(n): 20x the cases, about 1/4.5 of the width
    ratio = (e_small.high - e_small.low) / (e_large.high - e_large.low)
    assert 3.0 < ratio < 6.5


def test_bootstrap_interval_has_close_to_95_percent_coverage():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        sample = rng.normal(1.0, 1.0, 40)
        e = bootstrap_ci(mean_of(sample), len(sample), rounds=400, seed=int(rng.integers(1e9)))
        covered += e.low <= 1.0 <= e.high
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_bootstrap_finds_a_real_difference_and_counts_wins():
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 1, 100)
    a = b + 0.1 + rng.normal(0, 0.05, 100)  # A better on almost every case
    c = paired_bootstrap(mean_of(a), mean_of(b), 100, a, b)
    assert c.significant and c.p_value < 0.01
    assert c.difference.low > 0 and c.difference.value == pytest.approx(float((a - b).mean()))
    assert c.wins + c.ties + c.losses == 100 and c.wins > 90
    assert c.sign_p_value < 1e-10
    assert c.cases_needed is None


def test_pairing_matters_a_small_consistent_gain_is_significant():
    """Per-case scores vary a lot between cases, but A is always 0.02 above B: an unpaired comparison of
    two means could not see it, the paired one must."""
    rng = np.random.default_rng(3)
    b = rng.uniform(0, 1, 50)
    a = b + 0.02
    assert paired_bootstrap(mean_of(a), mean_of(b), 50, a, b).significant


def test_identical_variants_are_not_separated():
    scores = np.random.default_rng(4).uniform(0, 1, 60)
    c = paired_bootstrap(mean_of(scores), mean_of(scores), 60, scores, scores)
    assert not c.significant and c.p_value == 1.0
    assert (c.wins, c.ties, c.losses) == (0, 60, 0)
    assert c.cases_needed is None  # no number of cases separates identical variants


def test_too_few_cases_says_how_many_would_be_needed():
    rng = np.random.default_rng(5)
    b = rng.normal(0.5, 0.3, 12)
    a = b + rng.normal(0.05, 0.3, 12)  # a small true gain buried in noise
    c = paired_bootstrap(mean_of(a), mean_of(b), 12, a, b)
    assert not c.significant
    # (1.96 * sd / gain)^2 with sd ~0.3 of the per-case difference: far more than 12 cases
    assert c.cases_needed is not None and c.cases_needed > 12


def test_lower_is_better_metrics_count_wins_the_right_way():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([2.0, 3.0, 3.0])  # A lower on two cases: with perplexity that is two wins
    c = paired_bootstrap(mean_of(a), mean_of(b), 3, a, b, higher_is_better=False)
    assert (c.wins, c.ties, c.losses) == (2, 1, 0)


def test_sign_test_exact_values():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    # 9 wins, 1 loss: P(X <= 1) for Binomial(10, 1/2) = 11/1024, two-sided doubles it
    assert sign_test(9, 1) == pytest.approx(22 / 1024)
    assert sign_test(1, 9) == pytest.approx(22 / 1024)
    assert sign_test(10, 0) == pytest.approx(2 / 1024)


def test_a_statistic_that_is_not_a_mean_is_resampled_whole():
    nll = np.array([2 * math.log(4), math.log(4), 3 * math.log(2)])
    tokens = np.array([2, 1, 3])
    perplexity = lambda idx: float(math.exp(nll[idx].sum() / tokens[idx].sum()))
    e = bootstrap_ci(perplexity, 3)
    assert e.value == pytest.approx(math.exp((4 * math.log(2) + 2 * math.log(2) + 3 * math.log(2)) / 6))
    assert e.low == pytest.approx(2.0) and e.high == pytest.approx(4.0)  # all-case-3 and cases-1-2 resamples
    assert e.low < e.value < e.high


def test_length_controlled_win_rate_removes_a_preference_for_long_answers():
    rng = np.random.default_rng(6)
    delta = rng.normal(0, 30, 400)  # words longer than the baseline
    # a judge that only likes length: P(win) = sigmoid(delta / 15); at equal length it is a coin flip
    outcomes = (rng.uniform(size=400) < 1 / (1 + np.exp(-delta / 15))).astype(float)
    lc = length_controlled_win_rate(outcomes, delta)
    assert abs(lc - 0.5) < 0.1

    # A answers longer *and* better: raw win rate is high, and so is the controlled one
    better = (rng.uniform(size=400) < 1 / (1 + np.exp(-(1.5 + delta / 15)))).astype(float)
    assert length_controlled_win_rate(better, delta) > 0.7


def test_bradley_terry_recovers_a_known_strength_ratio_in_any_order():
    games = [("A", "B", 1.0)] * 30 + [("A", "B", 0.0)] * 10 + [("B", "C", 1.0)] * 20 + [("B", "C", 0.0)] * 20
    ratings = bradley_terry(["A", "B", "C"], games, prior=0.0)
    # A beats B 3:1, so strength(A)/strength(B) = 3: 400*log10(3) = 190.8 rating points
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(3), abs=0.5)
    assert ratings["B"] == pytest.approx(ratings["C"], abs=0.5)
    shuffled = bradley_terry(["C", "A", "B"], list(reversed(games)), prior=0.0)
    for name in "ABC":
        assert shuffled[name] == pytest.approx(ratings[name], abs=1e-6)


def test_bradley_terry_prior_keeps_an_unbeaten_player_finite():
    ratings = bradley_terry(["A", "B"], [("A", "B", 1.0)] * 5)
    assert math.isfinite(ratings["A"]) and ratings["A"] > ratings["B"]


def test_one_decision_rule_and_a_flag_when_the_sign_test_disagrees():
    from assistant.stats import paired_bootstrap

    # A wins 18 cases by a lot and loses 22 by a hair: the bootstrap (sizes) says A, the sign test (counts) cannot.
    a = np.array([1.0] * 18 + [0.0] * 22)
    b = np.array([0.0] * 18 + [0.01] * 22)
    c = paired_bootstrap(lambda idx: float(a[idx].mean()), lambda idx: float(b[idx].mean()), len(a), a, b, True, 2000)
    assert (c.wins, c.losses) == (18, 22)
    assert c.significant and c.p_value < 0.05  # the rule: paired bootstrap at 5%
    assert c.sign_p_value > 0.5 and c.tests_disagree  # ... and the disagreement is flagged
    same = paired_bootstrap(lambda idx: float(a[idx].mean()), lambda idx: float(a[idx].mean()), len(a), a, a, True, 500)
    assert not same.significant and not same.tests_disagree
