"""The verbs over one variant: ``chat``, ``render``, ``info``, ``variant``, ``export`` and ``serve``.
Each is a thin function over the library; the parser that calls them is in ``parser.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from assistant.errors import EXIT_USER_ERROR
from assistant.settings_reader import ConfigError
from assistant.variants import load_variant

VARIANT_SHORTCUTS = {"base": "model.base", "quantization": "model.quantization", "device": "model.device",
                     "adapter": "model.adapter"}
"""Options of the variant verbs that stand for a --set of one setting."""


def load_variant_from_args(args: argparse.Namespace):
    """The variant named by --variant, with --set overrides and the shortcut options applied."""
    overrides = list(args.overrides)
    for key, setting in VARIANT_SHORTCUTS.items():
        value = getattr(args, key, None)
        if value is not None:
            overrides.append(f"{setting}={json.dumps(value)}")
    return load_variant(args.variant, overrides)


def _history(args: argparse.Namespace, message: str) -> list[dict[str, str]]:
    history: list[dict[str, str]] = []
    if args.history:
        path = Path(args.history)
        try:
            history = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(history, list) and all({"role", "content"} <= set(m) for m in history)
        except (OSError, json.JSONDecodeError, AssertionError, TypeError) as exc:
            raise ConfigError(f"{path}: expected a JSON list of {{role, content}} messages ({exc})") from None
    return history + [{"role": "user", "content": message}]


def cmd_render(args: argparse.Namespace) -> int:
    from assistant.generate import Bot

    bot = Bot(load_variant_from_args(args))
    bot.check()
    prepared = bot.prepare(_history(args, args.message))
    tokenizer = bot.tokenizer
    print(f"# variant {bot.variant.name} ({bot.variant.variant_hash()}), template {bot.template.name} "
          f"({bot.template.content_hash})")
    print("\n## Messages")
    for m in prepared.messages:
        count = len(tokenizer(m["content"], add_special_tokens=False)["input_ids"])
        print(f"\n--- {m['role']} ({count} tokens)")
        print(m["content"])
    print("\n## Prompt text (after the tokenizer's chat template)\n")
    print(prepared.text)
    print("## Tokens")
    print(f"prompt: {len(prepared.input_ids)}  budget: {prepared.budget}  "
          f"reserved for the answer: {bot.variant.generation.max_new_tokens}  "
          f"history messages dropped: {prepared.dropped_messages}")
    if prepared.passages:
        print("passages: " + "; ".join(p.cite() for p in prepared.passages))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from assistant.generate import Bot

    bot = Bot(load_variant_from_args(args), args.engine)
    bot.check()
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Chatting with {bot.variant.name}. /reset starts over, /quit or Ctrl-D ends.", file=sys.stderr)
    history: list[dict[str, str]] = []
    while True:
        if interactive:
            print("you> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            break
        message = line.strip()
        if not message:
            continue
        if message == "/quit":
            break
        if message == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": message})
        stats: dict = {}
        prepared, stream = bot.start(history, stats=stats)
        pieces = []
        print("bot> " if interactive else "", end="", flush=True)
        for piece in stream:
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        verified = stats.get("verified")  # generation.verify's check, made once the answer is complete
        if verified and verified.changed:  # the checked answer replaces the streamed one
            print(f"checked: {verified.note()}", file=sys.stderr, flush=True)
            print(("bot> " if interactive else "") + verified.text, flush=True)
            pieces = [verified.text]
        if prepared.passages and not args.no_sources:
            print("sources: " + "; ".join(p.cite() for p in prepared.passages), flush=True)
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from assistant.generate import Bot, end_of_turn_ids

    variant = load_variant_from_args(args)
    bot = Bot(variant, args.engine)
    base = bot.base
    params = sum(p.numel() for p in base.model.parameters())
    rows = {
        "variant": f"{variant.name} ({variant.variant_hash()})",
        "base": variant.model.base,
        "resolved": base.source.location,
        "device": base.device,
        "compute dtype": str(base.dtype).replace("torch.", ""),
        "quantization": base.quantization,
        "adapter": variant.model.adapter or "none",
        "parameters": f"{params / 1e6:.1f}M",
        "memory footprint": f"{base.memory_bytes() / 2**20:.1f} MiB",
        "context window": str(bot.context_window),
        "end of turn": ", ".join(base.tokenizer.convert_ids_to_tokens(end_of_turn_ids(base.tokenizer, base.model))),
        "engine": bot.engine_name,
        "template": variant.prompt.template,
        "retrieval": f"{variant.context.retriever} top {variant.context.top_k} over {variant.context.documents}"
        if variant.context.documents else "off",
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_variant(args: argparse.Namespace) -> int:
    from assistant.config import commented_yaml

    print(commented_yaml(load_variant_from_args(args)), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from assistant.serve.server import main as serve

    return serve(args.extra)


def cmd_export(args: argparse.Namespace) -> int:
    """Export an adapter for other engines. 'gguf' writes adapter.gguf (F32 LoRA; the PEFT scale folded in,
    query/key rows in llama.cpp's order), plus base.gguf (unless serving.gguf names the base's file), a
    Modelfile for Ollama and export.yaml, whose hashes tie the files to the adapter's card. 'merged' writes
    the base with the adapter merged in, in full precision, as a Hugging Face folder."""
    from assistant.models.export import ExportError, export

    source = Path(args.source)
    variant = load_variant(source, args.overrides)
    out = Path(args.out) if args.out else (variant.resolve(variant.model.adapter).parent / "exports"
                                            / f"{variant.resolve(variant.model.adapter or '.').name}-{args.to}")
    try:
        folder = export(variant, args.to, out, args.base_type)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {folder}")
    for line in (folder / "export.yaml").read_text().splitlines():
        print(f"  {line}")
    return 0
