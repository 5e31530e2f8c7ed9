"""The app's wiring on the tiny model: lazy import, history handling, and the streamed /respond endpoint."""

import subprocess
import sys

from tests.conftest import ROOT


def test_importing_the_app_loads_no_model_and_no_torch():
    code = "import sys, app; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_model_history_drops_the_sources_footer_and_flattens_parts():
    from assistant.serve import ui

    chat = [
        {"role": "user", "content": [{"type": "text", "text": "How long?"}]},
        {"role": "assistant", "content": "30 days." + ui.SOURCES_MARK + "[1] returns.md - Window"},
        {"role": "assistant", "content": ""},
    ]
    assert ui.to_model_history(chat) == [
        {"role": "user", "content": "How long?"},
        {"role": "assistant", "content": "30 days."},
    ]


def test_respond_streams_and_cites_passages(tiny_variant):
    from gradio_client import Client

    from assistant.generate import Bot
    from assistant.serve import ui

    bot = Bot(tiny_variant)
    demo = ui.build_app(bot, title="Acme")
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        job = client.submit("How many days to return a grinder?", [], api_name="/respond")
        updates = [out for out in job]
        final_chat, panel = job.result()[1], job.result()[2]
    finally:
        demo.close()
    assert len(updates) >= 3  # placeholder, at least one streamed piece, final answer with sources
    answer = final_chat[-1]["content"][0]["text"]
    assert final_chat[-2]["content"][0]["text"] == "How many days to return a grinder?"
    expected = bot.reply([{"role": "user", "content": "How many days to return a grinder?"}]).text
    footer = ui.format_sources(bot.prepare([{"role": "user", "content": "How many days to return a grinder?"}])
                               .passages, expected)[0]
    assert answer == expected + footer  # the app serves the one generation path
    assert "[1] returns.md - Returns > Window" in footer  # what the answer cites, or else every passage retrieved
    assert "30 days" in panel


def test_respond_replaces_the_answer_with_the_checked_one_and_says_what_changed(tiny_variant, monkeypatch):
    from gradio_client import Client

    from assistant.generate import Bot
    from assistant.serve import ui
    from assistant.variants import load_variant

    bot = Bot(load_variant(tiny_variant.to_dict(), ["generation.verify=drop"]))

    def stream(input_ids, adapter, sampling, stats=None):  # a hand-made answer: $99 is in no passage
        yield from ["You have 30 days [1]. ", "Shipping back costs $99 [1]."]
        if stats is not None:
            stats.update(new_tokens=9, finish_reason="stop")

    monkeypatch.setattr(bot.engine, "stream", stream)
    demo = ui.build_app(bot, title="Acme")
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        final_chat = Client(url, verbose=False).predict("How many days to return a grinder?", [],
                                                        api_name="/respond")[1]
    finally:
        demo.close()
    answer = final_chat[-1]["content"][0]["text"]
    assert answer == ("You have 30 days [1]." + ui.CHECK_MARK + "Removed a sentence whose facts are not in the "
                      "sources: “Shipping back costs $99.”" + ui.SOURCES_MARK + "[1] returns.md - Returns > Window")
    assert ui.to_model_history(final_chat)[-1]["content"] == "You have 30 days [1]."  # what the model sees next


def launch_with_arena(tiny_variant, tmp_path):
    import dataclasses

    from assistant.feedback import FeedbackStore
    from assistant.generate import Bot
    from assistant.serve import ui

    other = dataclasses.replace(tiny_variant, name="short",
                                generation=dataclasses.replace(tiny_variant.generation, max_new_tokens=3))
    arena = {"tiny": Bot(dataclasses.replace(tiny_variant, name="tiny")), "short": Bot(other)}
    store = FeedbackStore(tmp_path / "feedback.db")
    demo = ui.build_app(arena["tiny"], title="Acme", arena=arena, store=store, seed=0)
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    return demo, url, store, arena


def test_arena_vote_is_stored_with_both_variant_ids_and_names_revealed_after(tiny_variant, tmp_path):
    from gradio_client import Client

    demo, url, store, arena = launch_with_arena(tiny_variant, tmp_path)
    try:
        client = Client(url, verbose=False)
        _, side_a, side_b, note = client.predict("How many days to return a grinder?", api_name="/arena")
        assert "vote" in note and "tiny" not in note and "short" not in note  # no names before the vote
        answers = {side_a[-1]["content"][0]["text"] if side_a[-1]["content"] else "",
                   side_b[-1]["content"][0]["text"] if side_b[-1]["content"] else ""}
        reveal, board = client.predict(api_name="/vote_b")
    finally:
        demo.close()
    vote, = store.votes()
    assert vote["outcome"] == "b" and {vote["variant_a"], vote["variant_b"]} == {"tiny", "short"}
    assert {vote["hash_a"], vote["hash_b"]} == {b.variant.variant_hash() for b in arena.values()}
    assert {vote["answer_a"], vote["answer_b"]} == answers
    assert vote["conversation"] == [{"role": "user", "content": "How many days to return a grinder?"}]
    assert f"A was **{vote['variant_a']}**" in reveal and f"B was **{vote['variant_b']}**" in reveal
    rows = board["data"]
    assert {r[1] for r in rows} == {"tiny", "short"} and rows[0][1] == vote["variant_b"]  # the winner leads


def test_messages_over_the_limit_are_refused_with_a_reason(tiny_variant, tmp_path):
    from gradio_client import Client

    from assistant.generate import Bot
    from assistant.serve import ui
    from assistant.serve.api import Limits

    demo = ui.build_app(Bot(tiny_variant), limits=Limits(max_message_chars=20, max_history_messages=3))
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        try:
            client.predict("x" * 30, [], api_name="/respond")
            raised = ""
        except Exception as exc:  # gradio_client raises AppError carrying the server's message
            raised = str(exc)
        long_history = [{"role": role, "content": [{"type": "text", "text": text}]}
                        for role, text in (("user", "hi"), ("assistant", "hello"))] * 2
        try:
            client.predict("again", long_history, api_name="/respond")
            raised_history = ""
        except Exception as exc:
            raised_history = str(exc)
    finally:
        demo.close()
    assert "30 characters long; the limit is 20" in raised
    assert "5 messages; the limit is 3" in raised_history and "new conversation" in raised_history


def test_evaluation_tab_shows_the_latest_servable_report():
    from assistant.serve import ui
    from assistant.serve.server import REPORTS

    text, chart = ui.latest_report(REPORTS)
    assert text.startswith("**Served: ")  # what is served and why, then its report
    assert "\n\n# Evaluation: tidewater-support" in text  # the sentiment suite opts out of serving
    assert chart is not None and chart.endswith("metrics.png")
    assert "report.html" in text
    assert ui.latest_report(None) == ("_No evaluation report yet. Run `assistant eval eval/suites/<suite>.yaml`._", None)


def test_the_sources_footer_lists_what_the_answer_cites():
    """Citation mode: an answer that cites [n] gets only those sources under it; one that cites nothing gets
    every retrieved passage, labelled as retrieved and not cited; neither footer reaches the model's history."""
    from assistant.context import Passage, cited_numbers
    from assistant.serve import ui

    passages = [Passage("returns.md", "Returns > Window", "30 days."), Passage("refunds.md", "Refunds", "5 days."),
                Passage("warranty.md", "Warranty", "2 years.")]
    assert cited_numbers("You have 30 days [1]. Refunds take 5 days [2, 1]; see [7].", 3) == [1, 2]
    footer, panel = ui.format_sources(passages, "Refunds take 5 days [2].")
    assert footer == ui.SOURCES_MARK + "[2] refunds.md - Refunds"
    assert ui.format_sources(passages, "Refunds take 5 days [7].")[0] == (
        ui.RETRIEVED_MARK + "[1] returns.md - Returns > Window; [2] refunds.md - Refunds; [3] warranty.md - Warranty")
    assert "Retrieved (not cited)" in ui.RETRIEVED_MARK
    chat = [{"role": "assistant", "content": "Refunds take 5 days." + ui.CHECK_MARK + "Removed ..." + footer},
            {"role": "assistant", "content": "Refunds take 5 days." + ui.RETRIEVED_MARK + "[1] returns.md"}]
    assert [m["content"] for m in ui.to_model_history(chat)] == ["Refunds take 5 days."] * 2
    assert panel.count("**[") == 3  # the panel always shows every passage the model saw
