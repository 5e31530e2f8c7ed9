"""The interface every generation engine implements (``Engine``), what a request asks of it (``Sampling``),
what it returns (``Completion``), and the helpers engines share (stop texts, CPU threads). The engines in this
package import from here; ``assistant.engines`` picks and shares them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from assistant.config import GenerationSettings, Variant


class EngineError(RuntimeError):
    """An engine cannot run this variant here (not installed, no GGUF, no GPU); the message says why."""


@dataclass(frozen=True)
class Sampling:
    """What one request asks of the decoder: the variant's ``GenerationSettings`` (see there what each one
    means) with the request's own overrides, and stop texts. Built with ``Sampling.of``."""

    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    seed: int
    stop: tuple[str, ...] = ()
    """Texts that end the answer (not included in it)."""

    @property
    def greedy(self) -> bool:
        """Temperatures below 1e-4 decode greedily: dividing logits by less overflows to inf (measured: a
        request with temperature 5e-146 crashed sampling)."""
        return self.temperature < 1e-4

    @classmethod
    def of(cls, settings: GenerationSettings, **overrides: Any) -> "Sampling":
        values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls) if hasattr(settings, f.name)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["stop"] = tuple(values.get("stop") or ())
        return cls(**values)


@dataclass
class Completion:
    """One generated answer."""

    text: str
    new_tokens: int
    finish_reason: str
    """'stop': the model ended its turn or a stop text came; 'length': cut at max_new_tokens."""


class Engine:
    """The interface every engine implements."""

    name = "engine"

    def add_adapter(self, folder: Path | None, variant: Variant) -> Any:
        """Registers a LoRA adapter folder (None: the bare base) of ``variant`` and returns the handle that
        requests name it by."""
        raise NotImplementedError

    def stream(self, input_ids: list[int], adapter: Any, sampling: Sampling,
               stats: dict[str, Any] | None = None) -> Iterator[str]:
        """Yields the answer's text piece by piece. Closing the iterator stops generation. When the stream
        ends, ``stats`` gets ``new_tokens`` and ``finish_reason``."""
        raise NotImplementedError

    def generate(self, prompts: list[list[int]], adapter: Any, sampling: Sampling) -> list[Completion]:
        """Answers many prompts at once (batched as the engine does best), in order."""
        raise NotImplementedError

    def warm(self) -> None:
        """Loads what the first request would (a server's start-up calls this after registering adapters)."""


def cut_at_stop(pieces: Iterator[str], stops: tuple[str, ...], stats: dict[str, Any] | None = None) -> Iterator[str]:
    """Passes pieces through until one of ``stops`` appears, holding back just enough text to catch a stop
    text split across pieces. The stop text itself is never yielded; the source is closed when one is seen."""
    if not stops:
        yield from pieces
        return
    hold = max(len(s) for s in stops) - 1
    buffer = ""
    try:
        for piece in pieces:
            buffer += piece
            hits = [i for i in (buffer.find(s) for s in stops) if i >= 0]
            if hits:
                if buffer[: min(hits)]:
                    yield buffer[: min(hits)]
                if stats is not None:
                    stats["finish_reason"] = "stop"
                return
            if len(buffer) > hold:
                yield buffer[: len(buffer) - hold]
                buffer = buffer[len(buffer) - hold:]
        if buffer:
            yield buffer
    finally:
        close = getattr(pieces, "close", None)
        if close:
            close()


def cut_text(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text up to the first stop text, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def cpu_threads() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
