"""The served variants on their engines: one Bot per variant, every adapter registered before any engine
starts, engines warmed in the background, and thread pools sized so that they do not fight over the cores.

Threads. llama.cpp runs ``serving.threads`` compute threads (default: every core this process may use);
torch then only embeds retrieval queries and gets one thread, since two pools spinning on the same cores
slow each other by 10x or more. The web server's threads mostly wait on I/O. On a bigger machine, give
llama.cpp the physical cores (``--set serving.threads=N``) and raise ``serving.parallel`` to decode more
requests together; with the transformers engine torch keeps its default (one thread per core).
"""

from __future__ import annotations

import sys
from pathlib import Path

from assistant.generate import Bot
from assistant.serve.winner import arena_variants
from assistant.variants import load_variant


class ServedBots:
    """The chat variant, the arena's variants and the API's extra variants, as Bots.

    Args:
        chat: the variant the Chat tab serves.
        arena: name -> variant for the Arena tab.
        extra: more variants for the API only.
        engine: engine for all of them (None: each variant's ``serving.engine``).
        merge: on llama.cpp, serve the chat variant's adapter folded into a copy of its base (bare decode
            speed); the arena and the API's other variants keep per-request LoRA on the shared base.
    """

    def __init__(self, chat, arena: dict, extra: list, engine: str | None = None, merge: bool = True):
        self.chat = Bot(chat, engine, merged=merge)
        self.arena = {name: Bot(v, engine) for name, v in arena.items()}
        extras = [Bot(v, engine) for v in extra]
        self.api = {b.variant.name: b for b in [self.chat, *self.arena.values(), *extras]}
        for bot in self.api.values():
            bot.check()  # templates, examples, documents: user errors surface before the server starts

    @classmethod
    def from_files(cls, chat_file: Path, arena_files: list[str], api_files: list[str], overrides: list[str],
                   engine: str | None = None, merge: bool = True) -> "ServedBots":
        return cls(load_variant(chat_file, overrides), arena_variants(arena_files, chat_file, overrides),
                   [load_variant(Path(f), overrides) for f in api_files], engine, merge)

    @property
    def engines(self) -> list[str]:
        return sorted({b.engine_name for b in self.api.values()})

    def limit_threads(self) -> None:
        """One torch thread when llama.cpp generates (see the module docstring)."""
        if "llamacpp" in self.engines:
            import torch

            torch.set_num_threads(1)

    def preload(self) -> None:
        """Registers every adapter with its engine, then loads the engines: llama.cpp starts once with all
        its adapters instead of restarting as each variant is first asked."""
        engines = {id(b.engine): b.engine for b in self.api.values()}
        for engine in engines.values():
            engine.warm()
        print(f"ready: {', '.join(self.api)} on {', '.join(self.engines)}", file=sys.stderr)
