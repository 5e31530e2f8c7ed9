"""The vLLM engine, in process, for GPUs: ``vllm.LLM`` with ``enable_lora``, one ``LoRARequest`` per
adapter (loaded once, chosen per request, mixed in one batch) and ``tensor_parallel_size`` for several GPUs.
Prompts go in as our token ids. ``vllm.LLM`` has no streaming call, so ``stream`` yields the whole answer as
one piece; for token-by-token streaming run ``vllm serve --enable-lora`` and use the 'openai' engine.
An optional extra (``pip install vllm``), exercised only where a GPU is present."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

from assistant.config import Variant
from assistant.engines.base import Completion, Engine, EngineError, Sampling


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, variant: Variant):
        self.variant = variant
        self._llm: Any = None
        self._lock = threading.Lock()  # vllm.LLM is not thread-safe: one call at a time, batched inside
        self._adapters: dict[Path, Any] = {}
        self.max_rank = 8

    def add_adapter(self, folder: Path | None, variant: Variant) -> Any:
        import json

        from vllm.lora.request import LoRARequest

        if folder is None:
            return None
        if folder not in self._adapters:
            rank = json.loads((folder / "adapter_config.json").read_text()).get("r", 8)
            if self._llm is not None and rank > self.max_rank:  # the engine is sized for the ranks it started with
                raise EngineError(f"vLLM was started with max_lora_rank {self.max_rank}; {folder} has rank {rank}")
            self._adapters[folder] = LoRARequest(folder.name, len(self._adapters) + 1, str(folder))
            self.max_rank = max(self.max_rank, rank)
        return self._adapters[folder]

    @property
    def llm(self) -> Any:
        from vllm import LLM

        from assistant.models.loading import resolve_base

        with self._lock:
            if self._llm is None:
                m, s = self.variant.model, self.variant.serving
                self._llm = LLM(model=resolve_base(m.base).location, enable_lora=True, max_lora_rank=self.max_rank,
                                max_loras=max(1, len(self._adapters)), max_num_seqs=max(s.parallel, 8),
                                tensor_parallel_size=s.tensor_parallel_size, trust_remote_code=m.trust_remote_code)
            return self._llm

    def warm(self) -> None:
        _ = self.llm

    def _params(self, sampling: Sampling) -> Any:
        from vllm import SamplingParams

        return SamplingParams(max_tokens=sampling.max_new_tokens, temperature=0.0 if sampling.greedy else sampling.temperature,
                              top_p=sampling.top_p, seed=sampling.seed, stop=list(sampling.stop) or None,
                              repetition_penalty=sampling.repetition_penalty)

    def generate(self, prompts: list[list[int]], adapter: Any, sampling: Sampling) -> list[Completion]:
        llm = self.llm
        with self._lock:
            outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], self._params(sampling),
                                   lora_request=adapter, use_tqdm=False)
        return [Completion(o.outputs[0].text, len(o.outputs[0].token_ids), o.outputs[0].finish_reason or "stop")
                for o in outputs]

    def stream(self, input_ids: list[int], adapter: Any, sampling: Sampling,
               stats: dict[str, Any] | None = None) -> Iterator[str]:
        completion = self.generate([input_ids], adapter, sampling)[0]
        if stats is not None:
            stats["new_tokens"] = completion.new_tokens
            stats.setdefault("finish_reason", completion.finish_reason)
        if completion.text:
            yield completion.text
