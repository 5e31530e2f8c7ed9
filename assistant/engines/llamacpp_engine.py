"""The llama.cpp engine: llama.cpp's own server in this process (the ``xllamacpp`` package), driven through
its Python calls rather than HTTP.

- Continuous batching: up to ``serving.parallel`` requests decode together; the KV cache
  (``serving.context_tokens``) is shared among them.
- One base for every variant. Adapters are converted once to GGUF LoRA (cached by content), loaded at start
  with ``lora_init_without_apply`` and chosen per request by scale, so the arena can alternate between
  adapters without reloading anything. Registering a new adapter after start restarts the server once.
- Prompts go in as our token ids and answers come back as token ids (with each token's log-probability),
  decoded by our tokenizer: llama.cpp never tokenizes or detokenizes our text, so a streamed answer equals
  the batched one, and both decode exactly as the transformers engine would decode the same tokens.
- Threads: ``serving.threads`` (default: the cores this process may use). The server sets torch to one
  thread, since two thread pools spinning on the same cores slow each other by 10x or more.
"""

from __future__ import annotations

import queue
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from assistant.config import ServingSettings, Variant
from assistant.engines.base import Completion, Engine, EngineError, Sampling, cpu_threads, cut_text
from assistant.models.export import adapter_gguf


class LlamaCppEngine(Engine):
    """llama.cpp's server in process, for one base GGUF and every adapter registered on it."""

    name = "llamacpp"

    def __init__(self, gguf: Path, serving: ServingSettings, tokenizer: Any):
        self.gguf = gguf
        self.tokenizer = tokenizer
        self.serving = serving
        self.threads = serving.threads or cpu_threads()
        self.adapters: list[Path] = []
        self._server: Any = None
        self._lock = threading.Condition()
        self._active = 0

    # -- life cycle ------------------------------------------------------------------------------------

    def add_adapter(self, folder: Path | None, variant: Variant) -> int | None:
        """Converts the adapter to GGUF LoRA (once) and returns its index in the server's adapter list."""
        if folder is None:
            return None
        path = adapter_gguf(folder, variant)
        with self._lock:
            if path not in self.adapters:
                self.adapters.append(path)
                if self._server is not None:  # adapters are fixed at start: start again, once idle
                    while self._active:
                        self._lock.wait()
                    self._server = None
            return self.adapters.index(path)

    def _start(self) -> Any:
        import xllamacpp

        p = xllamacpp.CommonParams()
        p.model.path = str(self.gguf)
        p.n_parallel = self.serving.parallel
        p.n_ctx = self.serving.context_tokens
        p.kv_unified = True  # one KV pool shared by the parallel requests
        p.cache_ram_mib = self.serving.prompt_cache_mib
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        p.verbosity = -1
        p.hostnames = ["127.0.0.1"]
        p.api_keys = [secrets.token_hex(16)]  # its HTTP listener is not ours to expose: nobody has the key
        adapters = []
        for path in self.adapters:
            info = xllamacpp.CommonAdapterLoraInfo(str(path), 0.0)
            adapters.append(info)
        p.lora_adapters = adapters
        p.lora_init_without_apply = True
        try:
            return xllamacpp.Server(p)
        except Exception as exc:
            raise EngineError(f"llama.cpp could not load {self.gguf}: {exc}") from None

    def warm(self) -> None:
        self._acquire()
        self._release()

    def _acquire(self) -> Any:
        with self._lock:
            if self._server is None:
                self._server = self._start()
            self._active += 1
            return self._server

    def _release(self) -> None:
        with self._lock:
            self._active -= 1
            self._lock.notify_all()

    # -- requests --------------------------------------------------------------------------------------

    def _request(self, input_ids: list[int], adapter: int | None, sampling: Sampling, stream: bool) -> dict:
        request: dict[str, Any] = {
            "prompt": list(input_ids),
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "repeat_penalty": sampling.repetition_penalty,
            # transformers penalises every token seen, the prompt included: the same window here
            "repeat_last_n": self.serving.context_tokens if sampling.repetition_penalty != 1.0 else 0,
            "stream": stream,
            "n_probs": 1,  # each token's id comes back with its log-probability; we decode the ids
            "cache_prompt": True,
            "lora": [{"id": i, "scale": 1.0 if i == adapter else 0.0} for i in range(len(self.adapters))],
        }
        if sampling.greedy:
            request.update(temperature=0.0, top_k=1)
        if sampling.stop:
            request["stop"] = list(sampling.stop)
        return request

    @staticmethod
    def _token_ids(choice: dict) -> list[int]:
        return [t["id"] for t in ((choice.get("logprobs") or {}).get("content") or [])]

    def stream(self, input_ids: list[int], adapter: int | None, sampling: Sampling,
               stats: dict[str, Any] | None = None) -> Iterator[str]:
        tokens: queue.Queue = queue.Queue()
        closed = threading.Event()
        done = object()
        final: dict[str, Any] = {}

        def on_chunk(chunk: Any) -> bool:
            if isinstance(chunk, dict) and "error" in chunk:
                final["error"] = chunk["error"]
            elif isinstance(chunk, dict) and chunk.get("choices"):
                choice = chunk["choices"][0]
                for token in self._token_ids(choice):
                    tokens.put(token)
                if choice.get("finish_reason"):
                    final["finish_reason"] = choice["finish_reason"]
                if chunk.get("usage"):
                    final["new_tokens"] = chunk["usage"].get("completion_tokens", 0)
            return closed.is_set()  # True stops generation: the reader went away

        def run() -> None:
            server = self._acquire()
            try:
                server.handle_completions(self._request(input_ids, adapter, sampling, True), on_chunk)
            except Exception as exc:  # handed to the reader
                final["error"] = str(exc)
            finally:
                self._release()
                tokens.put(done)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        answer: list[int] = []
        shown = 0
        try:
            while (token := tokens.get()) is not done:
                answer.append(token)
                text = self.tokenizer.decode(answer, skip_special_tokens=True)
                if len(text) > shown and not text.endswith("\ufffd"):  # hold back half a character
                    yield text[shown:]
                    shown = len(text)
            text = self.tokenizer.decode(answer, skip_special_tokens=True)
            if len(text) > shown:
                yield text[shown:]
        finally:
            closed.set()
            worker.join()
            if stats is not None:
                stats["new_tokens"] = final.get("new_tokens", len(answer))
                stats.setdefault("finish_reason", final.get("finish_reason") or "stop")
        if "error" in final:
            raise EngineError(f"llama.cpp: {final['error']}")

    def _complete(self, input_ids: list[int], adapter: int | None, sampling: Sampling) -> Completion:
        server = self._acquire()
        try:
            result = server.handle_completions(self._request(input_ids, adapter, sampling, False))
        finally:
            self._release()
        if not isinstance(result, dict) or "error" in result or not result.get("choices"):
            raise EngineError(f"llama.cpp: {result.get('error') if isinstance(result, dict) else result}")
        choice = result["choices"][0]
        answer = self._token_ids(choice)
        text, stopped = cut_text(self.tokenizer.decode(answer, skip_special_tokens=True), sampling.stop)
        return Completion(text, result.get("usage", {}).get("completion_tokens", len(answer)),
                          "stop" if stopped else choice.get("finish_reason") or "stop")

    def generate(self, prompts: list[list[int]], adapter: int | None, sampling: Sampling) -> list[Completion]:
        """Sends every prompt at once; llama.cpp decodes ``parallel`` of them together."""
        with ThreadPoolExecutor(max_workers=min(len(prompts), self.serving.parallel)) as pool:
            return list(pool.map(lambda ids: self._complete(ids, adapter, sampling), prompts))
