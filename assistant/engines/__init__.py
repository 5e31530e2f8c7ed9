"""Generation engines: one interface from rendered token ids to answer text, whatever runs the model.

    Bot.prepare (our templates, our tokenizer) -> token ids -> Engine.stream / Engine.generate -> text

Every engine receives the prompt as the token ids that ``Bot.prepare`` produced (or, for a remote server,
their exact text), so every engine sees, token for token, the prompt that training used. Engines:

    transformers  the model in PyTorch (NF4 or full weights); one request at a time per loaded base
    llamacpp      llama.cpp in process (xllamacpp): continuous batching, one base shared by every variant,
                  LoRA adapters loaded once and chosen per request; runs the base's GGUF weights
    openai        any OpenAI-compatible server by URL (vLLM --enable-lora, llama-server, TGI, Ollama)
    vllm          vLLM in process on GPUs, a LoRARequest per variant, tensor parallelism

Engines are shared per process (``shared_engine``): variants on the same base use one engine, and an
adapter is registered once (``Engine.add_adapter``) and picked per request.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
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


def available(name: str) -> bool:
    """Whether an engine's library is installed (it is imported only when used)."""
    module = {"transformers": "transformers", "llamacpp": "xllamacpp", "vllm": "vllm", "openai": "httpx"}[name]
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def resolve_engine(variant: Variant, requested: str | None = None) -> str:
    """The engine to use: the one asked for, else the variant's, with 'auto' resolved.

    'auto' picks the fastest engine measured to work for the device and base (bench/RESULTS.md): vLLM on a
    CUDA GPU when installed, else transformers on the GPU; on the CPU llama.cpp when installed and the
    base has a GGUF file (the embedded model, or ``serving.gguf``), else transformers. Asking for
    'llamacpp' by name also writes a GGUF once for a Llama-architecture base that has none.
    """
    name = requested or variant.serving.engine
    if name != "auto":
        return name
    if variant.model.device != "cpu" and _cuda():
        return "vllm" if available("vllm") else "transformers"
    if available("llamacpp"):
        from assistant.engines.llamacpp_engine import gguf_source

        if gguf_source(variant) == "file":  # a GGUF to hand; writing one for a big base is opt-in
            return "llamacpp"
    return "transformers"


_ENGINES: dict[tuple, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(variant: Variant, name: str | None = None) -> Engine:
    """The process's engine for this variant's base (one per engine kind and base settings)."""
    name = resolve_engine(variant, name)
    m, s = variant.model, variant.serving
    if name == "transformers":
        key: tuple = (name, m.base, m.quantization, m.dtype, m.device, m.trust_remote_code)
    elif name == "llamacpp":
        from assistant.engines.llamacpp_engine import base_gguf

        key = (name, str(base_gguf(variant)), s.threads, s.parallel, s.context_tokens)
    elif name == "openai":
        key = (name, s.url, s.api_key_env)
    elif name == "vllm":
        key = (name, m.base, m.trust_remote_code, s.tensor_parallel_size, s.parallel)
    else:
        raise EngineError(f"unknown engine {name!r}")
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _build(name, variant)
        return _ENGINES[key]


def _build(name: str, variant: Variant) -> Engine:
    if not available(name):
        package = {"llamacpp": "xllamacpp", "vllm": "vllm", "openai": "httpx", "transformers": "transformers"}[name]
        raise EngineError(f"engine {name!r} needs the {package!r} package: pip install {package}")
    if name == "transformers":
        from assistant.engines.transformers_engine import TransformersEngine

        return TransformersEngine(variant.model)
    if name == "llamacpp":
        from assistant.engines.llamacpp_engine import LlamaCppEngine, base_gguf
        from assistant.models import shared_tokenizer

        tokenizer = shared_tokenizer(variant.model.base, variant.model.trust_remote_code)[0]
        return LlamaCppEngine(base_gguf(variant), variant.serving, tokenizer)
    if name == "openai":
        from assistant.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(variant)
    from assistant.engines.vllm_engine import VllmEngine

    return VllmEngine(variant)


def cpu_threads() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
