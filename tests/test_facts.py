"""The rules that read checkable facts out of answers (assistant/facts.py), on hand-built sentences."""

import pytest

from assistant.facts import compare_facts, extract_facts, supported_facts


@pytest.mark.parametrize("text, expected", [
    ("It costs $49.99, or 49.99 dollars.", {("money", "49.99")}),
    ("A 15% fee, that is 15 percent.", {("percent", "15")}),
    ("Within thirty days or 30 days.", {("duration:day", "30")}),
    ("Refunds take 5 business days and 2 weeks.", {("duration:business day", "5"), ("duration:week", "2")}),
    ("Shipping starts March 3rd; the order was placed 2026-11-02.", {("date", "march 3"), ("date", "2026-11-02")}),
    ("Descale with 500 ml at 9 bar.", {("quantity:ml", "500"), ("quantity:bar", "9")}),
    ("Error E3 and E-12 mean descaling.", {("code", "E3"), ("code", "E12")}),
    ("Call Tidewater Support about the Barista Pro.", {("name", "tidewater support"), ("name", "barista pro")}),
    ("Yes, you can.", {("answer", "yes")}),
    ("No problem at all.", {("answer", "no")}),
    ("Returns are easy. Please ask.", set()),
])
def test_facts_are_read_with_normalised_values(text, expected):
    assert extract_facts(text) == expected


def test_a_contradiction_is_the_same_kind_of_fact_with_another_value():
    assert compare_facts("You have 14 days.", "You have 30 days.") == (1, 0, 1)
    assert compare_facts("You have 30 days.", "You have 30 days.") == (1, 1, 0)
    assert compare_facts("It costs $5.", "You have 30 days.") == (1, 0, 0)  # missing, not contradicted
    assert compare_facts("Ask Acme Corp.", "Ask Tidewater Support.") == (1, 0, 0)  # another name is no error


def test_support_is_looked_up_in_the_sources():
    assert supported_facts("Yes, the fee is 15%.", "a 15 percent restocking fee") == (1, 1)  # 'yes' is no fact
    assert supported_facts("The fee is $20 within 30 days.", "within 30 days") == (2, 1)


@pytest.mark.parametrize("text,expected", [
    ("I'm sorry, I can't find that in our help articles, so I don't want to guess.", True),
    ("I don't have information about the CEO.", True),
    ("The passages don't mention tea.", True),
    ("I do not know.", True),
    ("We could not find any record of that.", True),
    ("You have 30 days. Contact our support team if you need help.", False),  # a hand-off is not a refusal
    ("If you cannot find your order number, check the confirmation email.", False),  # not the bot declining
    ("Yes, we sell tea.", False),
])
def test_abstentions_are_told_from_answers(text, expected):
    from assistant.facts import abstains

    assert abstains(text) is expected
