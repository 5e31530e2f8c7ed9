"""Preference pairs sampled without voters: the scoring, the choice of best and worst, the questions read."""

import json

import pytest

from assistant.data import DataError
from assistant.training.preference import Scored, best_and_worst, score_answer, training_questions

REFERENCE = "Opened grinders are accepted within 30 days with a 15% restocking fee."
PROMPT = "Passage: opened grinders can be returned within 30 days; a 15% restocking fee applies."


def test_an_answer_is_scored_by_facts_stated_contradicted_and_unsupported():
    right = score_answer("Yes, within 30 days, minus a 15% restocking fee.", REFERENCE, PROMPT)
    assert (right.stated, right.contradicted, right.unsupported, right.score) == (2, 0, 0, 2)
    wrong = score_answer("You have 14 days and pay $49.98 before shipping.", REFERENCE, PROMPT)
    assert wrong.stated == 0
    assert wrong.contradicted == 1          # a duration, but not the reference's 30 days
    assert wrong.unsupported == 2           # 14 days and $49.98 appear in neither the prompt nor the reference
    assert wrong.score == -3
    vague = score_answer("Please contact our team about returns.", REFERENCE, PROMPT)
    assert vague.score == 0 and right.score > vague.score > wrong.score


def test_best_and_worst_need_scores_that_differ_and_distinct_answers():
    a, b, c = Scored("a", 2, 0, 0), Scored("b", 0, 0, 1), Scored("c", 1, 0, 0)
    assert best_and_worst([b, a, c]) == (a, b)
    assert best_and_worst([Scored("x", 1, 0, 0), Scored("y", 1, 0, 0)]) is None     # a tie teaches nothing
    assert best_and_worst([Scored("same", 2, 0, 0), Scored(" same ", 0, 0, 3)]) is None  # one answer, twice
    assert best_and_worst([Scored("only", 1, 0, 0)]) is None
    first, second = Scored("first", 1, 0, 0), Scored("second", 1, 0, 0)
    assert best_and_worst([first, second, b])[0] is first   # among equals, the earlier sample


def test_training_questions_are_every_answered_user_turn(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Price?"},
                          {"role": "assistant", "content": "$5."}]},
            {"prompt": "Refund?", "completion": "Within 30 days."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = training_questions(path)
    assert [(h[-1]["content"], ref) for h, ref, _ in questions] == [("Hi?", "Hello."), ("Price?", "$5."),
                                                                   ("Refund?", "Within 30 days.")]
    assert [m["role"] for m in questions[1][0]] == ["user", "assistant", "user"]  # history, no system message
    assert questions[2][2].endswith("train.jsonl:2")
    path.write_text('{"messages": [{"role": "user", "content": "Hi?"}]}\n{broken\n')
    with pytest.raises(DataError, match="train.jsonl:2"):
        training_questions(path)


def test_sampling_on_the_tiny_model_is_repeatable_and_keeps_the_higher_score(tiny_variant, tmp_path):
    from assistant.generate import Bot
    from assistant.training.preference import sample_pairs

    path = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"How long do refunds take for order {i}?"},
                          {"role": "assistant", "content": f"Refunds reach your card within {i + 2} business days."}]}
            for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, report = sample_pairs(tiny_variant, path, samples=3, temperature=1.5, top_p=1.0, engine="transformers")
    again, _ = sample_pairs(tiny_variant, path, samples=3, temperature=1.5, top_p=1.0, engine="transformers")
    assert first == again  # answer k of every question is drawn with seed k
    assert (report.questions, report.answers) == (5, 15) and report.pairs + report.ties == 5
    assert report.pairs == len(first)
    bot = Bot(tiny_variant, "transformers")
    references = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    for pair in first:
        reference = references[pair["prompt"][-1]["content"]]
        shown = bot.prepare(pair["prompt"]).text
        chosen, rejected = (score_answer(pair[k], reference, shown) for k in ("chosen", "rejected"))
        assert chosen.score > rejected.score
        assert pair["provenance"]["chosen_score"]["score"] == chosen.score
        assert pair["provenance"]["source"] == "sampled"
