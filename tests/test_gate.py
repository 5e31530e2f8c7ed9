"""The regression gate for CI: two report folders written by hand (summary.json, results.jsonl, winner.yaml), a
new winner significantly worse on the primary metric or worse beyond the margin on a fact metric exits 1 with
a one-line reason, a tie or an improvement exits 0, on the case ids both reports scored; `eval
--fail-on-regression` runs the same check after the suite."""

from __future__ import annotations

import json
import types

import pytest
import yaml

from assistant.cli.parser import main
from assistant.config import Variant

CASES = [f"c{i:02d}" for i in range(40)]
BASELINE = [0.3 + 0.4 * ((i * 37) % 40) / 40 for i in range(40)]
"""Per-case rouge_l of the baseline: spread over 0.3 to 0.7."""


def variant(tokens: int) -> Variant:
    v = Variant(name=f"v{tokens}")
    v.generation.max_new_tokens = tokens
    return v


def write_report(reports, folder: str, winner: Variant, scores: list[float], cases: list[str] = CASES,
                 key_facts: float = 0.4, contradicted: float = 0.1):
    """A report folder whose only variant, the winner, scored ``scores`` (rouge_l) on ``cases``."""
    path = reports / folder
    path.mkdir(parents=True)
    path.joinpath("winner.yaml").write_text(yaml.safe_dump({
        "suite": "s", "created": folder, "variant_hash": winner.variant_hash(), "variant": winner.to_dict()}))
    with open(path / "results.jsonl", "w", encoding="utf-8") as handle:
        for case, score in zip(cases, scores):
            handle.write(json.dumps({"case": case, "variant": winner.name, "variant_hash": winner.variant_hash(),
                                     "answer": f"answer to {case}", "scores": {"rouge_l": score}}) + "\n")
    path.joinpath("summary.json").write_text(json.dumps({
        "suite": "s", "created": folder, "primary": "rouge_l", "winner": winner.name, "cases": list(cases),
        "variants": {winner.name: {
            "variant_hash": winner.variant_hash(), "engine": "llamacpp",
            "metrics": {"rouge_l": {"value": sum(scores) / len(scores)}, "key_facts": {"value": key_facts},
                        "grounding": {"value": 0.8}},
            "errors_per_answer": {"contradicted": {"value": contradicted}, "unsupported": {"value": 0.2}}}},
        "comparisons": {"rouge_l": []}}))
    return path


def gate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["gate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_planted_regression_on_the_primary_metric_exits_1_with_the_reason(tmp_path, capsys):
    base = write_report(tmp_path, "s-1", variant(10), BASELINE)
    worse = [s - 0.15 + 0.02 * ((i * 7) % 5 - 2) for i, s in enumerate(BASELINE)]  # 0.15 lower, with noise
    new = write_report(tmp_path, "s-2", variant(20), worse)
    code, out, err = gate(capsys, new, "--against", base)
    assert code == 1 and out == ""
    line = one_line(err)
    assert line == ("regression: v20 is significantly worse than v10 (s-1) on rouge_l (0.3450 against "
                    "0.4950, p = 0.001, 40 shared cases)"), line


def test_a_tie_exits_0_and_says_so(tmp_path, capsys):
    base = write_report(tmp_path, "s-1", variant(10), BASELINE)
    new = write_report(tmp_path, "s-2", variant(20), BASELINE)
    code, out, err = gate(capsys, new / "winner.yaml", "--against", base)  # a winner.yaml names its report too
    assert code == 0 and err == ""
    assert one_line(out) == ("no regression: v20 against v10 (s-1) on rouge_l: tied (0.4950 against 0.4950, "
                             "p = 1.000, 40 shared cases); facts within 0.02")


def test_facts_worse_beyond_the_margin_fail_while_the_primary_ties(tmp_path, capsys):
    base = write_report(tmp_path, "s-1", variant(10), BASELINE, key_facts=0.40, contradicted=0.10)
    new = write_report(tmp_path, "s-2", variant(20), BASELINE, key_facts=0.30, contradicted=0.11)
    code, _, err = gate(capsys, new, "--against", base)
    assert code == 1
    assert one_line(err) == ("regression: v20 is worse than v10 (s-1) beyond the margin of 0.02 on facts: "
                             "key_facts 0.300 against 0.400 (rouge_l: tied, 0.4950 against 0.4950, p = 1.000, "
                             "40 shared cases)")  # contradicted is 0.01 worse: within the margin
    assert gate(capsys, new, "--against", base, "--margin", "0.15")[0] == 0  # a wider margin lets it pass


def test_an_improvement_passes_on_the_cases_both_reports_scored(tmp_path, capsys):
    extra = CASES + ["c40", "c41"]
    base = write_report(tmp_path, "s-1", variant(10), BASELINE + [0.0, 0.0], cases=extra)
    better = [s + 0.1 + 0.02 * ((i * 3) % 5 - 2) for i, s in enumerate(BASELINE)]
    shuffled = list(reversed(range(40)))  # rows in another order: paired by case id, not by position
    new = write_report(tmp_path, "s-2", variant(20), [better[i] for i in shuffled], cases=[CASES[i] for i in shuffled])
    code, out, _ = gate(capsys, new, "--against", base)
    line = one_line(out)
    assert code == 0 and line.startswith("no regression: v20 against v10 (s-1) on rouge_l: significantly better ")
    assert "40 shared cases of 40 and 42" in line and "(facts over each report's own cases)" in line
    assert "0.5950 against 0.4950" in line  # the baseline on the shared cases, not on its 42


def test_against_served_compares_with_the_promoted_winner(tmp_path, capsys):
    from assistant.evaluation.promotion import promote

    reports = tmp_path / "reports"
    served = write_report(reports, "s-20260101-000000", variant(10), BASELINE)
    promote(served, reports, who="tester")
    write_report(reports, "s-20260102-000000", variant(30), [s + 0.2 for s in BASELINE])  # newer, never promoted
    new = write_report(reports, "s-20260103-000000", variant(20), [s - 0.2 for s in BASELINE])
    code, _, err = gate(capsys, new, "--against", "served", "--reports", reports)
    assert code == 1 and "worse than v10 (served, from s-20260101-000000)" in one_line(err)
    assert gate(capsys, served, "--against", "served", "--reports", reports)[0] == 2  # the served report itself


def test_reports_that_cannot_be_compared_are_user_errors(tmp_path, capsys):
    base = write_report(tmp_path, "s-1", variant(10), BASELINE)
    other = write_report(tmp_path, "s-2", variant(20), BASELINE, cases=[f"x{i}" for i in range(40)])
    code, _, err = gate(capsys, other, "--against", base)
    assert code == 2 and "no scored cases in common" in err
    code, _, err = gate(capsys, other, "--against", tmp_path / "missing")
    assert code == 2 and "no such report folder" in err
    assert main(["eval", "eval/suites/none.yaml", "--fail-on-regression"]) == 2
    assert "--against REPORT or --against served" in capsys.readouterr().err


@pytest.fixture
def evaluated(monkeypatch):
    """`assistant eval` with its suite run and report written faked: the report is the folder given."""
    import assistant.evaluation
    import assistant.evaluation.report

    written = {}
    suite = types.SimpleNamespace(name="s", cases=CASES, variants=[types.SimpleNamespace(name="v20")],
                                  primary="rouge_l", batch_size=1, promote=False, promotion_margin=0.02)
    monkeypatch.setattr(assistant.evaluation, "load_suite", lambda *a, **k: suite)
    monkeypatch.setattr(assistant.evaluation, "evaluate_suite", lambda *a, **k: None)
    monkeypatch.setattr(assistant.evaluation.report, "write_report", lambda result, out: written["folder"])
    monkeypatch.setattr(assistant.evaluation.report, "winner_sentence", lambda result: "v20 wins")
    return written


def test_eval_fail_on_regression_runs_the_gate_after_the_report(tmp_path, capsys, evaluated):
    base = write_report(tmp_path, "s-1", variant(10), BASELINE)
    evaluated["folder"] = write_report(tmp_path, "s-2", variant(20), [s - 0.2 for s in BASELINE])
    argv = ["eval", "suite.yaml", "--no-cache", "--quiet", "--against", str(base)]
    assert main(argv + ["--fail-on-regression"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("regression: v20 is significantly worse than v10 (s-1) on rouge_l")
    assert main(argv) == 0  # without --fail-on-regression the comparison is only reported
    evaluated["folder"] = write_report(tmp_path, "s-3", variant(30), BASELINE)
    assert main(argv + ["--fail-on-regression"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("no regression: v30 against v10 (s-1) on rouge_l: tied")
