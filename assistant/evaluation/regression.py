"""The regression gate for CI: a new report's winner may not be significantly worse than a baseline.

    assistant eval SUITE --against REPORT|served --fail-on-regression   # after the suite runs
    assistant gate REPORT --against REPORT|served [--margin M]          # two reports already written

The baseline is the winner of another report folder, or with ``served`` the variant the app serves (the
promoted winner, or while nothing was promoted the newest servable winner of an earlier report). Only the
winners are compared: the winner is what would ship, and one test instead of one per variant keeps the 5%
false alarm rate a CI job can live with.

The rule is the promotion gate's comparison (``promotion.compare``), read in the other direction: a
regression is a winner significantly worse on the suite's primary metric (paired bootstrap on the cases both
reports scored, matched by case id, two-sided p < 0.05), or worse beyond the margin on a fact number (key-fact
recall, grounding, contradicted and unsupported facts per answer). A tie or an improvement passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assistant.evaluation.promotion import Comparison, compare, read_summary, served_now
from assistant.settings_reader import ConfigError

SERVED = "served"


@dataclass
class Verdict:
    regressed: bool
    line: str
    """One line that says why: 'regression: ...' or 'no regression: ...'."""
    comparison: Comparison


def report_folder(path: str | Path) -> Path:
    """A report folder given as the folder or as its winner.yaml; it must hold a summary.json."""
    folder = Path(path)
    if folder.name == "winner.yaml":
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such report folder")
    read_summary(folder)
    return folder


def baseline_of(candidate: Path, against: str, reports: Path) -> tuple[Path, str, str]:
    """The baseline's report folder, its variant hash and how to name it, for ``against``: a report folder
    (its winner) or 'served' (what the app serves from ``reports``)."""
    from assistant.variants import read_winner

    if against != SERVED:
        folder = report_folder(against)
        if folder.resolve() == candidate.resolve():
            raise ConfigError(f"--against {against}: the candidate report itself")
        summary = read_summary(folder)
        return folder, summary["variants"][summary["winner"]]["variant_hash"], folder.name
    current = served_now(reports, read_winner(candidate / "winner.yaml").created)
    if current is None:
        raise ConfigError(f"--against served: nothing is served from {reports} (no promotion and no earlier "
                          "servable winner); give a report folder")
    path, entry = current
    if path.parent.resolve() == candidate.resolve():
        raise ConfigError(f"--against served: {candidate.name} is the served report itself")
    return path.parent, entry.variant_hash, f"served, from {entry.report}"


def check_regression(candidate: str | Path, against: str, reports: str | Path, margin: float = 0.02) -> Verdict:
    """Runs the regression gate on the winner of the report ``candidate``.

    Args:
        candidate: the new report folder (or its winner.yaml).
        against: a baseline report folder, or 'served'.
        reports: the reports folder 'served' is read from (promotions.jsonl).
        margin: how much worse a fact number may be (the promotion gate's margin).

    Returns:
        The verdict with its one-line reason; raises ConfigError when the reports cannot be compared.
    """
    candidate = report_folder(candidate)
    baseline, baseline_hash, where = baseline_of(candidate, against, Path(reports))
    c = compare(candidate, baseline, baseline_hash, margin)
    numbers = f"{c.candidate:.4f} against {c.baseline:.4f}, p = {c.p_value:.3f}, {_cases(c)}"
    them = f"{c.baseline_name} ({where})"
    facts_note = "" if c.same_cases else " (facts over each report's own cases)"
    if c.significantly_worse:
        return Verdict(True, f"regression: {c.candidate_name} is significantly worse than {them} on {c.metric} "
                       f"({numbers})", c)
    if c.worse_facts:
        return Verdict(True, f"regression: {c.candidate_name} is worse than {them} beyond the margin of {margin} "
                       f"on facts{facts_note}: {'; '.join(c.worse_facts)} ({c.metric}: {_state(c)}, {numbers})", c)
    return Verdict(False, f"no regression: {c.candidate_name} against {them} on {c.metric}: {_state(c)} "
                   f"({numbers}); facts within {margin}{facts_note}", c)


def _state(c: Comparison) -> str:
    if c.significantly_better:
        return "significantly better"
    return "better, not significantly" if c.better else "worse, not significantly" if c.worse else "tied"


def _cases(c: Comparison) -> str:
    if c.report_cases is None:
        return f"{c.cases} cases, both in the new report"
    if c.same_cases:
        return f"{c.cases} shared cases"
    return f"{c.cases} shared cases of {c.report_cases[0]} and {c.report_cases[1]}"
