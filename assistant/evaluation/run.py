"""One evaluation run, end to end: answers (cached), metrics, paired comparisons, the judge, the winner."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from assistant.evaluation.answers import AnswerCache, VariantRun, answer_cases
from assistant.evaluation.cost import VariantCost, budget_winner
from assistant.evaluation.judge import judge_runs
from assistant.evaluation.scoring import MetricScores, rank_variants, score_run
from assistant.evaluation.suite import Suite


@dataclass
class SuiteResult:
    suite: Suite
    runs: dict[str, VariantRun]
    scores: dict[str, dict[str, MetricScores]]
    """variant name -> metric name -> scores."""
    comparisons: dict[str, dict[tuple[str, str], Any]]
    """metric -> (variant A, variant B) -> Comparison, for every ordered pair A before B."""
    judged: dict[str, dict[str, Any]]
    winner: str
    """The best variant within the suite's cost budget (the best overall when it has none)."""
    ranking: list[str]
    """Every variant, best first on quality alone."""
    seconds: float
    probe: dict[str, Any] = field(default_factory=dict)
    """variant name -> ProbeResult of the counterfactual probe, when it ran."""
    costs: dict[str, VariantCost] = field(default_factory=dict)
    """variant name -> what it costs to serve and to train."""


def evaluate_suite(suite: Suite, cache: AnswerCache | None = None, quiet: bool = False,
                   refresh: bool = False, engine: str | None = None,
                   probe: dict[str, str] | None = None) -> SuiteResult:
    """Runs the whole suite: answers (cached), metrics, comparisons, judge, winner.

    ``engine`` overrides every variant's ``serving.engine`` (None: each variant's own). ``probe``, a swap
    list (see ``probe.load_swaps``), also runs the counterfactual probe."""
    from tqdm.auto import tqdm

    from assistant.metrics import HIGHER_IS_BETTER
    from assistant.stats import paired_bootstrap

    started = time.perf_counter()
    total = len(suite.cases) * len(suite.variants)
    runs: dict[str, VariantRun] = {}
    with tqdm(total=total, desc="answering", unit="answer", disable=quiet) as bar:
        for sv in suite.variants:
            bar.set_postfix_str(sv.name)
            runs[sv.name] = answer_cases(suite, sv, cache, bar.update, refresh, engine)
    scores = {name: score_run(suite, run) for name, run in runs.items()}
    comparisons: dict[str, dict[tuple[str, str], Any]] = {}
    names = list(runs)
    for metric in suite.metrics:
        comparisons[metric] = {}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                sa, sb = scores[a][metric], scores[b][metric]
                comparisons[metric][(a, b)] = paired_bootstrap(
                    sa.statistic, sb.statistic, len(suite.cases), sa.per_case, sb.per_case,
                    HIGHER_IS_BETTER[metric], suite.bootstrap_rounds)
    judged = {}
    if suite.judge is not None and len(runs) > 1:
        with tqdm(total=len(suite.cases) * (len(runs) - 1), desc="judging", unit="pair", disable=quiet) as bar:
            judged = judge_runs(suite, runs, cache, bar.update)
    probed = {}
    if probe is not None:
        from assistant.evaluation.probe import counterfactual_cases, run_probe

        copies = len(counterfactual_cases(suite.cases, probe))
        with tqdm(total=copies * len(runs), desc="counterfactual probe", unit="answer", disable=quiet) as bar:
            probed = run_probe(suite, runs, cache, probe, engine, bar.update)
    ranking = rank_variants(suite, runs, scores)
    costs = {name: VariantCost.of(run) for name, run in runs.items()}
    return SuiteResult(suite, runs, scores, comparisons, judged, budget_winner(ranking, costs, suite.budget), ranking,
                       time.perf_counter() - started, probed, costs)
