"""The promotion gate: what the app serves changes only when an evaluation shows the new winner is better.

    assistant promote eval/reports/<suite>-<time>      # promote that report's winner, if it passes
    assistant promote --rollback                       # serve the previously promoted winner again

A report's winner is promoted when

- nothing is served yet, or the served variant no longer exists as evaluated (its files changed or are
  gone: its winner.yaml no longer loads); or
- (before any promotion the app serves the newest report's winner: the candidate is then held against the
  newest servable winner of an earlier report, as against a promoted one)
- it beats the served variant on the suite's primary metric, significantly (paired bootstrap, p < 0.05), on
  the same cases: both in the new report, or, when the served one is not in it, in the served one's report
  on the same case ids; and it is not worse, beyond ``margin``, on the fact metrics the suite has (key-fact
  recall and grounding not lower, contradicted and unsupported facts per answer not higher).

Otherwise the gate says why and leaves serving alone. The comparison itself (``compare``: the paired test on
the primary metric and the fact numbers against the margin) is shared with the regression gate for CI
(``regression.py``), which reads it in the other direction. Every promotion and rollback is a line in
``<reports>/promotions.jsonl`` (who, when, which report, the numbers, the reason), never rewritten; the
served winner is what that history leaves on top.
"""

from __future__ import annotations

import getpass
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from assistant.settings_reader import ConfigError

LOG_NAME = "promotions.jsonl"
FACT_CHECKS = {"key_facts": ("metrics", "key_facts", True), "grounding": ("metrics", "grounding", True),
               "contradicted": ("errors_per_answer", "contradicted", False),
               "unsupported": ("errors_per_answer", "unsupported", False)}
"""Fact numbers the gate guards: where they are in summary.json, and whether higher is better."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Entry:
    """One line of the promotion history."""

    action: str
    """'promote' or 'rollback'."""
    report: str
    """The report folder's name, under the reports folder."""
    suite: str
    variant: str
    variant_hash: str
    who: str
    when: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


def history(reports: Path) -> list[Entry]:
    path = Path(reports) / LOG_NAME
    if not path.is_file():
        return []
    return [Entry(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def served_stack(reports: Path) -> list[Entry]:
    """The promotions still standing, oldest first: each rollback takes the latest one off."""
    stack: list[Entry] = []
    for entry in history(reports):
        if entry.action == "promote":
            stack.append(entry)
        elif entry.action == "rollback" and stack:
            stack.pop()
    return stack


def served_winner(reports: Path) -> tuple[Path, Entry] | None:
    """The promoted winner.yaml the app serves, with its promotion; None when nothing was promoted."""
    stack = served_stack(reports)
    if not stack:
        return None
    return Path(reports) / stack[-1].report / "winner.yaml", stack[-1]


def read_summary(folder: Path) -> dict[str, Any]:
    """A report folder's summary.json: its numbers for the gates."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no summary.json (written by evaluations since the promotion gate exists); "
                          "evaluate the suite again to compare or promote its winner")
    return json.loads(path.read_text(encoding="utf-8"))


def decide(candidate: Path, reports: Path, margin: float = 0.02) -> Decision:
    """Whether ``candidate`` (a report folder) may replace what is served, and why."""
    from assistant.variants import load_variant, read_winner

    report = read_summary(candidate)
    winner = read_winner(candidate / "winner.yaml")
    load_variant(candidate / "winner.yaml")  # a winner that no longer loads cannot be served
    current = served_now(reports, winner.created)
    if current is None:
        return Decision(True, "nothing is served yet", {"winner": report["winner"]})
    served_file, entry = current
    try:
        load_variant(served_file)
    except (ConfigError, OSError) as exc:
        return Decision(True, f"the served variant {entry.variant} no longer exists as evaluated ({exc})")
    if entry.variant_hash == winner.variant_hash:
        return Decision(False, f"{entry.variant} ({entry.variant_hash}) is served already")
    try:
        c = compare(candidate, Path(reports) / entry.report, entry.variant_hash, margin, same_cases=True)
    except NotComparable:
        return Decision(False, f"the served variant {entry.variant} was not scored on this report's cases: add "
                        "it to the suite (its winner.yaml is a variant file) and evaluate again")
    numbers = c.numbers("served")
    if not c.significantly_better:
        how = "better, but not significantly" if c.better else "not better"
        return Decision(False, f"{c.candidate_name} is {how} than the served {entry.variant} on {c.metric} "
                        f"({c.candidate:.4f} against {c.baseline:.4f}, p = {c.p_value:.3f})", numbers)
    if c.worse_facts:
        return Decision(False, f"{c.candidate_name} beats {entry.variant} on {c.metric} but is worse beyond the "
                        f"margin of {margin} on facts: {'; '.join(c.worse_facts)}", numbers)
    return Decision(True, f"{c.candidate_name} beats the served {entry.variant} on {c.metric} "
                    f"({c.candidate:.4f} against {c.baseline:.4f}, p = {c.p_value:.3f}) and "
                    f"is not worse on facts beyond {margin}", numbers)


# -- the comparison both gates read -------------------------------------------------------------------------


ALPHA = 0.05
"""Significance level of both gates (two-sided p-values)."""


class NotComparable(ConfigError):
    """Two reports that cannot be compared: another primary metric, or no cases (for a promotion: not the same
    cases) in common."""


@dataclass
class Comparison:
    """A candidate report's winner against a baseline variant on the same cases: the suite's primary metric by
    a paired bootstrap, and the fact numbers of ``FACT_CHECKS``. The promotion gate needs
    ``significantly_better`` and no ``worse_facts``; the regression gate (``regression.py``) fails on
    ``significantly_worse`` or any ``worse_facts``: one rule, read in both directions."""

    candidate_name: str
    baseline_name: str
    metric: str
    candidate: float
    """The primary metric of the candidate, as compared: the reports' own number when both scored the same
    cases, else recomputed on the cases they share."""
    baseline: float
    p_value: float
    """Two-sided, of the paired bootstrap over the cases both answered."""
    cases: int
    compared_in: str
    """'the new report' (it evaluated the baseline variant too) or 'both reports, paired by case'."""
    margin: float
    facts: dict[str, dict[str, float]] = field(default_factory=dict)
    """name -> {'candidate', 'baseline'}: each report's own fact numbers (summary.json)."""
    worse_facts: list[str] = field(default_factory=list)
    """The fact numbers worse beyond ``margin``, as 'key_facts 0.300 against 0.400'."""
    difference: float | None = None
    report_cases: tuple[int, int] | None = None
    """Across two reports: how many cases each scored (the comparison uses those they share)."""
    same_cases: bool = True
    """Whether both numbers come from the same cases (false: two reports that scored other case sets)."""

    @property
    def better(self) -> bool:
        return _better(self.metric, self.candidate, self.baseline)

    @property
    def worse(self) -> bool:
        return _better(self.metric, self.baseline, self.candidate)

    @property
    def significantly_better(self) -> bool:
        return self.better and self.p_value < ALPHA

    @property
    def significantly_worse(self) -> bool:
        return self.worse and self.p_value < ALPHA

    def numbers(self, baseline_key: str = "baseline") -> dict[str, Any]:
        """The numbers as the promotion history keeps them, the baseline under ``baseline_key``."""
        numbers: dict[str, Any] = {"metric": self.metric, "candidate": self.candidate, baseline_key: self.baseline,
                                   "p_value": self.p_value, "cases": self.cases, "compared_in": self.compared_in}
        if self.difference is not None:
            numbers["difference"] = self.difference
        for name, pair in self.facts.items():
            numbers[name] = {"candidate": pair["candidate"], baseline_key: pair["baseline"]}
        return numbers


def compare(candidate: Path, baseline: Path, baseline_hash: str, margin: float = 0.02,
            same_cases: bool = False) -> Comparison:
    """The winner of the report ``candidate`` against the variant ``baseline_hash``, the winner of the report
    ``baseline``, on the primary metric and the fact numbers.

    When the candidate's report evaluated the baseline variant too (the same hash), its own paired comparison
    is used; else the two reports' per-case scores are paired by case id, on the cases they share.

    Args:
        candidate: the report folder whose winner is judged.
        baseline: the report folder of the baseline variant (read only when the candidate's report lacks it).
        baseline_hash: the baseline variant's hash.
        margin: how much worse a fact number may be before it counts in ``worse_facts``.
        same_cases: refuse two reports that did not score the same cases (the promotion gate), instead of
            comparing the cases they share.

    Returns:
        The comparison; raises NotComparable when the reports have no primary metric or no cases in common.
    """
    report = read_summary(candidate)
    primary, name = report["primary"], report["winner"]
    mine = report["variants"][name]
    theirs, their_name, paired = _evaluated_in(report, baseline_hash)
    counts, same = None, True
    if theirs is None:
        older = read_summary(baseline)
        if older["primary"] != primary:
            raise NotComparable(f"{candidate.name} and {baseline.name} have other primary metrics ({primary}, "
                                f"{older['primary']}): compare reports of one suite")
        same = older["cases"] == report["cases"]
        if same_cases and not same:
            raise NotComparable(f"{candidate.name} and {baseline.name} did not score the same cases")
        their_name = older["winner"]
        theirs = older["variants"][their_name]
        paired = _paired_across(candidate, name, baseline, their_name, primary)
        counts = (len(report["cases"]), len(older["cases"]))
    shared = paired.pop("values", None)
    # the reports' own numbers when they scored the same cases, else the statistic on the cases they share
    values = (mine["metrics"][primary]["value"], theirs["metrics"][primary]["value"]) if same else shared
    facts, worse = {}, []
    for fact, (section, key, higher) in FACT_CHECKS.items():
        a, b = mine[section].get(key, {}).get("value"), theirs[section].get(key, {}).get("value")
        if a is None or b is None:
            continue
        facts[fact] = {"candidate": a, "baseline": b}
        if (a < b - margin) if higher else (a > b + margin):
            worse.append(f"{fact} {a:.3f} against {b:.3f}")
    return Comparison(name, their_name, primary, values[0], values[1], paired["p_value"], paired["cases"],
                      paired["compared_in"], margin, facts, worse, paired.get("difference"), counts, same)


def served_now(reports: Path, before: str) -> tuple[Path, Entry] | None:
    """The winner.yaml the app serves and its promotion, as a gate sees it: the promoted winner, or while
    nothing was promoted the newest servable winner of a report older than ``before`` (the candidate's time
    stamp), as if promoted; None when there is neither."""
    return served_winner(reports) or _served_before_promotions(reports, before)


def _served_before_promotions(reports: Path, before: str) -> tuple[Path, Entry] | None:
    """What the app serves while nothing has been promoted: the newest servable winner of a report older than
    ``before`` (a report time stamp), as if it had been promoted; None when there is none."""
    from assistant.variants import newest_servable_winner, read_winner

    path = newest_servable_winner(reports, before)
    if path is None:
        return None
    winner = read_winner(path)
    name = winner.settings.get("name", path.parent.name)
    return path, Entry("promote", path.parent.name, winner.suite, name, winner.variant_hash, "-", winner.created,
                       "the newest report's winner, served while nothing was promoted")


def _better(metric: str, a: float, b: float) -> bool:
    from assistant.metrics import HIGHER_IS_BETTER

    return a > b if HIGHER_IS_BETTER[metric] else a < b


def _evaluated_in(report: dict[str, Any], variant_hash: str) -> tuple[dict[str, Any] | None, str, dict[str, Any]]:
    """The numbers of the variant ``variant_hash`` in ``report``, its name there, and the report's own paired
    comparison of the winner with it on the primary metric; (None, '', {}) when the report did not evaluate it."""
    primary = report["primary"]
    for name, numbers in report["variants"].items():
        if numbers["variant_hash"] != variant_hash or name == report["winner"]:
            continue
        for row in report["comparisons"][primary]:
            if {row["a"], row["b"]} == {report["winner"], name}:
                return numbers, name, {"p_value": row["p_value"], "cases": row["cases"],
                                       "compared_in": "the new report"}
    return None, "", {}


def _paired_across(new: Path, new_variant: str, old: Path, old_variant: str, metric: str) -> dict[str, Any]:
    """A paired bootstrap of two variants from two reports on the case ids both scored, from their per-case
    scores (mean over cases; macro-F1 recomputed from the predicted labels), with each one's statistic on
    those cases."""
    import numpy as np

    from assistant.evaluation.scoring import _macro_f1_statistic
    from assistant.metrics import HIGHER_IS_BETTER
    from assistant.stats import mean_of, paired_bootstrap

    def rows(folder: Path, variant: str) -> dict[str, dict[str, Any]]:
        found = [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        return {row["case"]: row for row in found if row["variant"] == variant}

    theirs = rows(old, old_variant)
    pairs = [(row, theirs[case]) for case, row in rows(new, new_variant).items() if case in theirs]
    if metric == "macro_f1":
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        labels = sorted({row["label"] for row in a})
        stat_a = _macro_f1_statistic([r["predicted_label"] for r in a], [r["label"] for r in a], labels)
        stat_b = _macro_f1_statistic([r["predicted_label"] for r in b], [r["label"] for r in b], labels)
        per_a = per_b = None
        n = len(pairs)
    else:
        scored = [(x["scores"][metric], y["scores"][metric]) for x, y in pairs]
        scored = [(x, y) for x, y in scored if not (x is None or y is None or math.isnan(x) or math.isnan(y))]
        per_a, per_b = [x for x, _ in scored], [y for _, y in scored]
        stat_a, stat_b = mean_of(per_a), mean_of(per_b)
        n = len(scored)
    if n == 0:
        raise NotComparable(f"{new.name} and {old.name} have no scored cases in common (by case id)")
    c = paired_bootstrap(stat_a, stat_b, n, per_a, per_b, HIGHER_IS_BETTER[metric])
    everything = np.arange(n)
    return {"p_value": float(c.p_value), "cases": int(n), "compared_in": "both reports, paired by case",
            "difference": float(np.round(c.difference.value, 6)),
            "values": (float(stat_a(everything)), float(stat_b(everything)))}


def _record(reports: Path, entry: Entry) -> None:
    path = Path(reports) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:  # one line per event, appended: the history is kept
        handle.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")


def promote(candidate: Path, reports: Path, margin: float = 0.02, who: str | None = None) -> Decision:
    """Runs the gate and, when it passes, records the promotion (the app serves it from then on)."""
    from assistant.variants import read_winner

    candidate = Path(candidate)
    if candidate.name == "winner.yaml":
        candidate = candidate.parent
    if candidate.parent.resolve() != Path(reports).resolve():
        raise ConfigError(f"{candidate}: not a report folder under {reports} (give --reports)")
    decision = decide(candidate, reports, margin)
    if decision.promoted:
        winner = read_winner(candidate / "winner.yaml")
        _record(reports, Entry("promote", candidate.name, winner.suite, winner.settings.get("name", ""),
                               winner.variant_hash, who or getpass.getuser(), _now(), decision.reason,
                               decision.numbers))
    return decision


def rollback(reports: Path, who: str | None = None) -> Decision:
    """Serves the previously promoted winner again (the latest promotion is taken off, and recorded so)."""
    stack = served_stack(reports)
    if len(stack) < 2:
        raise ConfigError("nothing to roll back to: fewer than two promotions stand")
    gone, back = stack[-1], stack[-2]
    reason = f"rolled back from {gone.variant} ({gone.report}) to {back.variant} ({back.report})"
    _record(reports, Entry("rollback", gone.report, gone.suite, gone.variant, gone.variant_hash,
                           who or getpass.getuser(), _now(), reason))
    return Decision(True, reason)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
