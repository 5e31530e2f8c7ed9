"""The report's fact-loss section (assistant/evaluation/fact_loss.py) on hand-made answers: every case is
labelled by where its facts were lost, and the funnel counts match a count by hand."""

from __future__ import annotations

from types import SimpleNamespace

from assistant.evaluation.answers import Answer
from assistant.evaluation.fact_loss import case_losses, hit_rates, summarize
from assistant.evaluation.suite import Case

REFERENCE = "Opened grinders are accepted within 30 days with a 15% restocking fee."  # 2 facts
SHOWN_BOTH = "Opened grinders: within 30 days, with a 15% restocking fee."
SHOWN_ONE = "Returns are accepted within 30 days."


def case(id, source="returns.md", reference=REFERENCE):
    return Case(id, f"cases.jsonl:{id}", [{"role": "user", "content": "Can I return an opened grinder?"}],
                reference, source=source)


def answer(id, text, passages):
    return Answer(id, text, 10, 100, [f"{source} - Window" for source, _ in passages], None, None,
                  [body for _, body in passages])


def test_each_case_is_labelled_by_where_its_facts_were_lost():
    cases = [case("stated"), case("generation"), case("retrieval"), case("nofacts", reference="Happy to help."),
             case("sorry", reference="I'm sorry, I can't find that in our help articles.")]
    records = [
        answer("stated", "Yes, within 30 days, with a 15% fee.", [("returns.md", SHOWN_BOTH)]),
        answer("generation", "Yes, within 30 days.", [("faq.md", "Nothing."), ("returns.md", SHOWN_BOTH)]),
        answer("retrieval", "Within 14 days.", [("faq.md", SHOWN_ONE)]),
        answer("nofacts", "Sure.", [("faq.md", SHOWN_ONE)]),
        answer("sorry", "I can't find that.", []),
    ]
    losses = case_losses(cases, SimpleNamespace(records=records))
    assert [cases[c.index].id for c in losses] == ["stated", "generation", "retrieval"]  # only cases with facts
    assert [c.kind for c in losses] == ["stated", "generation miss", "retrieval miss"]
    assert [(c.facts, c.in_context, c.stated, c.contradicted) for c in losses] == [(2, 2, 2, 0), (2, 2, 1, 0),
                                                                                   (2, 1, 0, 1)]
    assert losses[1].missing_shown == ["percent:15"] and losses[2].missing_unseen == ["percent:15"]
    assert [c.gold_rank for c in losses] == [1, 2, None]
    summary = summarize(losses)
    assert summary.facts == 6 and summary.in_context == 5 / 6 and summary.stated == 3 / 6
    assert summary.uptake == 3 / 5 and summary.contradicted == 1 / 6
    assert summary.kinds == {"stated": 1, "generation miss": 1, "retrieval miss": 1}
    assert hit_rates(cases, losses) == {1: 1 / 3, 3: 2 / 3}
