"""Side-by-side evaluation: every variant of a suite answers every held-out case, and is scored.

    suite.yaml -> cases (JSONL) + variants (prompt x context x adapter x generation settings)   suite.py
               -> answers, batched, cached on disk by (weights, variant hash, case hash)        answers.py
               -> perplexity of each reference under each variant                            answers.py
               -> metrics (evaluate modules in eval/metrics/), ranking                        scoring.py
               -> optional pairwise judge                                                     judge.py
               -> statistics (bootstrap intervals, paired tests), the winner                  run.py
               -> report.md, report.html, results.jsonl, winner.yaml                          report.py

A suite is checked completely (files, variant fields, every case) before any model loads, and every
problem names its file and line.
"""

from assistant.evaluation.answers import AnswerCache, VariantRun, answer_cases, default_cache, weights_fingerprint
from assistant.evaluation.run import SuiteResult, evaluate_suite
from assistant.evaluation.scoring import MetricScores, extract_label, rank_variants, score_run
from assistant.evaluation.suite import (
    DEFAULT_METRICS,
    LABEL_METRICS,
    SUITE_FIELDS,
    Case,
    Suite,
    SuiteError,
    SuiteVariant,
    load_suite,
    read_cases,
)

__all__ = [
    "AnswerCache", "Case", "DEFAULT_METRICS", "LABEL_METRICS", "MetricScores", "SUITE_FIELDS", "Suite",
    "SuiteError", "SuiteResult", "SuiteVariant", "VariantRun", "answer_cases", "default_cache", "evaluate_suite",
    "extract_label", "load_suite", "rank_variants", "read_cases", "score_run", "weights_fingerprint",
]
