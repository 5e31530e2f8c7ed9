"""The server: the Gradio app at / and the OpenAI-compatible API at /v1 on one FastAPI app, run by uvicorn.

    assistant serve [--variant FILE] [--arena FILE ...] [--engine NAME] [--data feedback/] [--auth USER:PASSWORD]
                    [--no-redact | --redact-pattern LABEL=REGEX ... --redact-patterns FILE ...]
    python app.py ...   (the same)

Nothing heavy happens at import: models load in the background once the server is up (or on the first
message).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from assistant.config import ENGINES
from assistant.serve.winner import DEFAULT_VARIANT, ROOT

REPORTS = ROOT / "eval" / "reports"
FEEDBACK = ROOT / "feedback"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="assistant serve", description="Serve a variant as a chat app in the browser, with a blind "
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
    parser.add_argument("--redact", action=argparse.BooleanOptionalAction, default=True,
                        help="replace personal data in what people type and what the variants answer with "
                        "[EMAIL], [PHONE], [CARD] and [LABEL] of --redact-pattern before it is stored in the "
                        "feedback database (default: on, since the database outlives the conversation and its "
                        "pairs go into training; items the served variants' documents publish, such as the "
                        "support address, are kept). --no-redact stores text as it was typed and shown")
    parser.add_argument("--redact-pattern", action="append", default=[], metavar="LABEL=REGEX",
                        help=r"a domain's own kind of personal data, e.g. ORDER=\bTW-\d{7}\b (stored as [ORDER]; "
                        "repeatable)")
    parser.add_argument("--redact-patterns", action="append", default=[], metavar="FILE",
                        help="a YAML file of LABEL: REGEX (or LABEL: [REGEX, ...]) domain patterns, e.g. "
                        "configs/tidewater-redact.yaml (repeatable)")
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
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20,
                        help="largest API request body in bytes (default 1048576); larger ones get 413 unread")
    parser.add_argument("--max-history", type=int, default=40,
                        help="most messages in one conversation (default 40); beyond it people are asked to "
                        "start a new one")
    parser.add_argument("--engine", choices=ENGINES,
                        help="generation engine for every served variant (default: each variant's serving.engine, "
                        "'auto': llama.cpp on the CPU for a base with a GGUF file, vLLM on a GPU when installed, "
                        "else transformers)")
    parser.add_argument("--unmerged", action="store_true",
                        help="on llama.cpp, serve the chat variant's adapter per request on the shared base instead "
                        "of from a copy of the base with the adapter folded in (written once; bare decode speed)")
    parser.add_argument("--no-preload", action="store_true",
                        help="load the model on the first message instead of right after start-up")
    return parser.parse_args(argv)


def build_server(args: argparse.Namespace):
    """The FastAPI server with the app and the API mounted, and the served Bots (not loaded yet)."""
    import gradio as gr
    from fastapi import FastAPI

    from assistant.models.loading import import_model_libraries
    from assistant.serve.api import Guards, Limits, add_openai_routes
    from assistant.serve.pool import ServedBots
    from assistant.serve.ui import build_app
    from assistant.serve.winner import served_variant_file

    redactor = redactor_of(args)  # a malformed pattern stops the start-up before anything loads
    import_model_libraries()  # before any thread loads a model: concurrent lazy imports can fail
    path, why = served_variant_file(args.variant, Path(args.reports))
    served = ServedBots.from_files(path, args.arena, args.api_variant, args.overrides, args.engine,
                                   merge=not args.unmerged)
    variant = served.chat.variant
    print(f"serving {variant.name} ({variant.variant_hash()}) from {path}: {why}", file=sys.stderr)
    if served.arena:
        print(f"arena: {', '.join(served.arena)}", file=sys.stderr)
    credentials = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth must be USER:PASSWORD")
        credentials = (user, password)
    limits = Limits(args.max_message_chars, args.max_history, args.concurrency, args.max_body_bytes)
    if not credentials and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without --auth: anyone who can reach this address can chat, "
              "vote and use the API. Set --auth USER:PASSWORD.", file=sys.stderr)
    store = feedback_store(args, redactor, [b.variant.resolve(b.variant.context.documents)
                                            for b in served.api.values() if b.variant.context.documents])
    demo = build_app(served.chat, title=variant.prompt.variables.get("company", "Assistant"), arena=served.arena,
                     store=store, limits=limits, reports=Path(args.reports))
    demo.queue(default_concurrency_limit=args.concurrency)
    server = FastAPI(title="assistant", docs_url=None, redoc_url=None, openapi_url=None)
    server.add_middleware(Guards, limits=limits)
    add_openai_routes(server, served.api, limits, credentials)
    print(f"API models: {', '.join(served.api)}; engines: {', '.join(served.engines)}", file=sys.stderr)
    server = gr.mount_gradio_app(server, demo, path="", auth=credentials)
    return server, served


def redactor_of(args: argparse.Namespace):
    """The Redactor that --redact and the domain patterns ask for; None with --no-redact."""
    from assistant.redaction import Redactor, load_patterns

    if not args.redact:
        if args.redact_pattern or args.redact_patterns:
            raise ValueError("--redact-pattern and --redact-patterns have no effect with --no-redact")
        return None
    return Redactor(load_patterns(args.redact_pattern, args.redact_patterns))


def feedback_store(args: argparse.Namespace, redactor=None, documents: list[Path] | None = None):
    """The app's feedback store under --data, redacting on write unless --no-redact; what ``documents`` (the
    served variants' documents folders) publish is kept."""
    from assistant.feedback import FeedbackStore
    from assistant.redaction import documents_text

    if redactor is not None:
        redactor.published(documents_text(documents or []))
        print(f"feedback: stored with {', '.join(redactor.kinds)} redacted ({len(redactor.public)} published items "
              "kept)", file=sys.stderr)
    else:
        print("feedback: stored as typed and shown (--no-redact)", file=sys.stderr)
    return FeedbackStore(Path(args.data) / "feedback.db", redactor=redactor)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from assistant.errors import EXIT_USER_ERROR, USER_ERRORS

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = parse_args(argv)
    try:
        server, served = build_server(args)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    served.limit_threads()
    if not args.no_preload:
        threading.Thread(target=served.preload, daemon=True).start()
    print(f"app: http://{args.host}:{args.port}/   API: http://{args.host}:{args.port}/v1", file=sys.stderr)
    uvicorn.run(server, host=args.host, port=args.port, log_level="warning")
    return 0
