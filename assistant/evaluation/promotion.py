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

Otherwise the gate says why and leaves serving alone. Every promotion and rollback is a line in
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


def _summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no summary.json (written by evaluations since the promotion gate exists); "
                          "evaluate the suite again to promote its winner")
    return json.loads(path.read_text(encoding="utf-8"))


def decide(candidate: Path, reports: Path, margin: float = 0.02) -> Decision:
    """Whether ``candidate`` (a report folder) may replace what is served, and why."""
    from assistant.variants import load_variant, read_winner

    report = _summary(candidate)
    winner = read_winner(candidate / "winner.yaml")
    load_variant(candidate / "winner.yaml")  # a winner that no longer loads cannot be served
    mine = report["variants"][report["winner"]]
    current = served_winner(reports) or _served_before_promotions(reports, winner.created)
    if current is None:
        return Decision(True, "nothing is served yet", {"winner": report["winner"]})
    served_file, entry = current
    try:
        load_variant(served_file)
    except (ConfigError, OSError) as exc:
        return Decision(True, f"the served variant {entry.variant} no longer exists as evaluated ({exc})")
    if entry.variant_hash == winner.variant_hash:
        return Decision(False, f"{entry.variant} ({entry.variant_hash}) is served already")
    primary = report["primary"]
    theirs, comparison = _served_in(report, entry)
    if theirs is None:
        older = _summary(Path(reports) / entry.report)
        if older["cases"] != report["cases"] or older["primary"] != primary:
            return Decision(False, f"the served variant {entry.variant} was not scored on this report's cases: add "
                            "it to the suite (its winner.yaml is a variant file) and evaluate again")
        theirs = older["variants"][older["winner"]]
        comparison = _paired_across(candidate, report["winner"], Path(reports) / entry.report, older["winner"], primary)
    numbers = {"metric": primary, "candidate": mine["metrics"][primary]["value"],
               "served": theirs["metrics"][primary]["value"], **comparison}
    better = _better(primary, numbers["candidate"], numbers["served"])
    if not (better and comparison["p_value"] < 0.05):
        how = "better, but not significantly" if better else "not better"
        return Decision(False, f"{report['winner']} is {how} than the served {entry.variant} on {primary} "
                        f"({numbers['candidate']:.4f} against {numbers['served']:.4f}, p = {comparison['p_value']:.3f})",
                        numbers)
    worse = []
    for name, (section, key, higher) in FACT_CHECKS.items():
        a, b = mine[section].get(key, {}).get("value"), theirs[section].get(key, {}).get("value")
        if a is None or b is None:
            continue
        numbers[name] = {"candidate": a, "served": b}
        if (a < b - margin) if higher else (a > b + margin):
            worse.append(f"{name} {a:.3f} against {b:.3f}")
    if worse:
        return Decision(False, f"{report['winner']} beats {entry.variant} on {primary} but is worse beyond the margin "
                        f"of {margin} on facts: {'; '.join(worse)}", numbers)
    return Decision(True, f"{report['winner']} beats the served {entry.variant} on {primary} "
                    f"({numbers['candidate']:.4f} against {numbers['served']:.4f}, p = {comparison['p_value']:.3f}) and "
                    f"is not worse on facts beyond {margin}", numbers)


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


def _served_in(report: dict[str, Any], entry: Entry) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The served variant's numbers in ``report`` and the report's own paired comparison of the winner with
    it on the primary metric, when the report evaluated it (the same variant hash)."""
    primary = report["primary"]
    for name, numbers in report["variants"].items():
        if numbers["variant_hash"] != entry.variant_hash:
            continue
        for row in report["comparisons"][primary]:
            if {row["a"], row["b"]} == {report["winner"], name}:
                return numbers, {"p_value": row["p_value"], "cases": row["cases"], "compared_in": "the new report"}
    return None, {}


def _paired_across(new: Path, new_variant: str, old: Path, old_variant: str, metric: str) -> dict[str, Any]:
    """A paired bootstrap of two variants from two reports on the same case ids, from their per-case scores
    (mean over cases; macro-F1 recomputed from the predicted labels)."""
    import numpy as np

    from assistant.evaluation.scoring import _macro_f1_statistic
    from assistant.stats import mean_of, paired_bootstrap

    def rows(folder: Path, variant: str) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]
        return [row for row in found if row["variant"] == variant]

    a, b = rows(new, new_variant), rows(old, old_variant)
    if metric == "macro_f1":
        labels = sorted({row["label"] for row in a})
        stat_a = _macro_f1_statistic([r["predicted_label"] for r in a], [r["label"] for r in a], labels)
        stat_b = _macro_f1_statistic([r["predicted_label"] for r in b], [r["label"] for r in b], labels)
        per_a = per_b = None
    else:
        per_a = [math.nan if r["scores"][metric] is None else r["scores"][metric] for r in a]
        per_b = [math.nan if r["scores"][metric] is None else r["scores"][metric] for r in b]
        both = [i for i in range(len(a)) if not (math.isnan(per_a[i]) or math.isnan(per_b[i]))]
        per_a, per_b = [per_a[i] for i in both], [per_b[i] for i in both]
        stat_a, stat_b = mean_of(per_a), mean_of(per_b)
    from assistant.metrics import HIGHER_IS_BETTER

    n = len(per_a) if per_a is not None else len(a)
    c = paired_bootstrap(stat_a, stat_b, n, per_a, per_b, HIGHER_IS_BETTER[metric])
    return {"p_value": float(c.p_value), "cases": int(n), "compared_in": "both reports, paired by case",
            "difference": float(np.round(c.difference.value, 6))}


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
