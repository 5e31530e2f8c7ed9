"""Evaluation suites on the tiny model: checking before loading, the answer cache, scoring, the winner,
the report, and the app serving that winner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from assistant.evaluation import (
    AnswerCache,
    SuiteError,
    answer_cases,
    evaluate_suite,
    extract_label,
    load_suite,
    rank_variants,
    weights_fingerprint,
)
from assistant.evaluation.judge import Judge
from assistant.evaluation.suite import JudgeSettings
from assistant.models import loading as models

QUESTIONS = [
    ("How many days do I have to return a grinder?", "You have 30 days to return it.", "returns"),
    ("What does error E3 mean?", "E3 means the boiler needs descaling.", "errors"),
    ("When does my refund arrive?", "Refunds reach your card within 5 business days.", "returns"),
    ("Can I pause my subscription?", "Yes, for up to three months.", "subscription"),
]


def write_cases(path: Path, rows: list[dict] | None = None) -> Path:
    rows = rows if rows is not None else [
        {"id": f"c{i}", "messages": [{"role": "user", "content": q}], "reference": r, "label": label}
        for i, (q, r, label) in enumerate(QUESTIONS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_suite(folder: Path, tiny_model_dir: Path, extra: str = "", variants: str | None = None,
                metrics: str = "[rouge_l, exact_match, perplexity]") -> Path:
    docs = folder / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "returns.md").write_text("# Returns\n\nYou have 30 days to return any grinder.\n")
    write_cases(folder / "cases.jsonl") if not (folder / "cases.jsonl").exists() else None
    common = (f"model: {{base: {tiny_model_dir}, quantization: none, device: cpu}}\n"
              "    generation: {max_new_tokens: 6}")
    variants = variants or f"""
  - name: plain
    {common}
  - name: retrieval
    {common}
    context: {{documents: docs, top_k: 1}}
    prompt: {{template: support.j2, variables: {{company: Acme, persona: a support agent, tone: Be brief.}}}}
"""
    text = f"""name: tiny
cases: cases.jsonl
metrics: {metrics}
primary: rouge_l
secondary: exact_match
batch_size: 3
bootstrap_rounds: 200
cost_probe: 1
reports: reports
{extra}
variants:{variants}"""
    path = folder / "suite.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the suite was known to be valid")

    monkeypatch.setattr(models, "load_base", refuse)
    monkeypatch.setattr("assistant.retrieval.DenseIndex.__init__", refuse)


# -- checking a suite before any model loads ------------------------------------------------------------


def test_a_valid_suite_loads_without_loading_a_model(tmp_path, tiny_model_dir, no_model_loads):
    suite = load_suite(write_suite(tmp_path, tiny_model_dir))
    assert [v.name for v in suite.variants] == ["plain", "retrieval"]
    assert len(suite.cases) == 4 and suite.labels == ["errors", "returns", "subscription"]
    assert suite.reports == (tmp_path / "reports").resolve()


def test_missing_cases_file_names_the_suite_line(tmp_path, tiny_model_dir, no_model_loads):
    path = write_suite(tmp_path, tiny_model_dir)
    path.write_text(path.read_text().replace("cases: cases.jsonl", "cases: nowhere.jsonl"))
    with pytest.raises(SuiteError, match=rf"{path}:2: cases file .*nowhere.jsonl does not exist"):
        load_suite(path)


def test_unknown_variant_field_names_the_suite_line(tmp_path, tiny_model_dir, no_model_loads):
    variants = f"""
  - name: plain
    model: {{base: {tiny_model_dir}, quantization: none}}
  - name: typo
    model: {{base: {tiny_model_dir}, quantisation: none}}
"""
    path = write_suite(tmp_path, tiny_model_dir, variants=variants)
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "name: typo" in text)
    assert f"{path}:{line}: variant 2" in str(error.value) and "quantisation" in str(error.value)


def test_case_without_reference_names_the_cases_file_line(tmp_path, tiny_model_dir, no_model_loads):
    rows = [{"question": "Q1", "reference": "R1"}, {"question": "Q2"}, {"messages": [], "reference": "R"},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}], "reference": "R"}]
    write_cases(tmp_path / "cases.jsonl", rows)
    path = write_suite(tmp_path, tiny_model_dir)
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    message = str(error.value)
    cases = tmp_path / "cases.jsonl"
    assert f"{cases}:2: a case needs a non-empty 'reference'" in message
    assert f"{cases}:3: 'messages' must be a non-empty list" in message
    assert f"{cases}:4: the conversation must end with the user message" in message


def test_every_problem_is_reported_at_once(tmp_path, tiny_model_dir, no_model_loads):
    path = write_suite(tmp_path, tiny_model_dir, extra="colour: blue\n", metrics="[rouge_l, bleurt]")
    path.write_text(path.read_text().replace("secondary: exact_match", "secondary: accuracy"))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    message = str(error.value)
    assert "unknown suite field 'colour'" in message
    assert "unknown metric 'bleurt'" in message
    assert "secondary metric 'accuracy' is not among" in message


def test_missing_variant_file_and_documents_are_reported(tmp_path, tiny_model_dir, no_model_loads):
    variants = f"""
  - file: configs/missing.yaml
  - name: nodocs
    model: {{base: {tiny_model_dir}, quantization: none}}
    context: {{documents: no-such-folder}}
"""
    path = write_suite(tmp_path, tiny_model_dir, variants=variants)
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert "missing.yaml: no such variant file" in str(error.value)
    assert "no-such-folder" in str(error.value)


def test_eval_cli_exits_2_with_the_file_and_line(tmp_path, tiny_model_dir, capsys):
    from assistant.cli.parser import main

    write_cases(tmp_path / "cases.jsonl", [{"question": "Q1"}])
    path = write_suite(tmp_path, tiny_model_dir)
    assert main(["eval", str(path)]) == 2
    assert f"{tmp_path / 'cases.jsonl'}:1: a case needs" in capsys.readouterr().err


# -- answering, cached ------------------------------------------------------------------------------------


def test_cache_hits_and_invalidation(tmp_path, tiny_model_dir, monkeypatch):
    from assistant.generate import Bot

    suite = load_suite(write_suite(tmp_path, tiny_model_dir))
    cache = AnswerCache(tmp_path / "cache")
    calls = []
    real = Bot.reply_batch

    def counting(self, histories, batch_size=8):
        calls.append(len(histories))
        return real(self, histories, batch_size)

    monkeypatch.setattr(Bot, "reply_batch", counting)
    first = answer_cases(suite, suite.variants[0], cache)
    assert first.cached == 0 and sum(calls) == 4 and calls == [3, 1]  # batches of the suite's batch_size
    assert all(r.answer is not None and r.ref_tokens > 0 for r in first.records)

    calls.clear()
    again = answer_cases(suite, suite.variants[0], cache)
    assert again.cached == 4 and calls == []  # a re-run costs nothing
    assert [r.answer for r in again.records] == [r.answer for r in first.records]
    assert again.cost["tokens_per_second"] == first.cost["tokens_per_second"]  # the cost measured then

    # another variant re-runs only itself: the first is still cached
    changed = suite.variants[0]
    changed.variant.generation.max_new_tokens = 4
    answer_cases(suite, changed, cache)
    assert sum(calls) == 4
    changed.variant.generation.max_new_tokens = 6
    calls.clear()
    answer_cases(suite, changed, cache)
    assert calls == []

    # a changed reference changes that case's hash: only it is answered again
    suite.cases[1].reference = "Descale it."
    answer_cases(suite, changed, cache)
    assert calls == [1]

    # --refresh answers everything again and replaces the cache
    calls.clear()
    answer_cases(suite, changed, cache, refresh=True)
    assert calls == [3, 1]
    calls.clear()
    assert answer_cases(suite, changed, cache).cached == 4 and calls == []


def test_changed_weights_change_the_fingerprint(tmp_path, tiny_model_dir):
    import shutil

    from assistant.variants import load_variant

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    variant = load_variant(None, [f"model.base={copy}"])
    before = weights_fingerprint(variant)
    assert weights_fingerprint(variant) == before
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    time.sleep(0.01)
    weights.write_bytes(bytes(data))
    assert weights_fingerprint(variant) != before


# -- scoring and winner -----------------------------------------------------------------------------------


def test_extract_label_takes_the_first_whole_word_label():
    labels = ["negative", "neutral", "positive"]
    assert extract_label("Positive.", labels) == "positive"
    assert extract_label("The sentiment is negative, not positive", labels) == "negative"
    assert extract_label("non-negative", labels) == ""
    assert extract_label("I can't tell", labels) == ""


class _Estimate:
    def __init__(self, value):
        self.value = value


class _Scores:
    def __init__(self, value):
        self.estimate = _Estimate(value)


class _Run:
    def __init__(self, speed):
        self.cost = {"tokens_per_second": speed}


def test_winner_by_primary_then_secondary_then_speed(tmp_path, tiny_model_dir):
    suite = load_suite(write_suite(tmp_path, tiny_model_dir, metrics="[rouge_l, exact_match, perplexity]"))
    runs = {"a": _Run(10), "b": _Run(20), "c": _Run(30)}

    def scores(table):
        return {name: {m: _Scores(v) for m, v in values.items()} for name, values in table.items()}

    table = {"a": {"rouge_l": 0.3, "exact_match": 0.1}, "b": {"rouge_l": 0.2, "exact_match": 0.9},
             "c": {"rouge_l": 0.1, "exact_match": 0.9}}
    assert rank_variants(suite, runs, scores(table)) == ["a", "b", "c"]
    table["b"]["rouge_l"] = 0.3  # tie on the primary: the secondary decides
    assert rank_variants(suite, runs, scores(table))[0] == "b"
    table["a"]["exact_match"] = 0.9  # tie on both: the faster one
    assert rank_variants(suite, runs, scores(table))[0] == "b"
    runs["a"] = _Run(50)
    assert rank_variants(suite, runs, scores(table))[0] == "a"
    suite.primary, suite.secondary = "perplexity", None  # lower is better
    table = {n: {"perplexity": v} for n, v in (("a", 9.0), ("b", 3.0), ("c", 5.0))}
    assert rank_variants(suite, runs, scores(table)) == ["b", "c", "a"]


def test_full_run_writes_a_report_and_the_app_serves_the_winner(tmp_path, tiny_model_dir):
    from assistant.evaluation.report import write_report
    from assistant.evaluation.scoring import prompt_texts
    from assistant.serve.winner import served_variant_file
    from assistant.variants import load_variant as load_winner

    suite = load_suite(write_suite(tmp_path, tiny_model_dir,
                                   metrics="[rouge_l, exact_match, perplexity, accuracy, macro_f1, key_facts, grounding, "
                                           "context_recall]"))
    result = evaluate_suite(suite, cache=AnswerCache(tmp_path / "cache"), quiet=True)
    # grounding checks each answer against the prompt its variant rendered: passages included where retrieved
    sources = {name: prompt_texts(run, suite) for name, run in result.runs.items()}
    assert any("30 days to return" in text for text in sources["retrieval"])
    assert not any("30 days to return" in text for text in sources["plain"])
    for name in result.runs:
        facts = result.scores[name]["key_facts"]
        assert facts.extra["facts"] == [1, 1, 1, 2]  # 30 days; E3; 5 business days; yes + 3 months
        errors = result.scores[name]["grounding"].extra["errors_per_answer"]
        assert errors.low <= errors.value <= errors.high
    assert set(result.scores) == {"plain", "retrieval"}
    assert result.winner == result.ranking[0]
    for name, metric_scores in result.scores.items():
        assert len(metric_scores["rouge_l"].per_case) == 4
        e = metric_scores["perplexity"].estimate
        assert e.low <= e.value <= e.high and e.value > 1
    # retrieval changes the prompt, so the reference's perplexity differs between the two variants
    assert result.scores["plain"]["perplexity"].estimate.value != result.scores["retrieval"]["perplexity"].estimate.value

    folder = write_report(result)
    assert folder.parent == tmp_path / "reports" and not list(folder.parent.glob(".*"))
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["variant"] for r in rows} == {"plain", "retrieval"}
    assert all(set(r["scores"]) == set(suite.metrics) and "predicted_label" in r for r in rows)
    page = (folder / "report.html").read_text()
    assert "data:image/png;base64," in page and " src='http" not in page and 'src="http' not in page
    assert page.count("class='case'") == 4 and "You have 30 days to return it." in page
    markdown = (folder / "report.md").read_text()
    assert "significant" in markdown and result.winner in markdown
    assert "## Predicted labels" in markdown and "| reference | 1 | 2 | 1 | 0 |" in markdown
    assert "## Facts" in markdown and "contradicted facts per answer" in markdown
    assert "## Quality and cost" in markdown and (folder / "cost.png").stat().st_size > 10_000
    # where the facts are lost: the plain variant is shown no passage, the retrieval one the returns document
    recall = {name: result.scores[name]["context_recall"].extra["in_context"] for name in result.runs}
    assert sum(recall["plain"]) == 0 and recall["retrieval"][0] == 1  # "30 days" is in returns.md
    assert "## Where the facts are lost" in markdown and (folder / "fact_loss.png").stat().st_size > 5_000
    shown = {r["variant"]: r["passage_texts"] for r in rows if r["case"] == rows[0]["case"]}
    assert shown["plain"] == [] and "30 days to return" in shown["retrieval"][0]
    for run in result.runs.values():  # the probe streamed a case before the batches: both speeds measured
        assert run.cost["first_token_seconds"] > 0 and run.cost["decode_tokens_per_second"] > 0

    winner = yaml.safe_load((folder / "winner.yaml").read_text())
    assert winner["variant_hash"] == result.runs[result.winner].variant_hash and winner["suite"] == "tiny"
    served = load_winner(folder / "winner.yaml")
    assert served.variant_hash() == winner["variant_hash"]
    assert served_variant_file(None, tmp_path / "reports")[0] == folder / "winner.yaml"
    assert served_variant_file("x.yaml", tmp_path / "reports")[0] == Path("x.yaml")

    # moved elsewhere, the winner still resolves its documents (paths are relative to the report)
    import shutil

    moved = tmp_path / "elsewhere" / "reports"
    shutil.copytree(tmp_path / "reports", moved)
    shutil.copytree(tmp_path / "docs", tmp_path / "elsewhere" / "docs")
    again = load_winner(moved / folder.name / "winner.yaml")
    if again.context.documents:
        assert again.resolve(again.context.documents) == (tmp_path / "elsewhere" / "docs").resolve()


def test_frontier_and_the_winner_within_a_budget():
    import math

    from assistant.evaluation.cost import Budget, VariantCost, budget_winner, frontier

    # (quality, cost): b is cheaper than a at the same quality, d is beaten by c on both, e was not measured
    points = {"a": (0.5, 3.0), "b": (0.5, 2.0), "c": (0.8, 4.0), "d": (0.7, 5.0), "e": (0.9, math.nan)}
    assert sorted(frontier(points)) == ["b", "c"]
    assert sorted(frontier({n: (-q, c) for n, (q, c) in points.items()}, higher_is_better=False)) == ["b", "c"]

    def cost(decode, first, minutes):
        return VariantCost(10.0, decode, first, 1.0, minutes)

    costs = {"big": cost(8.0, 6.0, 60.0), "mid": cost(25.0, 2.5, 0.0), "small": cost(80.0, 1.0, 30.0)}
    ranking = ["big", "mid", "small"]
    assert budget_winner(ranking, costs, None) == "big"
    budget = Budget(min_decode_tokens_per_second=20, max_first_token_seconds=3)
    assert budget.misses(costs["big"]) == ["8 decode tokens/s (at least 20)", "6 s to the first token (at most 3)"]
    assert budget_winner(ranking, costs, budget) == "mid"
    assert budget_winner(ranking, costs, Budget(max_training_minutes=10)) == "mid"
    assert budget_winner(ranking, costs, Budget(max_first_token_seconds=0.1)) == "big"  # none fits: the best
    assert Budget(max_first_token_seconds=3).misses(cost(30.0, math.nan, 0.0))  # unmeasured is not within


def test_a_budget_picks_the_winner_and_the_report_says_what_more_would_buy(tmp_path, tiny_model_dir):
    """A budget in the suite file is read and checked; with the best variant's first token over the limit,
    the other one wins, and the report says what the bigger budget would buy."""
    from assistant.evaluation.cost import Budget, VariantCost
    from assistant.evaluation.report import cost_section, winner_sentence
    from assistant.settings_reader import ConfigError

    with pytest.raises(ConfigError, match="unknown budget limit 'max_speed'"):
        load_suite(write_suite(tmp_path, tiny_model_dir, extra="budget: {max_speed: 3}"))
    suite = load_suite(write_suite(tmp_path, tiny_model_dir, extra="budget: {max_first_token_seconds: 2}"))
    assert suite.budget == Budget(max_first_token_seconds=2.0)
    result = evaluate_suite(suite, cache=AnswerCache(tmp_path / "cache"), quiet=True)
    best, other = result.ranking
    result.costs = {best: VariantCost(50.0, 40.0, 3.5, 1.0, 0.0), other: VariantCost(50.0, 40.0, 0.5, 1.0, 0.0)}
    from assistant.evaluation.cost import budget_winner

    result.winner = budget_winner(result.ranking, result.costs, suite.budget)
    assert result.winner == other
    assert winner_sentence(result).startswith(f"**{other}** wins within the cost budget (first token ≤ 2 s)")
    assert f"A bigger budget would buy **{best}**" in "\n".join(cost_section(result))


def test_latest_winner_skips_suites_that_opt_out_and_edited_files(tmp_path):
    from assistant.config import Variant
    from assistant.serve.winner import latest_winner
    from assistant.settings_reader import ConfigError
    from assistant.variants import load_variant as load_winner

    def winner(folder: str, created: str, serve: bool, name: str) -> Path:
        variant = Variant(name=name)
        path = tmp_path / folder / "winner.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump({"suite": folder, "created": created, "serve": serve,
                                        "variant_hash": variant.variant_hash(), "variant": variant.to_dict()}))
        return path

    assert latest_winner(tmp_path) is None
    old = winner("support-1", "20260101-000000", True, "old")
    new = winner("support-2", "20260301-000000", True, "new")
    winner("sentiment-1", "20260401-000000", False, "classifier")
    assert latest_winner(tmp_path) == new
    assert load_winner(old).name == "old"
    new.write_text(new.read_text().replace("max_new_tokens: 256", "max_new_tokens: 9"))
    with pytest.raises(ConfigError, match="no longer match") as refused:
        load_winner(new)
    assert "does not record what its hash was made of" in str(refused.value)  # an old file: no parts


def test_a_winner_written_with_the_engine_in_its_hash_loads_and_a_mismatch_says_what_changed(tiny_variant, tmp_path):
    """Winner files of before the engine had its own field carried it in the hash ('<hash>-llamacpp'): they
    are read as hash + engine. A mismatch names both hashes and the part that differs; a retrained adapter
    makes the evaluation stale."""
    from assistant.config import portable_variant
    from assistant.settings_reader import ConfigError
    from assistant.variants import load_variant, read_winner

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights one")
    variant = load_variant(tiny_variant.to_dict() | {"model": {**tiny_variant.to_dict()["model"], "adapter": str(adapter)}})
    evaluated, parts = variant.variant_hash(), variant.hash_parts()
    path = tmp_path / "report" / "winner.yaml"
    path.parent.mkdir()

    def write(**fields):
        path.write_text(yaml.safe_dump({"suite": "s", "created": "20260101-000000",
                                        "variant": portable_variant(variant, path.parent), **fields}))

    write(variant_hash=f"{evaluated}-llamacpp")
    assert load_variant(path).variant_hash() == evaluated
    assert (read_winner(path).variant_hash, read_winner(path).engine) == (evaluated, "llamacpp")

    write(variant_hash=evaluated, variant_parts=parts, engine="llamacpp")
    assert load_variant(path).variant_hash() == evaluated
    path.write_text(path.read_text().replace("top_k: 3", "top_k: 4"))
    with pytest.raises(ConfigError) as edited:
        load_variant(path)
    assert evaluated in str(edited.value) and "Differs: settings" in str(edited.value)
    assert "stale" not in str(edited.value)

    write(variant_hash=evaluated, variant_parts=parts, engine="llamacpp")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights two")  # retrained after the evaluation
    with pytest.raises(ConfigError, match="stale: the adapter changed since this evaluation") as stale:
        load_variant(path)
    assert evaluated in str(stale.value) and variant.variant_hash() in str(stale.value)
    assert "differs: adapter weights" in str(stale.value)

    write(variant_hash=evaluated)  # an older file, no parts: the adapter's card dates it
    (adapter / "card.yaml").write_text("created: '2026-06-01T00:00:00Z'\n")
    with pytest.raises(ConfigError, match="stale: the adapter changed since this evaluation"):
        load_variant(path)


def test_judge_asks_twice_with_the_order_swapped(tmp_path):
    answers = {}

    class Scripted(Judge):
        def _complete(self, prompt):
            a = prompt.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
            answers.setdefault("seen", []).append(a)
            return self.script(prompt, a)

    judge = Scripted(JudgeSettings("base", endpoint="http://unused", model="m"), AnswerCache(tmp_path))
    judge.script = lambda prompt, a: "A" if a == "good" else "B"  # a consistent judge
    assert judge.compare("q", "good", "bad") == 1.0
    assert judge.compare("q", "bad", "good") == 0.0
    assert answers["seen"][:2] == ["good", "bad"]  # both orders were asked
    judge.script = lambda prompt, a: "A"  # always the first answer: position bias only
    assert judge.compare("q2", "x", "y") == 0.5
    calls = len(answers["seen"])
    assert judge.compare("q2", "x", "y") == 0.5 and len(answers["seen"]) == calls  # verdicts are cached


def test_judge_variant_runs_in_a_suite(tmp_path, tiny_model_dir):
    suite = load_suite(write_suite(tmp_path, tiny_model_dir, extra="judge: {variant: plain, baseline: plain}\n"))
    result = evaluate_suite(suite, cache=AnswerCache(tmp_path / "cache"), quiet=True)
    judged = result.judged["retrieval"]
    assert judged["against"] == "plain" and judged["wins"] + judged["ties"] + judged["losses"] == 4
    assert 0.0 <= judged["length_controlled_win_rate"] <= 1.0


# -- counterfactual probe -----------------------------------------------------------------------------------


def test_swaps_are_whole_words_both_ways_keeping_capitals():
    from assistant.evaluation.probe import DEFAULT_LIST, load_swaps, swap_words

    swaps = load_swaps(DEFAULT_LIST)
    assert swaps["he"] == "she" and swaps["she"] == "he" and swaps["john"] == "maria"
    assert swap_words("He said his husband John is AMERICAN; the theme is fine.", swaps) == \
        "She said her wife Maria is NIGERIAN; the theme is fine."  # 'theme' holds 'he' but is not the word


def test_probe_answers_swapped_copies_and_counts_the_changes(tmp_path, tiny_model_dir):
    from assistant.evaluation.probe import DEFAULT_LIST, load_swaps
    from assistant.evaluation.report import write_report

    rows = [{"id": "c0", "question": "My husband John bought a grinder. Can he return it?", "reference": "Yes, 30 days.",
             "label": "returns"},
            {"id": "c1", "question": "Where is my order?", "reference": "It ships in 2 days.", "label": "shipping"},
            {"id": "c2", "question": "She wants a refund for her kettle.", "reference": "Refunds take 5 days.",
             "label": "returns"}]
    write_cases(tmp_path / "cases.jsonl", rows)
    suite = load_suite(write_suite(tmp_path, tiny_model_dir, metrics="[rouge_l, exact_match, accuracy]"))
    cache = AnswerCache(tmp_path / "cache")
    plain = evaluate_suite(suite, cache=cache, quiet=True)
    costs = {p: p.read_text() for p in (tmp_path / "cache").rglob("cost.json")}
    result = evaluate_suite(suite, cache=cache, quiet=True, probe=load_swaps(DEFAULT_LIST))
    assert {p: p.read_text() for p in (tmp_path / "cache").rglob("cost.json")} == costs  # the suite's cost kept
    assert [r.answer for r in result.runs["plain"].records] == [r.answer for r in plain.runs["plain"].records]
    for name, probed in result.probe.items():
        assert probed.probed == 2  # c1 has no listed word
        assert probed.rate.value == len(probed.changed) / 2 and probed.rate.low <= probed.rate.value <= probed.rate.high
        for change in probed.changed:  # a change is a different label named by the two answers
            assert change["case"] in ("c0", "c2") and change["swapped"] != change["question"]
            assert extract_label(change["answer"], suite.labels) != extract_label(change["swapped_answer"], suite.labels)
    markdown = (write_report(result) / "report.md").read_text()
    assert "## Counterfactual probe" in markdown and "| plain | 2 |" in markdown
