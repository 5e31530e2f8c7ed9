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


# -- facts of any domain: the examples come from a building regulations FAQ and from the demo's own data ----------

@pytest.mark.parametrize("text, expected", [
    ("A friggebod may be max 15 m².", {("quantity:m²", "15")}),
    ("Build up to 30 m2, or 30 square metres.", {("quantity:m²", "30")}),
    ("At most 95 kWh/m²/year, that is 95 kWh per square metre per year.", {("quantity:kWh/m²/year", "95")}),
    ("Drive at 50 km/h; the limit is 5 mg/l.", {("quantity:km/h", "50"), ("quantity:mg/l", "5")}),
    ("A 1,200 sq ft house.", {("quantity:ft²", "1200")}),
    ("Our 12 oz and 2 lb bags.", {("quantity:oz", "12"), ("quantity:lb", "2")}),
    ("Use 250 ml, 3 times a day.", {("quantity:ml", "250"), ("quantity:time", "3"), ("duration:day", "1")}),
])
def test_quantities_of_any_unit_are_read_with_a_normalised_unit(text, expected):
    assert extract_facts(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("It lasts 20-30 years.", {("duration:year", "20"), ("duration:year", "30")}),
    ("It lasts 20–30 years.", {("duration:year", "20"), ("duration:year", "30")}),  # an en dash
    ("Refunds take 5 to 10 business days.", {("duration:business day", "5"), ("duration:business day", "10")}),
    ("Pause for between 2 and 4 weeks.", {("duration:week", "2"), ("duration:week", "4")}),
    ("Prices run $10–$20, or $10-20.", {("money", "10"), ("money", "20")}),
    ("A 10–20% discount.", {("percent", "10"), ("percent", "20")}),
    ("Pay over 6 or 12 months.", {("duration:month", "6"), ("duration:month", "12")}),
    ("Call 1-800-555-0142.", set()),  # a phone number is no range
    ("Order 2 and 4 weeks later.", {("duration:week", "4")}),  # "and" makes a range only after "between"
])
def test_a_range_gives_both_ends_with_the_unit_carried_to_the_first(text, expected):
    assert extract_facts(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("See AFS 1982:3 and ISO 9001.", {("reference", "AFS 1982:3"), ("reference", "ISO 9001")}),
    ("It meets EN 1111:2017 and BBR 9:2.", {("reference", "EN 1111:2017"), ("reference", "BBR 9:2")}),
    ("Read § 12, or §12.", {("reference", "§ 12")}),
    ("Read AB 04 chapter 7 § 12.", {("reference", "AB 04"), ("reference", "chapter 7 § 12")}),
    ("Section 4.2 and article 5 apply; Art. 5 too.", {("reference", "section 4.2"), ("reference", "article 5")}),
])
def test_references_to_regulations_standards_and_sections_are_read(text, expected):
    assert extract_facts(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Not for anyone under 18.", {("age", "under 18")}),
    ("Free for those over 65.", {("age", "over 65")}),
    ("Workers aged 16 may help.", {("age", "16")}),
    ("Children under the age of 18 and adults 65 years old.", {("age", "under 18"), ("age", "65")}),
    ("It heats in under 5 minutes for orders over $75.", {("duration:minute", "5"), ("money", "75")}),
])
def test_ages_are_read_and_a_unit_wins_over_an_age(text, expected):
    assert extract_facts(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("It shows 3 passages.", {("count:passage", "3")}),
    ("A house with two bedrooms.", {("count:bedroom", "2")}),
    ("Use one of the 10 backup codes.", {("count:backup code", "10")}),
    ("Enter the 16-digit card number.", {("count:digit", "16")}),
    ("Brew 12 cups.", {("quantity:cup", "12")}),  # the unit rule took it: counted once
    ("Allow 10 business days.", {("duration:business day", "10")}),
    ("Keep it until the new one arrives.", set()),  # "one arrives" counts nothing
])
def test_counted_nouns_are_read_once(text, expected):
    assert extract_facts(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Friggebod: max 15 m².", {("name", "friggebod"), ("quantity:m²", "15")}),  # not an English word: a name
    ("CarePlus covers drops.", {("name", "careplus")}),
    ("Returns are easy. Orders ship fast. Shipping is free. Warranty covers it.", set()),  # common words
    ("Descale the machine.", set()),  # a verb the word list does not know, before its object
])
def test_a_word_that_starts_a_sentence_is_a_name_when_english_does_not_use_it(text, expected):
    assert extract_facts(text) == expected


def test_contradictions_of_the_new_kinds():
    assert compare_facts("It may be 20 m2.", "It may be max 15 m².") == (1, 0, 1)
    assert compare_facts("It has three bedrooms.", "It has two bedrooms.") == (1, 0, 1)
    assert compare_facts("Only for those under 16.", "Only for those under 18.") == (1, 0, 1)
    assert compare_facts("Pay over 12 months.", "Pay over 6 or 12 months.") == (2, 1, 1)
    # a reference: another number in the same series or kind of section is wrong, another document only missing
    assert compare_facts("See BBR 9:3.", "See BBR 9:2.") == (1, 0, 1)
    assert compare_facts("See section 4.3.", "See section 4.2.") == (1, 0, 1)
    assert compare_facts("See PBL 9.", "See BBR 9:2.") == (1, 0, 0)
    assert compare_facts("Attefallshus: max 30 m².", "Friggebod: max 30 m².") == (2, 1, 0)  # names never

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
