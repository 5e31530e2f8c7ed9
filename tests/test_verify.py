"""generation.verify: an answer's facts checked against what the model was shown, before it is shown. The pure
functions on hand-made text, then each mode through Bot on the tiny model, whose engine is patched to say a
hand-made answer (what a random model says would test nothing)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from assistant.facts import abstains
from assistant.verify import (FALLBACK_ABSTENTION, check_answer, drop_unsupported, retry_instruction, sentence_facts,
                              split_sentences, unsupported_sentences)

SORRY = "I can't find that in our documents; please contact support."
QUESTION = [{"role": "user", "content": "How many days do I have to return a grinder?"}]
SUPPORTED = "You have 30 days to return it [1]. "
INVENTED = "Shipping back costs $99 [1]."
ANSWER = SUPPORTED + INVENTED  # 30 days is in the passages, $99 nowhere in the prompt


def test_sentences_join_back_to_the_text_and_keep_their_citations():
    text = "Refunds take 5 days. [2] The fee is $49.99 [1].\n- Opened items: 15%!\n- Sealed ones: free"
    pieces = split_sentences(text)
    assert pieces == ["Refunds take 5 days. [2] ", "The fee is $49.99 [1].\n", "- Opened items: 15%!\n",
                      "- Sealed ones: free"]  # a decimal point ends nothing; a citation after the stop stays
    assert "".join(pieces) == text
    assert split_sentences("") == [] and split_sentences("Yes.") == ["Yes."]
    assert sentence_facts("Yes, you have 30 days [3].") == {("duration:day", "30")}  # no stance, no [3]


def test_unsupported_sentences_are_found_dropped_and_quoted():
    sources = "Passage: returns within 30 days; refunds in 5 business days. You are an agent for Acme."
    answer = "At Acme you have 30 days [1]. It costs $99 [1]. Refunds take 5 business days [1]."
    assert unsupported_sentences(answer, sources) == [("It costs $99 [1]. ", {("money", "99")})]
    assert drop_unsupported(answer, sources) == "At Acme you have 30 days [1]. Refunds take 5 business days [1]."
    assert drop_unsupported("It costs $99.", sources) == ""
    paragraphs = "You have 30 days. It costs $99.\n\nRefunds take 5 business days.\n- $99 back\n- Acme pays"
    assert drop_unsupported(paragraphs, sources) == "You have 30 days.\n\nRefunds take 5 business days.\n- Acme pays"
    assert retry_instruction(answer, sources) == ('Use only facts from the passages and instructions above. Your '
                                                  'previous answer said "It costs $99.", which is not in them: '
                                                  'leave it out.')
    assert retry_instruction("You have 30 days.", sources) is None


def test_check_answer_in_each_mode():
    sources = "Passage: returns within 30 days; refunds in 5 business days."
    off = check_answer(ANSWER, sources, "off", SORRY)
    assert (off.text, off.changed, off.unsupported) == (ANSWER, False, [])
    dropped = check_answer(ANSWER, sources, "drop", SORRY)
    assert (dropped.text, dropped.action, dropped.unsupported) == (SUPPORTED.strip(), "dropped", [("money", "99")])
    assert dropped.sentences == [INVENTED]
    assert dropped.note() == "Removed a sentence whose facts are not in the sources: “Shipping back costs $99.”"
    assert check_answer(INVENTED, sources, "drop", SORRY).text == SORRY  # nothing left: the abstention
    assert abstains(FALLBACK_ABSTENTION)  # what is said when the variant has no abstention text: one, to the metrics
    assert check_answer(ANSWER, sources, "abstain", SORRY).text == SORRY
    better = "Refunds take 5 business days [1]. It costs $99."
    kept = check_answer(ANSWER + " And $12.", sources, "retry", SORRY, retried=better)  # 1 unsupported for 2
    assert (kept.text, kept.action) == ("Refunds take 5 business days [1].", "retried")  # its own $99 dropped
    worse = check_answer(ANSWER, sources, "retry", SORRY, retried="It costs $99 and $5.")
    assert (worse.text, worse.action) == (SUPPORTED.strip(), "dropped")  # the first answer, dropped
    assert check_answer(ANSWER, sources, "retry", SORRY, retried="").text == SUPPORTED.strip()  # empty: ignored
    assert check_answer(SUPPORTED, sources, "abstain", SORRY).changed is False
    with pytest.raises(ValueError, match="generation.verify"):
        check_answer(ANSWER, sources, "maybe", SORRY)


# -- through Bot --------------------------------------------------------------------------------------------


@dataclass
class Call:
    kind: str
    """'stream' or 'generate'."""
    prompts: list[str]
    """The prompts as the engine received them, decoded."""
    temperature: float


def scripted(bot, monkeypatch, answers: list[str]) -> list[Call]:
    """Makes the bot's engine say ``answers`` in order, one per prompt it is asked, streamed or batched; returns
    the calls it gets."""
    from assistant.engines import Completion

    engine, said, calls = bot.engine, iter(answers), []

    def generate(prompts, adapter, sampling):
        calls.append(Call("generate", [bot.tokenizer.decode(p) for p in prompts], sampling.temperature))
        return [Completion(next(said), 7, "stop") for _ in prompts]

    def stream(input_ids, adapter, sampling, stats=None):
        calls.append(Call("stream", [bot.tokenizer.decode(input_ids)], sampling.temperature))
        text = next(said)
        yield from re.findall(r"\S+\s*", text)
        if stats is not None:
            stats.update(new_tokens=7, finish_reason="stop")

    monkeypatch.setattr(engine, "generate", generate)
    monkeypatch.setattr(engine, "stream", stream)
    return calls


def verifying_bot(tiny_variant, mode: str, *more: str):
    from assistant.generate import Bot
    from assistant.variants import load_variant

    return Bot(load_variant(tiny_variant.to_dict(), [
        "prompt.template=support-cited.j2", f"prompt.variables.abstention={SORRY!r}", f"generation.verify={mode}",
        "generation.temperature=0.7", *more]))


def test_the_setting_is_checked_and_changes_the_hash_only_when_on(tiny_variant):
    from assistant.settings_reader import ConfigError
    from assistant.variants import load_variant

    with pytest.raises(ConfigError, match="generation.verify"):
        load_variant(tiny_variant.to_dict(), ["generation.verify=maybe"])
    off = load_variant(tiny_variant.to_dict(), ["generation.verify=off"])
    assert off.variant_hash() == tiny_variant.variant_hash()
    assert load_variant(tiny_variant.to_dict(), ["generation.verify=drop"]).variant_hash() != off.variant_hash()


def test_off_changes_nothing(tiny_variant, monkeypatch):
    bot = verifying_bot(tiny_variant, "off")
    calls = scripted(bot, monkeypatch, [ANSWER, ANSWER])
    reply, batched = bot.reply(QUESTION), bot.reply_batch([QUESTION])[0]
    assert (reply.text, reply.verified) == (ANSWER, None) and (batched.text, batched.verified) == (ANSWER, None)
    assert [c.kind for c in calls] == ["stream", "generate"]  # and nothing asked again


def test_drop_removes_exactly_the_sentence_with_the_invented_amount(tiny_variant, monkeypatch):
    bot = verifying_bot(tiny_variant, "drop")
    calls = scripted(bot, monkeypatch, [ANSWER, ANSWER, ANSWER, INVENTED])
    stats: dict = {}
    prepared, stream = bot.start(QUESTION, stats=stats)
    assert "30 days" in prepared.text and "$99" not in prepared.text
    assert "".join(stream) == ANSWER  # the stream yields the text as generated ...
    checked = stats["verified"]  # ... and reports what to show instead
    assert checked.text == SUPPORTED.strip() == ANSWER[: ANSWER.index(" Shipping")]  # byte for byte
    assert (checked.action, checked.unsupported, checked.sentences) == ("dropped", [("money", "99")], [INVENTED])
    assert bot.reply(QUESTION).text == SUPPORTED.strip()
    first, only_invented = bot.reply_batch([QUESTION, QUESTION])
    assert first.text == SUPPORTED.strip() and first.verified.changed
    assert only_invented.text == SORRY  # every sentence dropped: the variant's abstention text
    assert len(calls) == 3 and [len(c.prompts) for c in calls] == [1, 1, 2]  # dropping asks nothing again


def test_drop_without_an_abstention_text_says_a_fixed_sentence(tiny_variant, monkeypatch):
    from assistant.generate import Bot
    from assistant.variants import load_variant

    bot = Bot(load_variant(tiny_variant.to_dict(), ["generation.verify=drop"]))  # support.j2: no abstention
    scripted(bot, monkeypatch, [INVENTED])
    assert bot.reply(QUESTION).text == FALLBACK_ABSTENTION


def test_persona_facts_count_as_supported(tiny_variant, monkeypatch):
    bot = verifying_bot(tiny_variant, "abstain")
    scripted(bot, monkeypatch, ["At Acme you have 30 days [1]."])  # Acme: the company variable, not a passage
    reply = bot.reply(QUESTION)
    assert reply.text == "At Acme you have 30 days [1]." and not reply.verified.changed


def test_abstain_says_the_abstention_text(tiny_variant, monkeypatch):
    bot = verifying_bot(tiny_variant, "abstain")
    scripted(bot, monkeypatch, [ANSWER, ANSWER])
    reply, batched = bot.reply(QUESTION), bot.reply_batch([QUESTION])[0]
    assert reply.text == batched.text == SORRY
    assert reply.verified.action == "abstained" and reply.verified.unsupported == [("money", "99")]


def test_retry_asks_once_more_greedily_with_the_stricter_instruction(tiny_variant, monkeypatch):
    bot = verifying_bot(tiny_variant, "retry", "context.context_window=1024")  # room for the longer prompt
    better = "Refunds reach your card within 5 business days [2]."
    calls = scripted(bot, monkeypatch, [ANSWER, better])
    reply = bot.reply(QUESTION)
    assert (reply.text, reply.verified.action) == (better, "retried")
    assert [(c.kind, c.temperature) for c in calls] == [("stream", 0.7), ("generate", 0.0)]
    instruction = 'Your previous answer said "Shipping back costs $99.", which is not in them'
    first, again = calls[0].prompts[0], calls[1].prompts[0]
    assert instruction not in first and instruction in again
    system = again.split("<|im_start|>user")[0]
    assert system.startswith("<|im_start|>system") and instruction in system  # appended to the system message
    assert again.replace("\n\n" + retry_instruction(ANSWER, first), "") == first  # and nothing else changed


def test_retry_keeps_the_first_answer_dropped_when_the_second_is_no_better(tiny_variant, monkeypatch):
    bot = verifying_bot(tiny_variant, "retry", "context.context_window=1024")
    calls = scripted(bot, monkeypatch, [ANSWER, "Supported: 30 days. [1]", "Return shipping costs $99 or $120 [1]."])
    invented, fine = bot.reply_batch([QUESTION, QUESTION])
    assert fine.text == "Supported: 30 days. [1]" and fine.verified.action == "kept"
    assert (invented.text, invented.verified.action) == (SUPPORTED.strip(), "dropped")  # 2 unsupported for 1
    assert [(c.kind, len(c.prompts), c.temperature) for c in calls] == [("generate", 2, 0.7), ("generate", 1, 0.0)]
    assert "previous answer" in calls[1].prompts[0]  # only the answer with an unsupported fact is asked again


def test_a_retry_that_would_not_fit_the_budget_is_not_asked(tiny_variant, monkeypatch):
    bot = verifying_bot(tiny_variant, "retry")  # the tiny model's 512 tokens, 12 of them kept for the answer
    calls = scripted(bot, monkeypatch, [ANSWER])
    prepared = bot.prepare(QUESTION)
    assert len(prepared.input_ids) <= prepared.budget < len(bot.reprompt(prepared, retry_instruction(
        ANSWER, prepared.text)).input_ids)
    reply = bot.reply(QUESTION)
    assert (reply.text, reply.verified.action, len(calls)) == (SUPPORTED.strip(), "dropped", 1)


def test_the_chat_command_prints_the_checked_answer_and_keeps_it_in_the_history(tiny_variant, monkeypatch, capsys):
    import argparse
    import io

    from assistant.cli.variant import cmd_chat

    bot = verifying_bot(tiny_variant, "drop")
    calls = scripted(bot, monkeypatch, [ANSWER, "Refunds reach your card within 5 business days [2]."])
    monkeypatch.setattr("sys.stdin", io.StringIO("How many days do I have?\nAnd refunds?\n/quit\n"))
    args = argparse.Namespace(variant=bot.variant.to_dict(), overrides=[], engine=None, no_sources=True)
    assert cmd_chat(args) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == [ANSWER, SUPPORTED.strip()]  # streamed, then the checked answer
    assert "checked: Removed a sentence whose facts are not in the sources" in err
    assert SUPPORTED.strip() + "<|im_end|>" in calls[1].prompts[0] and "$99" not in calls[1].prompts[0]
