"""The promotion gate decides what the app serves: a winner that is not significantly better is refused, a
significantly better one is promoted unless its facts are worse beyond the margin, every decision that
changes serving is kept in the history, and a rollback serves the previous winner again."""

from __future__ import annotations

import json

import pytest
import yaml

from assistant.config import Variant
from assistant.evaluation.promotion import history, promote, rollback, served_winner


def variant(tokens: int) -> Variant:
    v = Variant(name=f"v{tokens}")
    v.generation.max_new_tokens = tokens
    return v


def write_report(reports, folder: str, winner: Variant, others: dict[str, tuple[Variant, float, float]],
                 score: float, key_facts: float = 0.4):
    """A report whose winner scores ``score``; ``others`` are name -> (variant, its score, the p-value of the
    winner against it)."""
    path = reports / folder
    path.mkdir(parents=True)
    path.joinpath("winner.yaml").write_text(yaml.safe_dump({
        "suite": "s", "created": folder, "variant_hash": winner.variant_hash(), "variant": winner.to_dict()}))

    def numbers(v: Variant, value: float, facts: float) -> dict:
        return {"variant_hash": v.variant_hash(), "engine": "llamacpp",
                "metrics": {"rouge_l": {"value": value}, "key_facts": {"value": facts}},
                "errors_per_answer": {"contradicted": {"value": 0.1}}}

    variants = {winner.name: numbers(winner, score, key_facts)}
    comparisons = []
    for name, (other, value, p) in others.items():
        variants[name] = numbers(other, value, 0.4)
        comparisons.append({"a": winner.name, "b": name, "p_value": p, "cases": 50})
    path.joinpath("summary.json").write_text(json.dumps({
        "suite": "s", "created": folder, "primary": "rouge_l", "winner": winner.name, "cases": ["c1"],
        "variants": variants, "comparisons": {"rouge_l": comparisons}}))
    return path


def test_promotion_needs_a_significant_win_keeps_facts_and_rolls_back(tmp_path):
    reports = tmp_path / "reports"
    a, b, c, d = variant(10), variant(20), variant(30), variant(40)
    first = write_report(reports, "s-1", a, {}, 0.10)
    decision = promote(first, reports, who="tester")
    assert decision.promoted and decision.reason == "nothing is served yet"
    assert served_winner(reports)[0] == first / "winner.yaml"

    tied = write_report(reports, "s-2", b, {"v10": (a, 0.10, 0.30)}, 0.11)
    decision = promote(tied, reports, who="tester")
    assert not decision.promoted and "not significantly" in decision.reason and "p = 0.300" in decision.reason
    assert served_winner(reports)[0] == first / "winner.yaml"  # serving is left alone

    better = write_report(reports, "s-3", c, {"v10": (a, 0.10, 0.01)}, 0.15)
    decision = promote(better, reports, who="tester")
    assert decision.promoted and decision.numbers["candidate"] == 0.15 and decision.numbers["served"] == 0.10
    assert served_winner(reports)[0] == better / "winner.yaml"

    worse_facts = write_report(reports, "s-4", d, {"v30": (c, 0.15, 0.01)}, 0.20, key_facts=0.30)
    decision = promote(worse_facts, reports, margin=0.02)
    assert not decision.promoted and "key_facts 0.300 against 0.400" in decision.reason

    assert rollback(reports, who="tester").promoted
    assert served_winner(reports)[0] == first / "winner.yaml"
    actions = [(e.action, e.report, e.who) for e in history(reports)]
    assert actions == [("promote", "s-1", "tester"), ("promote", "s-3", "tester"), ("rollback", "s-3", "tester")]
    from assistant.settings_reader import ConfigError

    with pytest.raises(ConfigError, match="nothing to roll back to"):
        rollback(reports)


def test_the_app_serves_the_promoted_winner_not_the_newest(tmp_path):
    from assistant.serve.winner import served_variant_file

    reports = tmp_path / "reports"
    old = write_report(reports, "s-20260101-000000", variant(10), {}, 0.1)
    write_report(reports, "s-20260201-000000", variant(20), {}, 0.2)  # newer, never promoted
    assert served_variant_file(None, reports)[0].parent.name == "s-20260201-000000"  # no promotion yet: newest
    promote(old, reports, who="tester")
    path, why = served_variant_file(None, reports)
    assert path == old / "winner.yaml" and why.startswith("promoted by tester")


def test_before_any_promotion_a_candidate_must_beat_the_newest_earlier_winner(tmp_path):
    """With no promotion yet the app serves the newest report's winner, so the first promotion is held against
    it (in the candidate's report, by variant hash), not waved through."""
    reports = tmp_path / "reports"
    a, b = variant(10), variant(20)
    write_report(reports, "s-20260101-000000", a, {}, 0.10)  # evaluated, served as the newest, never promoted
    tied = write_report(reports, "s-20260201-000000", b, {"v10": (a, 0.10, 0.30)}, 0.11)
    decision = promote(tied, reports, who="tester")
    assert not decision.promoted and "than the served v10" in decision.reason and "p = 0.300" in decision.reason
    assert history(reports) == []
    # the app now serves the tied report's v20, the newest winner; a later report must beat that one
    c = variant(30)
    better = write_report(reports, "s-20260301-000000", c, {"v20": (b, 0.11, 0.01)}, 0.15)
    decision = promote(better, reports, who="tester")
    assert decision.promoted and decision.numbers["served"] == 0.11 and "beats the served v20" in decision.reason
