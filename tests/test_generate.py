import torch

from assistant.generate import Bot, end_of_turn_ids
from assistant.variants import load_variant


def ask(text):
    return [{"role": "user", "content": text}]


def test_end_of_turn_token_found_from_the_chat_template(tiny_variant):
    bot = Bot(tiny_variant)
    tokenizer = bot.tokenizer
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_of_turn_ids(tokenizer)


def test_prepare_matches_the_chat_template_and_cites_passages(tiny_variant):
    bot = Bot(tiny_variant)
    prepared = bot.prepare(ask("How many days to return a grinder? {{ 7*7 }}"))
    assert prepared.text.startswith("<|im_start|>system\n")
    assert prepared.text.endswith("<|im_start|>user\nHow many days to return a grinder? {{ 7*7 }}<|im_end|>\n<|im_start|>assistant\n")
    assert prepared.input_ids == bot.tokenizer(prepared.text, add_special_tokens=False)["input_ids"]
    assert prepared.passages[0].source == "returns.md" and "30 days" in prepared.passages[0].text
    assert "30 days" in prepared.messages[0]["content"]


def test_history_is_trimmed_to_the_budget_never_the_system_message(tiny_variant):
    tiny_variant.context.context_window = 420
    bot = Bot(tiny_variant)
    history = []
    for i in range(8):
        history += [{"role": "user", "content": f"Earlier question number {i} about refunds and returns"},
                    {"role": "assistant", "content": f"Earlier answer number {i} about refunds and returns"}]
    history += ask("latest question about E3")
    prepared = bot.prepare(history)
    assert prepared.dropped_messages > 0 and prepared.dropped_messages % 2 == 0
    assert len(prepared.input_ids) <= prepared.budget == 420 - 12
    assert prepared.messages[0]["role"] == "system"
    assert prepared.messages[-1]["content"] == "latest question about E3"
    assert "number 0" not in prepared.text  # the oldest turn went first
    assert "number 7" in prepared.text


def test_streamed_and_batched_answers_agree(tiny_variant):
    bot = Bot(tiny_variant)
    questions = [ask("How many days to return a grinder?"), ask("E3?"), ask("Refunds to my card, how long does it take to arrive?")]
    streamed = [bot.reply(q) for q in questions]
    batched = bot.reply_batch(questions, batch_size=3)  # different lengths: left padding must not change answers
    assert [r.text for r in batched] == [r.text for r in streamed]
    assert [r.new_tokens for r in batched] == [r.new_tokens for r in streamed]
    assert all(0 < r.new_tokens <= 12 for r in streamed)
    assert any(r.text for r in streamed)
    assert streamed[0].first_token_seconds is not None and streamed[0].first_token_seconds <= streamed[0].seconds


def test_stream_yields_pieces_and_stops_when_the_reader_leaves(tiny_variant):
    tiny_variant.generation.max_new_tokens = 40
    bot = Bot(tiny_variant)
    stream = bot.stream(bot.prepare(ask("hello")))
    first = next(stream)
    assert isinstance(first, str) and first
    stream.close()  # the generation thread is told to stop and joined
    assert not bot.base.lock.locked()


def test_generation_stops_at_end_of_turn(tiny_model_dir, tmp_path):
    # A copy of the tiny model whose every logit is zero: greedy decoding then picks token 0, which is
    # <|im_end|>. Stopping there gives an empty answer; without the end-of-turn stop it would run on.
    import shutil

    from transformers import AutoModelForCausalLM

    folder = tmp_path / "ends"
    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(folder)
    variant = load_variant(None, [f"model.base={folder}", "model.quantization=none", "model.device=cpu"])
    bot = Bot(variant)
    assert bot.tokenizer.convert_ids_to_tokens(0) == "<|im_end|>"
    assert bot.reply(ask("hi")).text == ""
    assert bot.reply_batch([ask("hi"), ask("hello there")])[0].new_tokens == 0


def test_adapters_share_one_base_and_switch(tiny_variant, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")

    plain = Bot(tiny_variant)
    tuned_variant = load_variant(None, [f"model.base={tiny_model_dir}", "model.quantization=none", "model.device=cpu",
                                        "generation.max_new_tokens=12", f"model.adapter={tmp_path / 'adapter'}"])
    tuned = Bot(tuned_variant)
    question = ask("How many days to return a grinder?")
    before = plain.reply(question).text
    tuned_answer = tuned.reply(question)
    assert plain.base is tuned.base  # one model in memory
    assert tuned.variant.variant_hash() != plain.variant.variant_hash()
    plain_tokens = plain.tokenizer(plain.reply(question).text)["input_ids"]
    tuned_tokens = tuned.tokenizer(tuned_answer.text)["input_ids"]
    assert plain_tokens != tuned_tokens  # the adapter changes the answer ...
    assert plain.reply(question).text == before  # ... and switching back restores the base exactly


def test_below_min_relevance_the_bot_abstains_without_the_model(tiny_variant):
    """Retrieval's relevance decides: a question no passage matches gets the variant's abstention text on every
    path (stream, reply, batch) and never reaches the engine; a matching question is answered by the model."""
    import dataclasses

    import pytest

    from assistant.settings_reader import ConfigError

    with pytest.raises(ConfigError, match="prompt.variables.abstention"):
        load_variant(tiny_variant.to_dict(), ["context.min_relevance=0.5"])
    sorry = "I can't find that in our documents; please contact support."
    variant = load_variant(tiny_variant.to_dict(), ["context.min_relevance=0.5",
                                                    f"prompt.variables.abstention={sorry!r}"])
    bot = Bot(variant)
    matched, unmatched = bot.prepare(ask("How many days to return a grinder?")), bot.prepare(ask("Who painted it?"))
    assert matched.relevance > 0.5 and matched.abstention is None
    assert unmatched.relevance < 0.5 and unmatched.abstention == sorry

    class NoEngine:
        def generate(self, *args, **kwargs):
            raise AssertionError("an abstention reached the engine")

        stream = generate

    answered = Bot(variant).reply(ask("How many days to return a grinder?"))
    bot._engine = NoEngine()  # from here on, any question that reached the model would fail
    reply = bot.reply(ask("Who painted it?"))
    assert (reply.text, reply.abstained, reply.new_tokens) == (sorry, True, len(bot.tokenizer(sorry)["input_ids"]))
    batch = Bot(variant).reply_batch([ask("Who painted it?"), ask("How many days to return a grinder?")])
    assert [r.abstained for r in batch] == [True, False]
    assert batch[0].text == sorry and batch[1].text == answered.text and not answered.abstained
    assert dataclasses.asdict(bot.prepare(ask("Who painted it?")))["abstention"] == sorry


def test_few_shot_examples_first_balanced_or_dynamic(tiny_variant, tmp_path):
    """'first' shows the file's first N, 'balanced' takes them in turn from each answer, 'dynamic' the N
    whose question is most like the user's, per request, through the variant's retriever."""
    import json

    rows = [{"text": "The grinder is loud and broke.", "label": "negative"},
            {"text": "The kettle broke after a week.", "label": "negative"},
            {"text": "The grinder is a grinder.", "label": "neutral"},
            {"prompt": "I love the espresso machine.", "completion": "positive"}]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def shown(selection, question="Is the espresso machine good?"):
        variant = load_variant(tiny_variant.to_dict(), [f"prompt.few_shot={pool}", "prompt.few_shot_count=2",
                                                        f"prompt.few_shot_selection={selection}",
                                                        "context.retriever=bm25"])
        messages = Bot(variant).prepare(ask(question)).messages
        return [m["content"] for m in messages if m["role"] == "user"][:-1]

    assert shown("first") == ["The grinder is loud and broke.", "The kettle broke after a week."]
    assert shown("balanced") == ["The grinder is loud and broke.", "The grinder is a grinder."]
    assert shown("dynamic")[0] == "I love the espresso machine."
    assert shown("dynamic", "My kettle broke")[0] == "The kettle broke after a week."
    # Nothing but stop words: nothing is like it, so the file's first N (BM25 used to raise IndexError here).
    assert shown("dynamic", "What is it?") == shown("first")
    # One word in common: that example first, then the file's order fills the rest.
    assert shown("dynamic", "Why kettle?") == ["The kettle broke after a week.", "The grinder is loud and broke."]
