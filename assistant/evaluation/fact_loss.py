"""Where a variant loses the reference's facts: per case, the reference's checkable facts (assistant/facts.py),
those the passages shown held, those the answer stated and those it contradicted; per variant the funnel
reference -> in the context -> stated, retrieval hit@k against the case's ``source`` document, and the worst
cases of each kind of loss. A Markdown section and a chart for the report; nothing here generates or scores
anew, it reads the answers and passages a run kept.

A case is labelled by what it lost:
- *stated*: the answer states every reference fact;
- *retrieval miss*: some fact the answer lacks was not in the passages either (the model could not say it);
- *generation miss*: every fact the answer lacks was in the passages (the model was shown it, and did not say it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.facts import abstains, compare_facts, extract_facts

if TYPE_CHECKING:
    from assistant.evaluation.answers import VariantRun
    from assistant.evaluation.run import SuiteResult
    from assistant.evaluation.suite import Case

KINDS = ("stated", "generation miss", "retrieval miss")
HIT_AT = (1, 3)


@dataclass
class CaseLoss:
    """One case's facts, for one variant."""

    index: int
    """The case's position in the suite."""
    facts: int
    in_context: int
    stated: int
    stated_in_context: int
    """Facts the answer states that the passages held too: uptake's numerator."""
    contradicted: int
    kind: str
    missing_unseen: list[str]
    """Facts neither shown nor stated ('kind:value')."""
    missing_shown: list[str]
    """Facts shown and not stated."""
    gold_rank: int | None
    """1-based place of the first passage from the case's source document; None when none was shown or the case
    names no source."""


def case_losses(cases: list[Case], run: VariantRun) -> list[CaseLoss]:
    """Every answerable case with a checkable reference fact, for one variant (its answers must carry the
    passages they were shown: ``scoring.shown_texts`` fills them in for older cached answers)."""
    out = []
    for i, (case, record) in enumerate(zip(cases, run.records)):
        if abstains(case.reference):
            continue
        wanted = extract_facts(case.reference)
        if not wanted:
            continue
        context = extract_facts("\n\n".join(record.passage_texts or []))
        said = extract_facts(record.answer)
        _, _, contradicted = compare_facts(record.answer, case.reference)
        shown, stated = wanted & context, wanted & said
        missing = wanted - said
        kind = "stated" if not missing else ("retrieval miss" if missing - context else "generation miss")
        sources = [cite.split(" - ")[0] for cite in record.passages]
        rank = next((n + 1 for n, source in enumerate(sources) if source == case.source), None) if case.source else None
        out.append(CaseLoss(i, len(wanted), len(shown), len(stated), len(stated & context), contradicted, kind,
                            sorted(f"{k}:{v}" for k, v in missing - context),
                            sorted(f"{k}:{v}" for k, v in missing & context), rank))
    return out


@dataclass
class LossSummary:
    cases: int
    facts: int
    in_context: float
    """Context recall: reference facts in the passages / all reference facts."""
    stated: float
    """Key-fact recall over these cases."""
    uptake: float
    """Stated facts that were in the context / facts in the context: what the model uses of what it is shown."""
    contradicted: float
    """Contradicted facts / all reference facts."""
    kinds: dict[str, int]


def summarize(losses: list[CaseLoss]) -> LossSummary:
    facts = sum(c.facts for c in losses)
    shown = sum(c.in_context for c in losses)

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return LossSummary(len(losses), facts, ratio(shown, facts), ratio(sum(c.stated for c in losses), facts),
                       ratio(sum(c.stated_in_context for c in losses), shown),
                       ratio(sum(c.contradicted for c in losses), facts),
                       {k: sum(c.kind == k for c in losses) for k in KINDS})


def hit_rates(cases: list[Case], losses: list[CaseLoss]) -> dict[int, float | None]:
    """Retrieval hit@k over the cases of ``losses`` that name a source document."""
    named = [c for c in losses if cases[c.index].source]
    if not named:
        return {k: None for k in HIT_AT}
    return {k: sum(c.gold_rank is not None and c.gold_rank <= k for c in named) / len(named) for k in HIT_AT}


def groups(result: SuiteResult) -> list[tuple[str, list[int] | None]]:
    """('all cases', None) and one (tag, case positions) per suite group that has cases."""
    out: list[tuple[str, list[int] | None]] = [("all", None)]
    for tag in result.suite.groups:
        positions = [i for i, c in enumerate(result.suite.cases) if tag in c.tags]
        if positions:
            out.append((tag, positions))
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"


def fact_loss_section(result: SuiteResult) -> list[str]:
    """Markdown lines: the funnel per variant (and per group), then the worst cases of each kind of loss."""
    if "key_facts" not in result.suite.metrics or "context_recall" not in result.suite.metrics:
        return []
    cases = result.suite.cases
    losses = {name: case_losses(cases, result.runs[name]) for name in result.ranking}
    header = ["Variant", "Cases", "Ref. facts", "In the context", "Stated", "Uptake", "Contradicted",
              *[f"Gold doc @{k}" for k in HIT_AT], *KINDS]
    lines = ["## Where the facts are lost", "",
             "The reference's checkable facts, followed from the passages the model was shown to its answer: *in "
             "the context* is context recall (the share the passages hold), *stated* is key-fact recall, *uptake* "
             "the share of the facts shown that the answer states, *gold doc @k* whether the document that answers "
             "the case (its `source`) is among the first k passages. Each case is a *retrieval miss* when a fact it "
             "lacks was not shown either, a *generation miss* when every fact it lacks was shown. Answerable cases "
             "whose reference has a checkable fact.", "", "![fact loss](fact_loss.png)", ""]
    for label, positions in groups(result):
        rows = []
        for name in result.ranking:
            chosen = [c for c in losses[name] if positions is None or c.index in positions]
            s = summarize(chosen)
            hits = hit_rates(cases, chosen)
            rows.append([name, str(s.cases), str(s.facts), _fmt(s.in_context), _fmt(s.stated), _fmt(s.uptake),
                         _fmt(s.contradicted), *[_fmt(hits[k]) for k in HIT_AT], *[str(s.kinds[k]) for k in KINDS]])
        title = "All cases" if positions is None else f"Cases tagged `{label}`"
        lines += [f"**{title}**", "", _table(header, rows), ""]
    best = result.ranking[0]
    for kind, missing in (("retrieval miss", "missing_unseen"), ("generation miss", "missing_shown")):
        worst = sorted((c for c in losses[best] if c.kind == kind), key=lambda c: -len(getattr(c, missing)))[:5]
        if not worst:
            continue
        lines += [f"Worst {kind}es of **{best}** (facts lost):", ""]
        for c in worst:
            case = cases[c.index]
            lines.append(f"- {case.id} ({case.messages[-1]['content']!r}): lost {', '.join(getattr(c, missing))}; "
                         f"gold document {'at ' + str(c.gold_rank) if c.gold_rank else 'not shown'}")
        lines.append("")
    return lines


def plot_fact_loss(result: SuiteResult, path: Path) -> bool:
    """A stacked bar per variant: the reference facts stated, shown but not stated, and never shown; the
    contradicted share as a marker. Returns False (and writes nothing) when the suite measures no context."""
    if "key_facts" not in result.suite.metrics or "context_recall" not in result.suite.metrics:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result.ranking
    parts = []
    for name in names:
        losses = case_losses(result.suite.cases, result.runs[name])
        facts = max(sum(c.facts for c in losses), 1)
        stated = sum(c.stated_in_context for c in losses) / facts
        stated_unshown = (sum(c.stated for c in losses) - sum(c.stated_in_context for c in losses)) / facts
        shown_only = (sum(c.in_context for c in losses) - sum(c.stated_in_context for c in losses)) / facts
        parts.append((stated, stated_unshown, shown_only, sum(c.contradicted for c in losses) / facts))
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * len(names)))
    left = [0.0] * len(names)
    for column, (label, colour) in enumerate((("stated, was shown", "#2a9d8f"), ("stated, not shown", "#8ab17d"),
                                              ("shown, not stated", "#e9c46a"))):
        values = [p[column] for p in parts]
        ax.barh(range(len(names)), values, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, values)]
    ax.barh(range(len(names)), [1 - x for x in left], left=left, color="#e5e5e5", label="never shown, not stated")
    ax.scatter([p[3] for p in parts], range(len(names)), marker="x", color="#c0392b", zorder=3, label="contradicted")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the reference's checkable facts", fontsize=8)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_title(f"{result.suite.name}: where the reference facts are lost", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in rows])
