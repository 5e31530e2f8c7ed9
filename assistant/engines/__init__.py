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
adapter is registered once (``Engine.add_adapter``) and picked per request. The interface they implement is
in ``base.py``; this module picks, builds and shares them, importing each engine only when it is used.
"""

from __future__ import annotations

import importlib.util
import threading

from assistant.config import Variant
from assistant.engines.base import Completion, Engine, EngineError, Sampling, cpu_threads, cut_at_stop, cut_text  # noqa: F401  (the interface, re-exported for callers)


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
        from assistant.models.export import gguf_source

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
        from assistant.models.export import base_gguf

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
        from assistant.engines.llamacpp_engine import LlamaCppEngine
        from assistant.models.export import base_gguf
        from assistant.models.loading import shared_tokenizer

        tokenizer = shared_tokenizer(variant.model.base, variant.model.trust_remote_code)[0]
        return LlamaCppEngine(base_gguf(variant), variant.serving, tokenizer)
    if name == "openai":
        from assistant.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(variant)
    from assistant.engines.vllm_engine import VllmEngine

    return VllmEngine(variant)
