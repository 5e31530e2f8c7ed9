"""Data quality: every malformed row gets its own message with file:line; all problems come at once."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.cli.parser import main
from assistant.data import near_duplicate_pairs, read_jsonl

GOOD = {"messages": [{"role": "user", "content": "Where is my order number 5512?"},
                     {"role": "assistant", "content": "It left our warehouse yesterday."}]}


def chat(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


LONG = "word " * 600
CASES = {
    "invalid_json": ('{"messages": [', "invalid JSON"),
    "not_an_object": ('["a", "b"]', "expected a JSON object, got list"),
    "unknown_format": ({"foo": 1}, "unknown row format"),
    "messages_not_list": ({"messages": "hi"}, "'messages' must be a list"),
    "message_not_object": ({"messages": ["hi"]}, "message 1 is not an object"),
    "missing_role": ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}, "message 1 has no role"),
    "unknown_role": (chat(("user", "hi"), ("bot", "hello")), "unknown role 'bot'"),
    "assistant_first": (chat(("assistant", "hello"), ("user", "hi"), ("assistant", "x")), "must start with a user message"),
    "not_alternating": (chat(("user", "a question"), ("user", "again"), ("assistant", "yes")), "must alternate"),
    "system_in_middle": (chat(("user", "q"), ("system", "s"), ("assistant", "a")), "system message may only come first"),
    "empty_content": (chat(("user", "   "), ("assistant", "a")), "message 1 (user) is empty"),
    "null_content": ({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}]}, "has no text content"),
    "no_assistant": (chat(("system", "be nice"), ("user", "hello")), "no assistant message to learn from"),
    "unanswered": (chat(("user", "q1"), ("assistant", "a1"), ("user", "q2")), "ends with a user message that is never answered"),
    "prompt_without_completion": ({"prompt": "hello there"}, "message 2 (assistant) has no text content"),
    "text_without_label": ({"text": "great kettle"}, "needs a text or integer 'label'"),
    "over_length": (chat(("user", LONG), ("assistant", "ok")), "over the limit of 300"),
    "exact_duplicate": (GOOD, "exact duplicate of"),
    "near_duplicate": (chat(("user", "Where is my order number 5512 now?"), ("assistant", "It left our warehouse yesterday.")),
                       "near duplicate of"),
    "leak_exact": (chat(("user", "can I return an OPENED grinder if I already used it for a week?!"),
                        ("assistant", "Yes, within 30 days.")), "repeats evaluation case"),
    "leak_near": (chat(("user", "Can I return an opened grinder if I already used it for a week or so?"),
                       ("assistant", "Yes, within 30 days.")), "nearly repeats evaluation case"),
}


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def eval_file(tmp_path):
    return write_rows(tmp_path / "eval.jsonl", [{"question": "Can I return an opened grinder if I already used it for a week?", "reference": "Yes."}])


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_malformed_row_is_reported_with_file_and_line(case, tmp_path, eval_file, tiny_model_dir, capsys):
    row, message = CASES[case]
    path = write_rows(tmp_path / "train.jsonl", [GOOD, row])
    code = main(["data", "check", str(path), "--eval", str(eval_file), "--base", str(tiny_model_dir),
                 "--max-tokens", "300"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{path}:2: " in err and message in err, err
    assert "1 problem(s)" in err, err  # the good row on line 1 is not blamed


def test_all_problems_reported_at_once(tmp_path, eval_file, tiny_model_dir, capsys):
    rows = [GOOD] + [CASES[c][0] for c in sorted(CASES)]
    path = write_rows(tmp_path / "train.jsonl", rows)
    code = main(["data", "check", str(path), "--eval", str(eval_file), "--base", str(tiny_model_dir),
                 "--max-tokens", "300"])
    err = capsys.readouterr().err
    assert code == 1
    for case, (_, message) in CASES.items():
        assert message in err, case
    # One more than the cases: the two leaking rows are also near duplicates of each other.
    assert f"{len(CASES) + 1} problem(s)" in err
    lines = [int(line.split(":")[1]) for line in err.splitlines()[1:]]
    assert lines == sorted(lines)  # reported top to bottom


def test_an_invalid_utf8_byte_is_a_problem_with_file_and_line(tmp_path, tiny_model_dir, capsys):
    bad = json.dumps(chat(("user", "caf\u00e9 order"), ("assistant", "ok"))).encode().replace(b"\\u00e9", b"\xe9")
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bad + b"\n")
    assert main(["data", "check", str(path), "--base", str(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: not valid UTF-8 (byte 0xe9 at column " in err and "1 problem(s)" in err
    records, problems = read_jsonl(path)
    assert len(records) == 1 and "\ufffd" not in json.dumps([r.messages for r in records])  # nothing replaced


def test_clean_file_passes_with_token_statistics(tmp_path, tiny_model_dir, capsys):
    rows = [GOOD, {"prompt": "Do you ship to Canada?", "completion": "Yes, in 5 to 8 days."},
            chat(("system", "Be brief."), ("user", "Is the kettle dishwasher safe?"), ("assistant", "No, hand wash it."))]
    path = write_rows(tmp_path / "train.jsonl", rows)
    assert main(["data", "check", str(path), "--base", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 rows, no problems" in out and "median" in out


def test_classification_rows_need_no_answer(tmp_path, tiny_model_dir):
    path = write_rows(tmp_path / "labels.jsonl", [{"text": "I love it", "label": "positive"}, {"text": "Broken", "label": 0}])
    records, problems = read_jsonl(path)
    assert problems == [] and records[1].labels == [{"label": "0"}]
    assert main(["data", "check", str(path), "--base", str(tiny_model_dir)]) == 0


def test_classification_and_chat_files_checked_together(tmp_path, tiny_model_dir, capsys):
    labels = write_rows(tmp_path / "labels.jsonl", [{"text": "I love it", "label": "positive"}])
    chats = write_rows(tmp_path / "chat.jsonl", [GOOD, chat(("system", "be nice"), ("user", "hello"))])
    assert main(["data", "check", str(labels), str(chats), "--base", str(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{chats}:2: no assistant message" in err  # the chat row still needs its answer ...
    assert f"{labels}:1" not in err  # ... while a label row never has one


def test_missing_file_is_a_problem_not_a_crash(tmp_path, tiny_model_dir, capsys):
    assert main(["data", "check", str(tmp_path / "nope.jsonl"), "--base", str(tiny_model_dir)]) == 1
    assert "no such file" in capsys.readouterr().err


def test_near_duplicates_found_at_scale_without_false_positives():
    texts = [f"customer {i} asks about order {i * 7} and the refund for item {i * 13} today" for i in range(400)]
    texts.append(texts[10] + " please")
    pairs = near_duplicate_pairs(texts, threshold=0.8)
    assert [(a, b) for a, b, _ in pairs] == [(10, 400)]


def test_near_duplicates_at_the_threshold_with_their_similarity():
    base = ("Where is my order number 5512? It left our warehouse yesterday and tracking has not moved since then, "
            "please help.")
    texts = [base, base.replace("yesterday", "Monday"), "Can I pause my coffee subscription for a month?"]
    [(a, b, similarity)] = near_duplicate_pairs(texts, threshold=0.8)
    assert (a, b) == (0, 1) and 0.8 <= similarity < 1.0
    assert near_duplicate_pairs(texts, threshold=0.99) == []  # every candidate is checked exactly


def test_data_helpers_import_without_datasketch():
    # scripts/fetch_sentiment.py imports these on a bare Python; datasketch loads only when pairs are searched.
    code = ("import sys; sys.modules['datasketch'] = None; "  # None: any import of it fails
            "from assistant.data import check_records, eval_questions, jaccard, normalise_text, read_jsonl, shingles")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True)


def test_one_reader_takes_every_row_format_for_examples_and_cases(tmp_path):
    """Few-shot files and suite cases read chat rows, prompt/completion rows and text/label rows alike, with
    the same file:line problems."""
    import json

    from assistant.data import DataError, read_examples
    from assistant.evaluation.suite import SuiteError, read_cases

    rows = [{"messages": [{"role": "user", "content": "Great blender!"}, {"role": "assistant", "content": "positive"}]},
            {"prompt": "It broke.", "completion": "negative"},
            {"text": "It is a blender.", "label": "neutral"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = [messages for _, messages in read_examples(path)]
    assert [e[-1]["content"] for e in examples] == ["positive", "negative", "neutral"]
    assert all([m["role"] for m in e] == ["user", "assistant"] for e in examples)
    cases = read_cases(path)
    assert [(c.messages[-1]["content"], c.reference) for c in cases] == [
        ("Great blender!", "positive"), ("It broke.", "negative"), ("It is a blender.", "neutral")]
    assert cases[2].label == "neutral"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "no label"}) + "\n" + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError) as refused:
        read_examples(bad)
    assert f"{bad}:1:" in str(refused.value) and f"{bad}:2: not a complete example" in str(refused.value)
    with pytest.raises(SuiteError, match=f"{bad}:1: a case needs"):
        read_cases(bad)
