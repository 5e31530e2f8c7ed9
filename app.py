"""The chat app: a Gradio Blocks page that streams answers from one variant and cites its passages.

    python app.py [--variant FILE] [--host 127.0.0.1] [--port 7860]

Nothing heavy happens at import: the model loads in the background once the server is up (or on the
first message, whichever comes first). Answers come from ``assistant.generate.Bot``, the same path the
CLI and the evaluation use.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent
DEFAULT_VARIANT = ROOT / "configs" / "tidewater.yaml"
REPORTS = ROOT / "eval" / "reports"
SOURCES_MARK = "\n\n---\n**Sources:** "
EXAMPLES = [
    "How long do I have to return a grinder?",
    "My espresso machine shows error E3, what does it mean?",
    "Can I pause my coffee subscription?",
]


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


def build_app(bot, title: str = "Assistant"):
    """Builds the Blocks app around a Bot (which may not have loaded its model yet)."""
    import gradio as gr

    from assistant.cli import USER_ERRORS

    def respond(message: str, chat: list[dict]):
        message = (message or "").strip()
        if not message:
            yield "", chat, gr.skip()
            return
        history = to_model_history(chat) + [{"role": "user", "content": message}]
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

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}\nVariant `{bot.variant.name}` ({bot.variant.variant_hash()})")
        with gr.Tab("Chat"):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Conversation", height=460, elem_id="chat")
                    box = gr.Textbox(label="Your message", placeholder="Ask a question and press Enter",
                                     elem_id="message", autofocus=True)
                    with gr.Row():
                        send = gr.Button("Send", variant="primary")
                        clear = gr.Button("New conversation")
                    gr.Examples(EXAMPLES, inputs=box)
                with gr.Column(scale=2):
                    gr.Markdown("### Retrieved passages")
                    sources = gr.Markdown("_Passages used for the latest answer appear here._", elem_id="sources")
        box.submit(respond, [box, chatbot], [box, chatbot, sources], api_name="respond")
        send.click(respond, [box, chatbot], [box, chatbot, sources], api_name=False)
        clear.click(lambda: ([], "", "_Passages used for the latest answer appear here._"), None,
                    [chatbot, box, sources], api_name=False)
    return demo


def served_variant_file(chosen: str | None, reports: Path) -> tuple[Path, str]:
    """The file to serve and why: the one asked for, else the latest evaluation winner, else the demo."""
    from assistant.report import latest_winner

    if chosen:
        return Path(chosen), "chosen with --variant"
    winner = latest_winner(reports)
    if winner is not None:
        return winner, "the winner of the latest evaluation"
    return DEFAULT_VARIANT, "no evaluation winner found, serving the demo variant"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a variant as a chat app in the browser.")
    parser.add_argument("--variant", metavar="FILE",
                        help="variant YAML file, or an evaluation report's winner.yaml, to serve (default: the "
                        "winner of the latest evaluation under --reports, or else "
                        f"{DEFAULT_VARIANT.relative_to(ROOT)})")
    parser.add_argument("--reports", default=str(REPORTS), metavar="DIR",
                        help=f"where to look for the latest evaluation winner (default: {REPORTS.relative_to(ROOT)})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a variant setting, e.g. --set generation.max_new_tokens=64 (repeatable)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="requests handled at once (default 2); generation itself runs one request at a "
                        "time per loaded model, the rest wait in the queue")
    parser.add_argument("--no-preload", action="store_true",
                        help="load the model on the first message instead of right after start-up")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from assistant.cli import EXIT_USER_ERROR, USER_ERRORS
    from assistant.config import load_variant
    from assistant.generate import Bot
    from assistant.report import is_winner_file, load_winner

    args = parse_args(argv)
    try:
        path, why = served_variant_file(args.variant, Path(args.reports))
        variant = load_winner(path, args.overrides) if is_winner_file(path) else load_variant(path, args.overrides)
        print(f"serving {variant.name} ({variant.variant_hash()}) from {path}: {why}", file=sys.stderr)
        bot = Bot(variant)
        bot.check()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    demo = build_app(bot, title=bot.variant.prompt.variables.get("company", "Assistant"))
    demo.queue(default_concurrency_limit=args.concurrency)
    if not args.no_preload:
        threading.Thread(target=lambda: bot.base, daemon=True).start()
    demo.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
