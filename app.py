"""The app: chat with the winning variant, compare variants blind, see the leaderboard and the evaluation.

    python app.py [--variant FILE] [--arena FILE ...] [--data feedback/] [--auth USER:PASSWORD]

Tabs:
    Chat         the served variant (by default the latest evaluation winner), streamed, with the passages
                 it used; thumbs up/down and a comment on every answer
    Arena        one message goes to two variants shown anonymously side by side (random sides); vote A, B,
                 tie or both bad; the names are revealed only after the vote
    Leaderboard  Bradley-Terry ratings fitted from every vote, with bootstrap intervals and vote counts
    Evaluation   the latest evaluation report

Beside the app, on the same server: an OpenAI-compatible API (/v1/models, /v1/chat/completions) serving
the chat variant and every arena variant by name. Ratings and votes go to SQLite (assistant/feedback.py).

Nothing heavy happens at import: models load in the background once the server is up (or on the first
message). Answers come from ``assistant.generate.Bot``, the path the CLI and the evaluation use.
"""


import argparse
import os
import random
import sys
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent
DEFAULT_VARIANT = ROOT / "configs" / "tidewater.yaml"
REPORTS = ROOT / "eval" / "reports"
FEEDBACK = ROOT / "feedback"
SOURCES_MARK = "\n\n---\n**Sources:** "
NO_PASSAGES = "_Passages used for the latest answer appear here._"
EXAMPLES = [
    "How long do I have to return a grinder?",
    "My espresso machine shows error E3, what does it mean?",
    "Can I pause my coffee subscription?",
]
VOTES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}


def message_text(content) -> str:
    """Gradio 6 hands messages back with content as a list of parts; the model wants plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def to_model_history(chat: list[dict]) -> list[dict[str, str]]:
    """The conversation as the model should see it: text only, without the sources footer we display."""
    out = []
    for m in chat:
        text = message_text(m.get("content")).split(SOURCES_MARK, 1)[0].strip()
        if m.get("role") in ("user", "assistant") and text:
            out.append({"role": m["role"], "content": text})
    return out


def format_sources(passages) -> tuple[str, str]:
    """A one-line citation footer for the answer and a Markdown panel with the passages' text."""
    if not passages:
        return "", "_No passages retrieved for this message._"
    footer = SOURCES_MARK + "; ".join(f"[{i}] {p.cite()}" for i, p in enumerate(passages, 1))
    panel = "\n\n".join(f"**[{i}] {p.cite()}**\n\n{p.text}" for i, p in enumerate(passages, 1))
    return footer, panel


def leaderboard_rows(store) -> list[list]:
    from assistant.feedback import leaderboard

    if store is None:
        return []
    return [[rank, s.variant, round(s.rating), f"{s.low:.0f} to {s.high:.0f}", s.votes, s.wins]
            for rank, s in enumerate(leaderboard(store.votes()), 1)]


def latest_report(reports: Path | None) -> tuple[str, str | None]:
    """The latest evaluation report as Markdown, and its chart (shown above it)."""
    from assistant.report import latest_winner

    winner = latest_winner(reports) if reports else None
    if winner is None:
        return "_No evaluation report yet. Run `assistant eval eval/suites/<suite>.yaml`._", None
    text = (winner.parent / "report.md").read_text(encoding="utf-8")
    text = text.replace("![metrics](metrics.png)", f"_Every case's answers side by side: `{winner.parent.name}/report.html`_")
    chart = winner.parent / "metrics.png"
    return text, str(chart) if chart.is_file() else None


def build_app(bot, title: str = "Assistant", *, arena: dict | None = None, store=None, limits=None,
              reports: Path | None = None, seed: int | None = None):
    """Builds the Blocks app around a Bot (which may not have loaded its model yet).

    Args:
        arena: variant name -> Bot for the blind comparison (the Arena tab needs two or more).
        store: a FeedbackStore for thumbs and votes (none: the app collects nothing).
        limits: message and history limits (assistant.api.Limits).
        reports: folder of evaluation reports, for the Evaluation tab.
        seed: makes the arena's choice of variants and sides repeatable (tests).
    """
    import gradio as gr

    from assistant.api import Limits, RequestError, check_conversation
    from assistant.cli import USER_ERRORS
    from assistant.feedback import Shown

    limits = limits or Limits()
    arena = arena or {}
    rng = random.Random(seed)

    def checked(history: list[dict[str, str]]) -> list[dict[str, str]]:
        try:
            return check_conversation(history, limits)
        except RequestError as exc:
            raise gr.Error(str(exc)) from None

    def respond(message: str, chat: list[dict]):
        message = (message or "").strip()
        if not message:
            yield "", chat, gr.skip()
            return
        history = checked(to_model_history(chat) + [{"role": "user", "content": message}])
        shown = chat + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield "", shown, "_Retrieving..._"
        try:
            prepared = bot.prepare(history)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        footer, panel = format_sources(prepared.passages)
        text = ""
        for piece in bot.stream(prepared):
            text += piece
            shown[-1] = {"role": "assistant", "content": text}
            yield "", shown, panel
        shown[-1] = {"role": "assistant", "content": text.strip() + footer}
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

    def arena_respond(message: str, state: dict | None):
        message = (message or "").strip()
        if not message:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        if len(arena) < 2:
            raise gr.Error("The arena needs two or more variants: start the app with --arena FILE twice or more.")
        conversation = checked([{"role": "user", "content": message}])
        left, right = rng.sample(sorted(arena), 2)  # which two, and on which side, is left to chance
        user = {"role": "user", "content": message}
        shown = {"a": [user, {"role": "assistant", "content": ""}], "b": [user, {"role": "assistant", "content": ""}]}
        hidden = "Names are hidden until you vote."
        texts = {}
        for side, name in (("a", left), ("b", right)):
            text = ""
            for piece in arena[name].stream(arena[name].prepare(conversation)):
                text += piece
                shown[side][-1] = {"role": "assistant", "content": text}
                yield "", shown["a"], shown["b"], hidden, None
            texts[side] = text.strip()
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

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}\nVariant `{bot.variant.name}` ({bot.variant.variant_hash()})")
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
        with gr.Tab("Leaderboard"):
            gr.Markdown("Bradley-Terry ratings fitted from every arena vote (ties and 'both bad' count half), "
                        "with 95% intervals from resampling the votes.")
            board = gr.Dataframe(leaderboard_rows(store), headers=["Rank", "Variant", "Rating", "95% interval",
                                                                   "Votes", "Wins"],
                                 elem_id="leaderboard", interactive=False)
            refresh = gr.Button("Refresh", elem_id="leaderboard-refresh")
        with gr.Tab("Evaluation"):
            report_text, report_chart = latest_report(reports)
            chart = gr.Image(report_chart, label="Metrics with 95% intervals", elem_id="evaluation-chart",
                             interactive=False, visible=report_chart is not None)
            evaluation = gr.Markdown(report_text, elem_id="evaluation")

        arena_box.submit(arena_respond, [arena_box, arena_state], [arena_box, side_a, side_b, reveal, arena_state],
                         api_name="arena")
        for key, button in buttons.items():
            button.click(_bind(vote, key), [arena_state], [reveal, arena_state, board], api_name=f"vote_{key}")
        refresh.click(lambda: leaderboard_rows(store), None, [board], api_name=False)
        demo.load(lambda: (leaderboard_rows(store), *latest_report(reports)), None, [board, evaluation, chart],
                  api_name=False)
    return demo


def _bind(vote, outcome: str):
    """A vote handler for one button (Gradio reads the handler's signature for the request)."""
    import gradio as gr

    def handler(state: dict | None, request: gr.Request):
        return vote(outcome, state, request)

    return handler


def served_variant_file(chosen: str | None, reports: Path) -> tuple[Path, str]:
    """The file to serve and why: the one asked for, else the latest evaluation winner, else the demo."""
    from assistant.report import latest_winner

    if chosen:
        return Path(chosen), "chosen with --variant"
    winner = latest_winner(reports)
    if winner is not None:
        return winner, "the winner of the latest evaluation"
    return DEFAULT_VARIANT, "no evaluation winner found, serving the demo variant"


def load_any_variant(path: Path, overrides: list[str]):
    """A variant file, or an evaluation's winner.yaml."""
    from assistant.config import load_variant
    from assistant.report import is_winner_file, load_winner

    return load_winner(path, overrides) if is_winner_file(path) else load_variant(path, overrides)


def arena_variants(files: list[str], served_file: Path, overrides: list[str]) -> dict:
    """The arena's contenders: --arena files (variant files or winner.yaml), else every variant the served
    winner's evaluation compared."""
    from assistant.report import is_winner_file, load_contenders

    if files:
        variants = [load_any_variant(Path(f), overrides) for f in files]
        return {v.name: v for v in variants}
    if is_winner_file(served_file):
        return load_contenders(served_file)
    return {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a variant as a chat app in the browser, with a blind "
                                     "arena, a leaderboard, the latest evaluation and an OpenAI-compatible API.")
    parser.add_argument("--variant", metavar="FILE",
                        help="variant YAML file, or an evaluation report's winner.yaml, to serve (default: the "
                        "winner of the latest evaluation under --reports, or else "
                        f"{DEFAULT_VARIANT.relative_to(ROOT)})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of every served variant, e.g. --set generation.max_new_tokens=64")
    parser.add_argument("--arena", action="append", default=[], metavar="FILE",
                        help="a variant for the blind arena (repeat; two or more). Default: every variant of "
                        "the served winner's evaluation")
    parser.add_argument("--api-variant", action="append", default=[], metavar="FILE",
                        help="also serve this variant (a variant file or winner.yaml) on the OpenAI-compatible API, "
                        "by its name (repeatable); the chat variant and the arena variants are always served")
    parser.add_argument("--reports", default=str(REPORTS), metavar="DIR",
                        help=f"evaluation reports: the latest winner and report (default: {REPORTS.relative_to(ROOT)})")
    parser.add_argument("--data", default=str(FEEDBACK), metavar="DIR",
                        help=f"folder of the feedback database, feedback.db (default: {FEEDBACK.relative_to(ROOT)})")
    parser.add_argument("--auth", metavar="USER:PASSWORD", default=os.environ.get("ASSISTANT_AUTH"),
                        help="require this login for the app and the API (API clients send the password as a "
                        "Bearer token or use HTTP Basic). Default: $ASSISTANT_AUTH, or no login")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests handled at once, app and API each (default 16). The llama.cpp engine decodes "
                        "serving.parallel of them together (continuous batching); the transformers engine one at "
                        "a time per loaded model. The rest wait in the queue")
    parser.add_argument("--max-message-chars", type=int, default=4000,
                        help="longest message accepted, in characters (default 4000)")
    parser.add_argument("--max-history", type=int, default=40,
                        help="most messages in one conversation (default 40); beyond it people are asked to "
                        "start a new one")
    parser.add_argument("--engine", choices=["auto", "transformers", "llamacpp", "openai", "vllm"],
                        help="generation engine for every served variant (default: each variant's serving.engine, "
                        "'auto': llama.cpp on the CPU for a base with a GGUF file, vLLM on a GPU when installed, "
                        "else transformers)")
    parser.add_argument("--no-preload", action="store_true",
                        help="load the model on the first message instead of right after start-up")
    return parser.parse_args(argv)


def build_server(args: argparse.Namespace):
    """The FastAPI server: the Gradio app at / and the OpenAI-compatible API at /v1."""
    import gradio as gr
    from fastapi import FastAPI

    from assistant.api import Limits, add_openai_routes
    from assistant.feedback import FeedbackStore
    from assistant.generate import Bot
    from assistant.models import import_model_libraries

    import_model_libraries()  # before any thread loads a model: concurrent lazy imports can fail
    path, why = served_variant_file(args.variant, Path(args.reports))
    variant = load_any_variant(path, args.overrides)
    print(f"serving {variant.name} ({variant.variant_hash()}) from {path}: {why}", file=sys.stderr)
    bot = Bot(variant, args.engine)
    bot.check()
    arena = {name: Bot(v, args.engine) for name, v in arena_variants(args.arena, path, args.overrides).items()}
    for contender in arena.values():
        contender.check()
    if arena:
        print(f"arena: {', '.join(arena)}", file=sys.stderr)
    credentials = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth must be USER:PASSWORD")
        credentials = (user, password)
    limits = Limits(args.max_message_chars, args.max_history, args.concurrency)
    store = FeedbackStore(Path(args.data) / "feedback.db")
    demo = build_app(bot, title=variant.prompt.variables.get("company", "Assistant"), arena=arena, store=store,
                     limits=limits, reports=Path(args.reports))
    demo.queue(default_concurrency_limit=args.concurrency)
    server = FastAPI(title="assistant", docs_url=None, redoc_url=None, openapi_url=None)
    extra = [Bot(load_any_variant(Path(f), args.overrides), args.engine) for f in args.api_variant]
    for other in extra:
        other.check()
    api = {b.variant.name: b for b in [bot, *arena.values(), *extra]}
    add_openai_routes(server, api, limits, credentials)
    print(f"API models: {', '.join(api)}; engines: "
          f"{', '.join(sorted({b.engine_name for b in api.values()}))}", file=sys.stderr)
    server = gr.mount_gradio_app(server, demo, path="", auth=credentials)
    return server, list(api.values())


def preload(bots: list) -> None:
    """Registers every served adapter with its engine, then loads the engines: llama.cpp starts once, with
    all its adapters, instead of restarting as each variant is first asked."""
    engines = {id(b.engine): b.engine for b in bots}
    for engine in engines.values():
        engine.warm()


def limit_torch_threads(bots: list) -> None:
    """With llama.cpp generating, torch only embeds retrieval queries: one thread, so that its pool does not
    spin on the cores llama.cpp's threads need (two pools on the same cores slow both by 10x or more)."""
    if any(b.engine_name == "llamacpp" for b in bots):
        import torch

        torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from assistant.cli import EXIT_USER_ERROR, USER_ERRORS

    args = parse_args(argv)
    try:
        server, bots = build_server(args)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    limit_torch_threads(bots)
    if not args.no_preload:
        threading.Thread(target=preload, args=(bots,), daemon=True).start()
    print(f"app: http://{args.host}:{args.port}/   API: http://{args.host}:{args.port}/v1", file=sys.stderr)
    uvicorn.run(server, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
