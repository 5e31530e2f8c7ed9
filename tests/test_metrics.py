"""The metric modules under eval/metrics/: they load by path with no network, and score known cases right.

Expected values are worked out by hand in the comments; sacrebleu, rouge_score and scikit-learn are not
asked for the answers.
"""

from __future__ import annotations

import math
import socket

import pytest

from assistant.metrics import HIGHER_IS_BETTER, METRICS_DIR, SCALE, available_metrics, load_metric

NAMES = ["abstention", "accuracy", "bleu", "chrf", "citations", "context_recall", "exact_match", "grounding",
         "key_facts", "macro_f1", "perplexity", "rouge_l", "semantic_similarity"]


def _refuse_network(*args, **kwargs):
    raise AssertionError(f"a metric tried to reach the network: {args!r}")


@pytest.fixture(scope="module")
def metric():
    """Loads every metric once, offline, with any network connection an error; returns a getter by name."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_EVALUATE_OFFLINE", "1")
        for name in ("connect", "connect_ex"):
            patch.setattr(socket.socket, name, _refuse_network)
        patch.setattr(socket, "create_connection", _refuse_network)
        patch.setattr(socket, "getaddrinfo", _refuse_network)
        load_metric.cache_clear()  # a load cached by an earlier test would not prove anything here
        loaded = {name: load_metric(name) for name in NAMES}
    return loaded.__getitem__


def test_every_metric_is_listed_with_direction_and_scale(metric):
    assert available_metrics() == NAMES
    assert sorted(HIGHER_IS_BETTER) == NAMES and sorted(SCALE) == NAMES
    assert [n for n in NAMES if not HIGHER_IS_BETTER[n]] == ["perplexity"]
    for name in NAMES:
        module = metric(name)
        assert module.name == name  # evaluate derives it from the class name
        assert module.description.strip() and module.inputs_description.strip()
    assert list(metric("perplexity").features) == ["nll", "tokens"]
    assert "lower is better" in metric("perplexity").description.lower()


def test_loading_twice_in_one_process(metric):
    import evaluate

    assert load_metric("rouge_l") is metric("rouge_l")  # cached per process
    again = evaluate.load(str(METRICS_DIR / "rouge_l"))  # a second, uncached load of the same module
    assert again is not metric("rouge_l")
    first = metric("rouge_l").compute(predictions=["the cat is on the mat"], references=["the cat sat on the mat"])
    second = again.compute(predictions=["the cat is on the mat"], references=["the cat sat on the mat"])
    assert first == second


def test_unknown_metric_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown metric 'nope'") as error:
        load_metric("nope")
    assert all(name in str(error.value) for name in NAMES)


def test_rouge_l(metric):
    result = metric("rouge_l").compute(
        predictions=["the cat is on the mat", "the cat", "The cats were running.", "blue sky"],
        references=["the cat sat on the mat", "the cat sat on the mat", "the cat was runs", "green grass"],
    )
    # 1. LCS "the cat on the mat" = 5 of 6 tokens each way: P = R = F = 5/6.
    # 2. LCS 2: P = 2/2, R = 2/6, F = 2PR / (P + R) = (2/3) / (4/3) = 1/2.
    # 3. Porter stems: [the, cat, were, run] vs [the, cat, wa, run]: LCS 3 of 4 = 3/4
    #    (unstemmed only "the" matches: 1/4).
    # 4. No token in common: 0.
    expected = [5 / 6, 1 / 2, 3 / 4, 0.0]
    assert result["scores"] == pytest.approx(expected)
    assert result["rouge_l"] == pytest.approx(sum(expected) / 4)
    assert set(result) == {"rouge_l", "scores"}


def test_chrf(metric):
    chrf = metric("chrf")
    result = chrf.compute(
        predictions=["the cat sat on the mat", "abc def", "ab", "a"],
        references=["the cat sat on the mat", "xyz uvw", "ac", "ab"],
    )
    # 1. Identical: 100.  2. No character in common: 0.
    # 3. "ab" vs "ac": 1-grams P = R = 1/2; 2-grams "ab" vs "ac" P = R = 0; orders 3-6 absent on both sides.
    #    Averaged over the 2 orders both have: P = R = 1/4, so F = 1/4 -> 25.
    # 4. "a" vs "ab": only order 1 counts (the prediction has no 2-gram): P = 1, R = 1/2;
    #    F_beta with beta = 2: (1 + 4) P R / (4 P + R) = 2.5 / 4.5 -> 55.56 (beta = 1 would give 66.67).
    assert result["scores"] == pytest.approx([100.0, 0.0, 25.0, 100 * 2.5 / 4.5])
    # Corpus chrF pools counts. Over "ab"->"ac" and "a"->"ab": 1-grams hyp 3, ref 4, match 2; 2-grams hyp 1,
    # ref 2, match 0. P = (2/3 + 0) / 2 = 1/3, R = (2/4 + 0) / 2 = 1/4, F = 5 (1/12) / (4/3 + 1/4) = 5/19.
    pooled = chrf.compute(predictions=["ab", "a"], references=["ac", "ab"])
    assert pooled["chrf"] == pytest.approx(100 * 5 / 19)
    assert pooled["scores"] == pytest.approx([25.0, 100 * 2.5 / 4.5])  # and not their mean


def test_bleu(metric):
    bleu = metric("bleu")
    result = bleu.compute(
        predictions=["the cat sat on the mat", "hello", "abc def", "the cat sat on the mat", "the cat sat on"],
        references=["the cat sat on the mat", "hello", "xyz uvw", "the cat sat on a mat", "the cat sat on the mat"],
    )
    # 1. Identical: 100.  2. Identical one word: 100 thanks to effective order.  3. Disjoint: 0.
    # 4. n-gram precisions 5/6, 3/5, 2/4, 1/3 (their product 1/12), same length: 100 * (1/12) ** (1/4).
    # 5. All precisions 1, but 4 words for a 6-word reference: brevity penalty exp(1 - 6/4).
    expected = [100.0, 100.0, 0.0, 100 * (1 / 12) ** 0.25, 100 * math.exp(1 - 6 / 4)]
    assert result["scores"] == pytest.approx(expected)

    pooled = bleu.compute(
        predictions=["the cat sat on the mat", "the cat sat on"],
        references=["the cat sat on a mat", "the cat sat on the mat"],
    )
    # Corpus BLEU pools examples 4 and 5: matches 9/10, 6/8, 4/6, 2/4; lengths 10 vs 12: BP = exp(1 - 12/10).
    assert pooled["bleu"] == pytest.approx(100 * math.exp(1 - 12 / 10) * (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25)
    assert bleu.compute(predictions=["abc def"], references=["xyz uvw"])["bleu"] == 0.0


def test_exact_match(metric):
    result = metric("exact_match").compute(
        predictions=["The Cat!", "It\u2019s an apple.", "Don't  stop", "cats", "theme"],
        references=["cat", "its apple", "dont stop", "cat", "me"],
    )
    # Case, punctuation (a curly apostrophe too), articles and extra spaces go; words stay whole.
    assert result["scores"] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert result["exact_match"] == pytest.approx(3 / 5)


def test_accuracy(metric):
    result = metric("accuracy").compute(
        predictions=["billing", "Refund ", "shipping", "other"],
        references=["billing", "refund", "returns", "other"],
    )
    assert result == {"accuracy": 0.75, "scores": [1.0, 1.0, 0.0, 1.0]}


def test_macro_f1(metric):
    macro = metric("macro_f1")
    references = ["a", "a", "a", "b", "b", "c"]
    predictions = ["a", "a", "b", "b", "c", "x"]  # "x" is outside the label set
    # a: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 0.8
    # b: TP 1, FP 1 (an a), FN 1 (called c) -> P 1/2, R 1/2, F1 0.5
    # c: TP 0, FP 1, FN 1 (called x) -> F1 0
    result = macro.compute(predictions=predictions, references=references)
    assert result["per_label"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 0.0})
    assert result["macro_f1"] == pytest.approx(1.3 / 3)
    assert result["scores"] == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    # An explicit label set, matched case-insensitively: "d" has no examples and scores 0, pulling the mean down.
    widened = macro.compute(predictions=predictions, references=references, labels=["A", "b", "c", "d"])
    assert widened["per_label"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 0.0, "d": 0.0})
    assert widened["macro_f1"] == pytest.approx(1.3 / 4)


def test_semantic_similarity(metric):
    from assistant.retrieval import sentence_encoder

    result = metric("semantic_similarity").compute(
        predictions=["You can return it within 30 days.", "You can return it within 30 days.",
                     "You can return it within 30 days.", ""],
        references=["You can return it within 30 days.", "Returns are accepted for a month after delivery.",
                    "The boiler needs descaling when error E3 shows.", ""],
    )
    identical, paraphrase, unrelated, empty = result["scores"]
    assert identical == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > unrelated + 0.2
    assert empty == pytest.approx(1.0, abs=1e-5)  # two empty strings embed alike; no crash
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in result["scores"])
    assert result["semantic_similarity"] == pytest.approx(sum(result["scores"]) / 4)
    assert sentence_encoder() is sentence_encoder()  # one model per process, shared with dense retrieval


def test_perplexity(metric):
    perplexity = metric("perplexity")
    # exp(nll / tokens): 2 ln 4 over 2 tokens -> 4; ln 4 over 1 token -> 4; corpus exp(3 ln 4 / 3) = 4.
    same = perplexity.compute(nll=[2 * math.log(4), math.log(4)], tokens=[2, 1])
    assert same["perplexity"] == pytest.approx(4.0)
    assert same["scores"] == pytest.approx([4.0, 4.0])
    # ln 2 over 1 token -> 2; 12 ln 2 over 3 tokens -> 16; corpus exp(13 ln 2 / 4) = 2 ** 3.25, length-weighted,
    # not the mean of 2 and 16.
    mixed = perplexity.compute(nll=[math.log(2), 12 * math.log(2)], tokens=[1, 3])
    assert mixed["scores"] == pytest.approx([2.0, 16.0])
    assert mixed["perplexity"] == pytest.approx(2**3.25)
    assert set(mixed) == {"perplexity", "scores"}


def test_perplexity_rejects_bad_cases(metric):
    with pytest.raises(ValueError, match="example 1 has tokens=0"):
        metric("perplexity").compute(nll=[1.0, 1.0], tokens=[1, 0])
    with pytest.raises(ValueError, match="example 0 has nll=-2.0"):
        metric("perplexity").compute(nll=[-2.0], tokens=[1])


def test_inputs_are_checked(metric):
    with pytest.raises(ValueError, match="no examples"):
        metric("rouge_l").compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="Mismatch in the number"):
        metric("accuracy").compute(predictions=["a", "b"], references=["a"])


def test_key_facts_counts_stated_and_contradicted_facts(metric):
    reference = "Yes, opened grinders are accepted within 30 days with a 15% restocking fee."
    result = metric("key_facts").compute(
        predictions=["Yes! You'll need to pay $49.98 before shipping.",      # yes stated; 30 days, 15% missing
                     "Yes, within thirty days, and the fee is 15 percent.",  # all three, in other words
                     "No, only within 14 days, with a 15% fee.",             # 15% stated; yes and 30 days contradicted
                     "Thanks for asking!"],                                   # reference without facts: no value
        references=[reference, reference, reference, "Happy to help."])
    assert result["facts"] == [3, 3, 3, 0] and result["stated"] == [1, 3, 1, 0]
    assert result["contradicted"] == [0, 0, 2, 0]
    assert result["scores"][:3] == [1 / 3, 1.0, 1 / 3] and math.isnan(result["scores"][3])
    assert result["key_facts"] == 5 / 9 and result["contradicted_per_answer"] == 0.5
    sorry = "I'm sorry, I can't find that in our help articles. Call 1-800-555-0142, Monday to Friday 8 a.m. to 8 p.m."
    abstained = metric("key_facts").compute(predictions=[sorry], references=[sorry])  # an unanswerable case
    assert abstained["facts"] == [0] and math.isnan(abstained["scores"][0])  # left to the abstention metric


def test_context_recall_counts_the_reference_facts_the_passages_hold(metric):
    reference = "Opened grinders are accepted within 30 days with a 15% restocking fee."  # 2 facts
    result = metric("context_recall").compute(
        predictions=["[1] Returns: within thirty days of delivery.\n\n[2] Fees: a 15 percent restocking fee.",
                     "[1] Returns: within 14 days.",          # the same kind of fact, another value: not held
                     "[1] Opened items: 15% restocking fee.",  # one of two
                     "[1] Anything at all about 30 days."],    # reference without facts: no value
        references=[reference, reference, reference, "Happy to help."])
    assert result["facts"] == [2, 2, 2, 0] and result["in_context"] == [2, 0, 1, 0]
    assert result["scores"][:3] == [1.0, 0.0, 0.5] and math.isnan(result["scores"][3])
    assert result["context_recall"] == 3 / 6
    sorry = "I'm sorry, I can't find that in our help articles. Call 1-800-555-0142."
    assert metric("context_recall").compute(predictions=[sorry], references=[sorry])["facts"] == [0]


def test_grounding_counts_facts_the_sources_do_not_support(metric):
    sources = "Passage [returns.md]: Opened grinders are accepted within 30 days with a 15% restocking fee."
    result = metric("grounding").compute(
        predictions=["Yes! You'll need to pay $49.98 within 30 days.",  # $49.98 invented, 30 days supported
                     "Within 30 days, with a 15% fee.",                  # both supported
                     "Sure."],                                           # no facts: no value
        references=[sources, sources, sources])
    assert result["claimed"] == [2, 2, 0] and result["supported"] == [1, 2, 0]
    assert result["unsupported"] == [1, 0, 0] and result["unsupported_per_answer"] == 1 / 3
    assert result["scores"][:2] == [0.5, 1.0] and math.isnan(result["scores"][2])
    assert result["grounding"] == 3 / 4


def test_abstention_scores_the_decision_to_answer_or_abstain(metric):
    abstain = "I'm sorry, I can't find that in our help articles. Our support team can help: call 1-800-555-0142."
    result = metric("abstention").compute(
        predictions=["I don't have information about our CEO.",  # abstains, as it should
                     "Our CEO is Jane Smith.",                     # invents, should have abstained
                     "You have 30 days; contact support if unsure.",  # answers, as it should
                     "I do not know."],                            # abstains on an answerable case
        references=[abstain, abstain, "You have 30 days to return it.", "Refunds take 5 business days."])
    assert result["abstained"] == [1, 0, 0, 1] and result["expected"] == [1, 1, 0, 0]
    assert result["scores"] == [1.0, 0.0, 1.0, 0.0] and result["abstention"] == 0.5
    assert result["abstention_rate"] == 0.5 and result["false_abstention_rate"] == 0.5


def test_citations_count_cited_facts_found_in_the_passages_they_cite(metric):
    passages = ["Returns: opened grinders are accepted within 30 days.",  # [1]
                "Fees: a 15% restocking fee applies to opened items.",    # [2]
                "Refunds reach your card within 5 business days."]       # [3]
    result = metric("citations").compute(
        predictions=[
            # 30 days cited to [1], which holds it; 15% cited to [1], though only [2] holds it; 5 business days
            # cited to nothing; the leading yes is a stance, no fact
            "Yes, you have 30 days to return it [1]. A 15% fee applies [1]. Refunds take 5 business days.",
            "The fee is 15% [7].",                           # [7] of 3 passages: no citation at all
            "I can't find that in our help articles.",       # abstains: not applicable
            "Sure, happy to help [2].",                      # cites, states no fact: rate only
            "Opened items carry a 15% fee. [2] Refunds take 5 business days [3].",  # a mark after the stop counts
            "You have 30 days [1]."],                        # shown no passage: not applicable
        references=[passages] * 5 + [[]])
    assert result["facts"] == [3, 1, 0, 0, 2, 0] and result["cited"] == [2, 0, 0, 0, 2, 0]
    assert result["correct"] == [1, 0, 0, 0, 2, 0]
    assert result["applicable"] == [1, 1, 0, 1, 1, 0] and result["citing"] == [1, 0, 0, 1, 1, 0]
    nan = float("nan")
    assert result["scores"] == pytest.approx([1 / 3, 0.0, nan, nan, 1.0, nan], nan_ok=True)  # precision
    assert result["recall_scores"] == pytest.approx([2 / 3, 0.0, nan, nan, 1.0, nan], nan_ok=True)
    assert result["rate_scores"] == pytest.approx([1.0, 0.0, nan, 1.0, 1.0, nan], nan_ok=True)
    assert result["citations"] == 3 / 6 and result["citation_recall"] == 4 / 6  # ratios of sums over the answers
    assert result["citation_rate"] == 3 / 4
    none = metric("citations").compute(predictions=["I don't know."], references=[passages])
    assert math.isnan(none["citations"]) and math.isnan(none["citation_rate"]) and none["facts"] == [0]


def test_scoring_hands_citations_each_answer_its_passages_one_by_one(metric):
    from types import SimpleNamespace

    from assistant.evaluation.answers import Answer
    from assistant.evaluation.scoring import score_run

    shown = ["Fees: a 15% restocking fee.", "Returns: within 30 days."]
    records = [Answer("a", "You have 30 days [2].", 5, 50, ["fees.md", "returns.md"], passage_texts=shown),  # right
               Answer("b", "You have 30 days [1].", 5, 50, ["fees.md", "returns.md"], passage_texts=shown)]  # wrong
    suite = SimpleNamespace(metrics=["citations"], cases=[SimpleNamespace(reference="30 days.")] * 2, labels=[],
                            bootstrap_rounds=50)
    scores = score_run(suite, SimpleNamespace(records=records, variant=None))["citations"]
    assert scores.per_case == [1.0, 0.0] and scores.extra["correct"] == [1, 0] and scores.estimate.value == 0.5
