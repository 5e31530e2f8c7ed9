"""The OpenAI-compatible engine: any server that speaks ``/v1/completions`` (vLLM with --enable-lora,
llama-server, TGI, Ollama), by URL. The prompt is sent as the exact text our template rendered, the adapter
is named as the model (vLLM's ``--lora-modules NAME=PATH``), and answers stream back as server-sent events."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from assistant.config import Variant
from assistant.engines.base import Completion, Engine, EngineError, Sampling


class OpenAIEngine(Engine):
    """A remote OpenAI-compatible server at ``serving.url``."""

    name = "openai"

    def __init__(self, variant: Variant):
        import httpx

        s = variant.serving
        self.url = s.url.rstrip("/")
        key = os.environ.get(s.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(600.0, connect=10.0))

    def add_adapter(self, folder: Path | None, variant: Variant) -> dict[str, Any]:
        """The model name to ask for (``serving.model_name``, else the adapter folder's name, else the
        base's) and the tokenizer that turns our token ids back into the rendered text."""
        from assistant.models.loading import shared_tokenizer

        name = variant.serving.model_name or (folder.name if folder else variant.model.base)
        return {"model": name, "tokenizer": shared_tokenizer(variant.model.base, variant.model.trust_remote_code)[0]}

    def _body(self, input_ids: list[int], adapter: dict[str, Any], sampling: Sampling, stream: bool) -> dict:
        body: dict[str, Any] = {
            "model": adapter["model"],
            # the exact text of our rendered prompt (special tokens included): the server tokenizes it back
            "prompt": adapter["tokenizer"].decode(input_ids, skip_special_tokens=False),
            "max_tokens": sampling.max_new_tokens,
            "temperature": 0.0 if sampling.greedy else sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "stream": stream,
        }
        if sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty  # vLLM and llama-server read this
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _fail(self, response: Any) -> None:
        if response.status_code >= 400:
            response.read()
            raise EngineError(f"{self.url}/completions answered {response.status_code}: {response.text[:300]}")

    def stream(self, input_ids: list[int], adapter: dict[str, Any], sampling: Sampling,
               stats: dict[str, Any] | None = None) -> Iterator[str]:
        final: dict[str, Any] = {}
        try:
            with self.client.stream("POST", f"{self.url}/completions",
                                    json=self._body(input_ids, adapter, sampling, True)) as response:
                self._fail(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        final["new_tokens"] = chunk["usage"].get("completion_tokens", 0)
                    for choice in chunk.get("choices") or []:
                        if choice.get("finish_reason"):
                            final["finish_reason"] = choice["finish_reason"]
                        if choice.get("text"):
                            yield choice["text"]
        except Exception as exc:
            if isinstance(exc, (EngineError, GeneratorExit)):
                raise
            raise EngineError(f"{self.url}: {exc}") from None
        finally:
            if stats is not None:
                stats["new_tokens"] = final.get("new_tokens", 0)
                stats.setdefault("finish_reason", final.get("finish_reason") or "stop")

    def generate(self, prompts: list[list[int]], adapter: dict[str, Any], sampling: Sampling) -> list[Completion]:
        """One request per prompt, sent together: the server batches them."""
        from concurrent.futures import ThreadPoolExecutor

        def one(ids: list[int]) -> Completion:
            try:
                response = self.client.post(f"{self.url}/completions", json=self._body(ids, adapter, sampling, False))
            except Exception as exc:
                raise EngineError(f"{self.url}: {exc}") from None
            self._fail(response)
            result = response.json()
            choice = result["choices"][0]
            return Completion(choice.get("text", ""), (result.get("usage") or {}).get("completion_tokens", 0),
                              choice.get("finish_reason") or "stop")

        with ThreadPoolExecutor(max_workers=min(len(prompts), 16)) as pool:
            return list(pool.map(one, prompts))
