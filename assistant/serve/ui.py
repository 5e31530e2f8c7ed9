"""The Gradio app, one builder per tab, around Bots that may not have loaded their models yet.

    Chat         the served variant, streamed, with the passages it used; thumbs and a comment on answers
    Arena        one message to two variants shown anonymously (random pair and sides); vote, then names
    Leaderboard  Bradley-Terry ratings from every vote, with bootstrap intervals and vote counts
    Evaluation   the latest evaluation report and its chart

Every answer comes from ``Bot.start`` (prepare, then stream): the path the CLI, the API and evaluation use.
"""

# No `from __future__ import annotations` here: Gradio reads the handlers' annotations (gr.Request,
# gr.LikeData) at run time to know which arguments it must supply itself.
import random
from pathlib import Path
from typing import Any

SOURCES_MARK = "\n\n---\n**Sources:** "
RETRIEVED_MARK = "\n\n---\n**Retrieved (not cited):** "
CHECK_MARK = "\n\n---\n**Checked against the sources:** "
FOOTER_MARKS = (SOURCES_MARK, RETRIEVED_MARK, CHECK_MARK)
"""What the app writes under an answer; the conversation the model sees ends each answer before them."""
NO_PASSAGES = "_Passages used for the latest answer appear here._"
EXAMPLES = [
    "How long do I have to return a grinder?",
    "My espresso machine shows error E3, what does it mean?",
    "Can I pause my coffee subscription?",
]
VOTES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}


def message_text(content: Any) -> str:
    """Gradio 6 hands messages back with content as a list of parts; the model wants plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def to_model_history(chat: list[dict]) -> list[dict[str, str]]:
    """The conversation as the model should see it: text only, without the footers we display."""
    out = []
    for m in chat:
        text = message_text(m.get("content"))
        for mark in FOOTER_MARKS:
            text = text.split(mark, 1)[0]
        text = text.strip()
        if m.get("role") in ("user", "assistant") and text:
            out.append({"role": m["role"], "content": text})
    return out


def format_sources(passages, answer: str = "") -> tuple[str, str]:
    """A one-line citation footer for the answer and a Markdown panel with the passages' text. When the answer
    cites passages as [n], the footer lists the cited ones only, as its sources; otherwise every retrieved
    passage, labelled as retrieved and not cited."""
    from assistant.context import cited_numbers

    if not passages:
        return "", "_No passages retrieved for this message._"
    cited = cited_numbers(answer, len(passages))
    mark = SOURCES_MARK if cited else RETRIEVED_MARK
    footer = mark + "; ".join(f"[{i}] {passages[i - 1].cite()}" for i in cited or range(1, len(passages) + 1))
    panel = "\n\n".join(f"**[{i}] {p.cite()}**\n\n{p.text}" for i, p in enumerate(passages, 1))
    return footer, panel


def leaderboard_rows(store) -> list[list]:
    from assistant.feedback import leaderboard

    if store is None:
        return []
    return [[rank, s.variant, round(s.rating), f"{s.low:.0f} to {s.high:.0f}", s.votes, s.wins]
            for rank, s in enumerate(leaderboard(store.votes()), 1)]


def latest_report(reports: Path | None) -> tuple[str, str | None]:
    """What is served and why (the promotion), then the report it was promoted from (or, with no promotion,
    the latest report) as Markdown, and its chart (shown above it)."""
    from assistant.evaluation.promotion import served_stack
    from assistant.serve.winner import latest_winner

    stack = served_stack(reports) if reports else []
    winner = reports / stack[-1].report / "winner.yaml" if stack else (latest_winner(reports) if reports else None)
    if winner is None:
        return "_No evaluation report yet. Run `assistant eval eval/suites/<suite>.yaml`._", None
    if stack:
        e = stack[-1]
        served = (f"**Served: {e.variant}** (`{e.variant_hash}`), promoted from `{e.report}` by {e.who} at {e.when}: "
                  f"{e.reason}." + (f" Earlier promotions standing: {', '.join(p.variant for p in stack[:-1])}."
                                    if len(stack) > 1 else ""))
    else:
        served = "_Nothing promoted yet: the app serves the newest report's winner (`assistant promote REPORT`)._"
    text = served + "\n\n" + (winner.parent / "report.md").read_text(encoding="utf-8")
    text = text.replace("![metrics](metrics.png)", f"_Every case's answers side by side: `{winner.parent.name}/report.html`_")
    chart = winner.parent / "metrics.png"
    return text, str(chart) if chart.is_file() else None


def _checked(history: list[dict[str, str]], limits) -> list[dict[str, str]]:
    """The conversation within the limits, or an error shown in the app saying why not."""
    import gradio as gr

    from assistant.serve.api import RequestError, check_conversation

    try:
        return check_conversation(history, limits)
    except RequestError as exc:
        raise gr.Error(str(exc)) from None


def chat_tab(bot, store, limits) -> None:
    """The Chat tab: streamed answers with their passages, thumbs and comments."""
    import gradio as gr

    from assistant.errors import USER_ERRORS
    from assistant.feedback import Shown

    def respond(message: str, chat: list[dict]):
        message = (message or "").strip()
        if not message:
            yield "", chat, gr.skip()
            return
        history = _checked(to_model_history(chat) + [{"role": "user", "content": message}], limits)
        shown = chat + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield "", shown, "_Retrieving..._"
        stats: dict[str, Any] = {}
        try:
            prepared, stream = bot.start(history, stats=stats)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        panel = format_sources(prepared.passages)[1]
        text = ""
        for piece in stream:
            text += piece
            shown[-1] = {"role": "assistant", "content": text}
            yield "", shown, panel
        verified = stats.get("verified")  # the answer after generation.verify's check replaces the streamed one
        text = verified.text if verified else text
        note = CHECK_MARK + verified.note() if verified and verified.changed else ""
        footer = "" if prepared.abstention is not None else format_sources(prepared.passages, text)[0]
        shown[-1] = {"role": "assistant", "content": text.strip() + note + footer}
        yield "", shown, panel

    def rate(chat: list[dict], like: gr.LikeData, request: gr.Request):
        if store is None:
            return "_Feedback is not being recorded._"
        index = like.index if isinstance(like.index, int) else like.index[0]
        answer = to_model_history([chat[index]])
        conversation = to_model_history(chat[:index])
        if not answer or not conversation or conversation[-1]["role"] != "user":
            return gr.skip()
        if like.liked not in (True, False):  # a thumb clicked off again: nothing new to record
            return gr.skip()
        rating = 1 if like.liked else -1
        store.add_rating(conversation, Shown(answer[0]["content"], bot.variant.name, bot.variant.variant_hash()),
                         rating, session=request.session_hash)
        return f"Thanks: recorded a thumbs {'up' if rating > 0 else 'down'}. Add a comment below if you like."

    def comment(text: str, request: gr.Request):
        text = (text or "").strip()
        if store is None or not text:
            return gr.skip(), gr.skip()
        if len(text) > limits.max_message_chars:
            raise gr.Error(f"The comment is {len(text)} characters long; the limit is {limits.max_message_chars}.")
        if not store.comment_last_rating(request.session_hash, text):
            return text, "Rate an answer first (thumbs up or down), then add your comment."
        return "", "Comment saved with your latest rating."

    with gr.Tab("Chat"):
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", height=460, elem_id="chat",
                                     feedback_options=("Like", "Dislike"))
                box = gr.Textbox(label="Your message", placeholder="Ask a question and press Enter",
                                 elem_id="message", autofocus=True, max_length=limits.max_message_chars)
                with gr.Row():
                    send = gr.Button("Send", variant="primary")
                    clear = gr.Button("New conversation")
                gr.Examples(EXAMPLES, inputs=box)
                feedback_note = gr.Markdown("", elem_id="feedback-note")
                with gr.Row():
                    note = gr.Textbox(label="Comment on your latest rating (optional)", elem_id="comment",
                                      scale=4, max_length=limits.max_message_chars)
                    note_send = gr.Button("Save comment", scale=1, elem_id="comment-send")
            with gr.Column(scale=2):
                gr.Markdown("### Retrieved passages")
                sources = gr.Markdown(NO_PASSAGES, elem_id="sources")
    box.submit(respond, [box, chatbot], [box, chatbot, sources], api_name="respond")
    send.click(respond, [box, chatbot], [box, chatbot, sources], api_name=False)
    clear.click(lambda: ([], "", NO_PASSAGES), None, [chatbot, box, sources], api_name=False)
    chatbot.like(rate, [chatbot], [feedback_note], api_name=False)
    note_send.click(comment, [note], [note, feedback_note], api_name=False)


def arena_tab(arena: dict, store, limits, rng: random.Random):
    """The Arena tab: two anonymous variants answer one message; a vote reveals them. Returns a function
    that wires the events once the leaderboard table (which a vote refreshes) exists."""
    import gradio as gr

    from assistant.feedback import Shown

    def arena_respond(message: str, state: dict | None):
        message = (message or "").strip()
        if not message:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        if len(arena) < 2:
            raise gr.Error("The arena needs two or more variants: start the app with --arena FILE twice or more.")
        conversation = _checked([{"role": "user", "content": message}], limits)
        left, right = rng.sample(sorted(arena), 2)  # which two, and on which side, is left to chance
        user = {"role": "user", "content": message}
        shown = {"a": [user, {"role": "assistant", "content": ""}], "b": [user, {"role": "assistant", "content": ""}]}
        hidden = "Names are hidden until you vote."
        texts = {}
        for side, name in (("a", left), ("b", right)):
            text, stats = "", {}
            for piece in arena[name].start(conversation, stats=stats)[1]:
                text += piece
                shown[side][-1] = {"role": "assistant", "content": text}
                yield "", shown["a"], shown["b"], hidden, None
            texts[side] = (stats["verified"].text if stats.get("verified") else text).strip()
            shown[side][-1] = {"role": "assistant", "content": texts[side]}
        state = {"conversation": conversation, "voted": False,
                 "a": [left, arena[left].variant.variant_hash(), texts["a"]],
                 "b": [right, arena[right].variant.variant_hash(), texts["b"]]}
        yield "", shown["a"], shown["b"], "Both answers are in: vote below.", state

    def vote(outcome: str, state: dict | None, request: gr.Request):
        if not state:
            raise gr.Error("Ask a question in the arena first.")
        if state["voted"]:
            raise gr.Error("You already voted on this pair: ask another question.")
        if store is not None:
            a, b = (Shown(state[s][2], state[s][0], state[s][1]) for s in ("a", "b"))
            store.add_vote(state["conversation"], a, b, outcome, session=request.session_hash)
        state = {**state, "voted": True}
        reveal = (f"You voted **{VOTES[outcome]}**. A was **{state['a'][0]}** (`{state['a'][1]}`), "
                  f"B was **{state['b'][0]}** (`{state['b'][1]}`).")
        return reveal, state, leaderboard_rows(store)

    def vote_handler(outcome: str):
        """A handler for one button (Gradio reads the handler's signature for the request)."""
        def handler(state: dict | None, request: gr.Request):
            return vote(outcome, state, request)

        return handler

    with gr.Tab("Arena", visible=len(arena) >= 2):
        gr.Markdown("Two variants answer the same message; you do not know which is which. Vote for the "
                    "better answer and the names are revealed.")
        arena_state = gr.State(None)
        with gr.Row():
            side_a = gr.Chatbot(label="A", height=360, elem_id="arena-a")
            side_b = gr.Chatbot(label="B", height=360, elem_id="arena-b")
        arena_box = gr.Textbox(label="Your message", placeholder="Ask both and press Enter",
                               elem_id="arena-message", max_length=limits.max_message_chars)
        with gr.Row():
            buttons = {key: gr.Button(label, elem_id=f"vote-{key}") for key, label in VOTES.items()}
        reveal = gr.Markdown("", elem_id="reveal")

    def connect(board) -> None:
        arena_box.submit(arena_respond, [arena_box, arena_state], [arena_box, side_a, side_b, reveal, arena_state],
                         api_name="arena")
        for key, button in buttons.items():
            button.click(vote_handler(key), [arena_state], [reveal, arena_state, board], api_name=f"vote_{key}")

    return connect


def leaderboard_tab(store):
    """The Leaderboard tab; returns the table (votes and page loads refresh it)."""
    import gradio as gr

    with gr.Tab("Leaderboard"):
        gr.Markdown("Bradley-Terry ratings fitted from every arena vote (ties and 'both bad' count half), "
                    "with 95% intervals from resampling the votes.")
        board = gr.Dataframe(leaderboard_rows(store), headers=["Rank", "Variant", "Rating", "95% interval",
                                                               "Votes", "Wins"],
                             elem_id="leaderboard", interactive=False)
        refresh = gr.Button("Refresh", elem_id="leaderboard-refresh")
    refresh.click(lambda: leaderboard_rows(store), None, [board], api_name=False)
    return board


def evaluation_tab(reports: Path | None):
    """The Evaluation tab; returns its text and chart (page loads refresh them)."""
    import gradio as gr

    with gr.Tab("Evaluation"):
        report_text, report_chart = latest_report(reports)
        chart = gr.Image(report_chart, label="Metrics with 95% intervals", elem_id="evaluation-chart",
                         interactive=False, visible=report_chart is not None)
        evaluation = gr.Markdown(report_text, elem_id="evaluation")
    return evaluation, chart


def build_app(bot, title: str = "Assistant", *, arena: dict | None = None, store=None, limits=None,
              reports: Path | None = None, seed: int | None = None):
    """Builds the Blocks app around a Bot (which may not have loaded its model yet).

    Args:
        arena: variant name -> Bot for the blind comparison (the Arena tab needs two or more).
        store: a FeedbackStore for thumbs and votes (none: the app collects nothing).
        limits: message and history limits (assistant.serve.api.Limits).
        reports: folder of evaluation reports, for the Evaluation tab.
        seed: makes the arena's choice of variants and sides repeatable (tests).
    """
    import gradio as gr

    from assistant.serve.api import Limits

    limits = limits or Limits()
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}\nVariant `{bot.variant.name}` ({bot.variant.variant_hash()})")
        chat_tab(bot, store, limits)
        connect_arena = arena_tab(arena or {}, store, limits, random.Random(seed))
        board = leaderboard_tab(store)
        evaluation, chart = evaluation_tab(reports)
        connect_arena(board)
        demo.load(lambda: (leaderboard_rows(store), *latest_report(reports)), None, [board, evaluation, chart],
                  api_name=False)
    return demo
