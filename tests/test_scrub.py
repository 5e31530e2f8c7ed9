"""Personal data out of stored conversations: every planted email, phone number, card number and domain
pattern becomes its placeholder and the rest of the text stays byte for byte; order numbers that fail the
Luhn check are no cards; `feedback scrub` rewrites the database in one transaction and leaves nothing for an
export (or the file itself) to leak; the app redacts before it writes, keeping what its documents publish."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest

from assistant.cli.parser import main
from assistant.feedback import FeedbackStore, Shown
from assistant.redaction import Redactor, load_patterns, luhn_valid
from assistant.settings_reader import ConfigError

PLANTED = {
    "EMAIL": ["jo.doe@example.com", "Ana+orders@mail.example.co.uk"],
    "PHONE": ["1-800-555-0142", "(503) 555-0199", "+46 70 123 45 67", "+44 20 7946 0958", "503.555.0123"],
    "CARD": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "4012888888881881"],
    "ORDER": ["TW-1234567"],
}
TEMPLATE = ("Hi, café «Zürich» here — mail me at {EMAIL0} (or {EMAIL1}).\n"
            "Call {PHONE0}, {PHONE1}; abroad: {PHONE2} / {PHONE3}, office {PHONE4}!\n"
            "Card: {CARD0}, old one {CARD1}, amex {CARD2}, and ({CARD3}).\n"
            "Order {ORDER0} arrived 2026-11-03, cost $336.40, 2 bags of 340 g, ZIP 97201, item DG-64.")
"""A message with every planted item; the rest (dates, prices, quantities, a ZIP code) is not personal."""


def planted_text() -> str:
    return TEMPLATE.format(**{f"{kind}{i}": item for kind, items in PLANTED.items() for i, item in enumerate(items)})


def expected_text() -> str:
    return TEMPLATE.format(**{f"{kind}{i}": f"[{kind}]" for kind, items in PLANTED.items() for i in range(len(items))})


def redactor() -> Redactor:
    return Redactor(load_patterns([r"ORDER=\bTW-\d{7}\b"]))


def test_every_planted_item_is_replaced_and_the_rest_is_byte_identical():
    counts = Counter()
    assert redactor().redact(planted_text(), counts) == expected_text()
    assert counts == {kind: len(items) for kind, items in PLANTED.items()}
    clean = "Can I return an opened grinder within 30 days? It cost $129.99 on 2026-11-03 (order pending)."
    assert redactor().redact(clean) is clean  # nothing found: the very same string


def test_a_luhn_invalid_16_digit_order_number_is_not_a_card():
    order = "4111 1111 1111 1112"  # a card's shape, one digit off: fails the Luhn check
    assert not luhn_valid(order.replace(" ", "")) and luhn_valid("4111111111111111")
    for text in (f"My order {order} never came.", "Order 1234567812345678 never came.",
                 "Tracking 1Z999AA10123456784, invoice 20261103-0042."):
        assert redactor().redact(text) == text
    # a card next to a year: only the card's digit groups are taken
    assert redactor().redact("paid 2026 4111 1111 1111 1111 ok") == "paid 2026 [CARD] ok"


def test_domain_patterns_from_options_and_files_apply(tmp_path):
    patterns = tmp_path / "redact.yaml"
    patterns.write_text("ticket: 'TK#\\d{5}'\nmember: ['M-\\d{6}', 'MEMBER \\d{6}']\n")
    r = Redactor(load_patterns([r"ORDER=(?i)\bTW[- ]?\d{7}\b"], [patterns]))
    assert r.kinds == ["ORDER", "TICKET", "MEMBER", "EMAIL", "CARD", "PHONE"]
    assert (r.redact("tw 1234567, TK#00042, M-123456 and MEMBER 654321 but TW-12345678 is no order")
            == "[ORDER], [TICKET], [MEMBER] and [MEMBER] but TW-12345678 is no order")
    # the shipped Tidewater file reads
    from tests.conftest import ROOT

    assert Redactor(load_patterns(files=[ROOT / "configs" / "tidewater-redact.yaml"])).redact("TW-4821907") == "[ORDER]"


def test_a_malformed_pattern_is_a_user_error_naming_where_it_came_from(tmp_path, capsys):
    with pytest.raises(ConfigError) as error:
        load_patterns([r"ORDER=TW-(\d{7}", "NOEQUALS", "ALL=.*"])
    message = str(error.value)
    assert r"--redact-pattern ORDER=TW-(\d{7}: not a regular expression (missing ), unterminated subpattern" in message
    assert "--redact-pattern NOEQUALS: expected LABEL=REGEX" in message
    assert "--redact-pattern ALL=.*: matches empty text" in message  # every problem at once
    patterns = tmp_path / "redact.yaml"
    patterns.write_text("ORDER: 'TW-[0-9'\n'bad label': 'x'\n")
    with pytest.raises(ConfigError, match=r"redact.yaml: ORDER: not a regular expression") as error:
        load_patterns(files=[patterns])
    assert "redact.yaml: bad label: the label must be a word" in str(error.value)

    FeedbackStore(tmp_path / "fb" / "feedback.db")
    assert main(["feedback", "scrub", "--data", str(tmp_path / "fb"), "--redact-pattern", "ORDER=TW-(\\d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --redact-pattern ORDER=TW-(\\d: not a regular expression") and "Traceback" not in err

    from assistant.serve import server

    with pytest.raises(ConfigError, match=r"--redact-patterns|redact.yaml: ORDER"):
        server.redactor_of(server.parse_args(["--redact-patterns", str(patterns)]))
    with pytest.raises(ValueError, match="no effect with --no-redact"):
        server.redactor_of(server.parse_args(["--no-redact", "--redact-pattern", "ORDER=x"]))


def planted_store(path) -> FeedbackStore:
    """Ratings and votes with the planted items in conversations, answers and comments, and one clean row."""
    store = FeedbackStore(path)
    text = planted_text()
    conversation = [{"role": "user", "content": text}, {"role": "assistant", "content": "Thanks, noted."},
                    {"role": "user", "content": "Where is my order?"}]
    store.add_rating(conversation, Shown(f"Your order TW-1234567 ships today; we will text {PLANTED['PHONE'][1]}.",
                                         "adapter", "a" * 12), 1, comment=f"reach me at {PLANTED['EMAIL'][0]}")
    store.add_rating(conversation, Shown("I cannot see orders.", "bare", "b" * 12), -1)
    store.add_vote(conversation, Shown(text, "adapter", "a" * 12), Shown("No idea.", "bare", "b" * 12), "b")
    store.add_vote([{"role": "user", "content": "Do you ship to Canada?"}], Shown("Yes, in 5-8 days.", "adapter",
                   "a" * 12), Shown("No.", "bare", "b" * 12), "a")
    return store


def every_item() -> list[str]:
    return [item for items in PLANTED.values() for item in items]


def test_scrub_rewrites_the_database_and_no_export_or_file_keeps_an_item(tmp_path, capsys):
    data = tmp_path / "feedback"
    store = planted_store(data / "feedback.db")
    before = {"ratings": store.ratings(), "votes": store.votes()}
    assert main(["feedback", "scrub", "--data", str(data), "--redact-pattern", r"ORDER=\bTW-\d{7}\b", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would scrub 3 of 4 rows (2 ratings, 1 votes)")
    assert store.ratings() == before["ratings"]  # a dry run changes nothing

    assert main(["feedback", "scrub", "--data", str(data), "--redact-pattern", r"ORDER=\bTW-\d{7}\b"]) == 0
    # conversation twice per row (2 ratings, 1 vote) and answer_a once: 4 copies of the message; plus the
    # first rating's answer (an order and a phone) and comment (an email)
    assert capsys.readouterr().out.strip() == ("scrubbed 3 of 4 rows (2 ratings, 1 votes): 5 ORDER, 9 EMAIL, "
                                               "16 CARD, 21 PHONE")
    ratings, votes = store.ratings(), store.votes()
    assert ratings[0]["conversation"][0]["content"] == expected_text()
    assert ratings[0]["answer"] == "Your order [ORDER] ships today; we will text [PHONE]."
    assert ratings[0]["comment"] == "reach me at [EMAIL]"
    assert votes[0]["answer_a"] == expected_text() and votes[0]["answer_b"] == "No idea."
    for row, old in zip(ratings + votes, before["ratings"] + before["votes"]):
        assert {k: v for k, v in row.items() if k not in ("conversation", "answer", "answer_a", "comment")} == \
            {k: v for k, v in old.items() if k not in ("conversation", "answer", "answer_a", "comment")}
    assert votes[1] == before["votes"][1]  # a clean row is left as it was

    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--data", str(data), "--out", str(out)]) == 0
    exported = out.read_text(encoding="utf-8")
    assert exported.count("\n") == 3 and "[CARD]" in exported
    stored = b"".join(p.read_bytes() for p in data.iterdir())  # the database file and any -wal or -shm beside it
    for item in every_item():
        assert item not in exported, item
        assert item.encode() not in stored, item  # no old copy in free pages or the write-ahead log
    with sqlite3.connect(data / "feedback.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_scrub_that_fails_halfway_changes_nothing(tmp_path):
    store = planted_store(tmp_path / "feedback.db")
    before = (store.ratings(), store.votes())

    class Failing(Redactor):
        calls = 0

        def redact(self, text, counts=None):
            Failing.calls += 1
            if Failing.calls > 6:  # after the first rows were rewritten
                raise RuntimeError("disk on fire")
            return super().redact(text, counts)

    with pytest.raises(RuntimeError, match="disk on fire"):
        store.scrub(Failing())
    assert (store.ratings(), store.votes()) == before


def test_what_the_documents_publish_is_kept(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contact.md").write_text("# Contact\n\nCall 1-800-555-0142 or mail support@tidewater.example.\n")
    data = tmp_path / "feedback"
    store = FeedbackStore(data / "feedback.db")
    answer = "Call us at 1-800-555-0142 or support@tidewater.example; we will call you back at (503) 555-0199."
    store.add_rating([{"role": "user", "content": "my number is (503) 555-0199"}], Shown(answer, "a", "a" * 12), 1)
    assert main(["feedback", "scrub", "--data", str(data), "--keep-documents", str(docs)]) == 0
    rating, = store.ratings()
    assert rating["answer"] == answer.replace("(503) 555-0199", "[PHONE]")  # the published ones are kept
    assert rating["conversation"] == [{"role": "user", "content": "my number is [PHONE]"}]


def test_the_app_redacts_before_it_writes_unless_told_not_to(tmp_path, capsys):
    from assistant.serve import server

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contact.md").write_text("# Contact\n\nMail support@tidewater.example.\n")
    args = server.parse_args(["--data", str(tmp_path / "on"), "--redact-pattern", r"ORDER=\bTW-\d{7}\b"])
    assert args.redact  # on by default
    store = server.feedback_store(args, server.redactor_of(args), [docs])
    assert "ORDER, EMAIL, CARD, PHONE redacted (1 published items kept)" in capsys.readouterr().err
    conversation = [{"role": "user", "content": planted_text()}]
    store.add_rating(conversation, Shown("Write to support@tidewater.example about TW-1234567.", "a", "a" * 12), -1,
                     session="s1")
    store.comment_last_rating("s1", f"I am {PLANTED['EMAIL'][0]}")
    store.add_vote(conversation, Shown(planted_text(), "a", "a" * 12), Shown("No.", "b", "b" * 12), "a")
    rating, = store.ratings()
    vote, = store.votes()
    assert rating["conversation"][0]["content"] == vote["conversation"][0]["content"] == expected_text()
    assert rating["answer"] == "Write to support@tidewater.example about [ORDER]."
    assert rating["comment"] == "I am [EMAIL]" and vote["answer_a"] == expected_text()

    args = server.parse_args(["--data", str(tmp_path / "off"), "--no-redact"])
    store = server.feedback_store(args, server.redactor_of(args), [docs])
    store.add_rating(conversation, Shown("ok", "a", "a" * 12), 1)
    assert store.ratings()[0]["conversation"] == conversation
