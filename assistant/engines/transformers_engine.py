"""The transformers engine: ``model.generate`` on a shared base (NF4 or full weights), adapters switched per
request with peft. One request generates at a time per base (the adapter is switched on the shared model);
batches use left padding."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

from assistant.config import ModelSettings
from assistant.engines.base import Completion, Engine, Sampling, cut_text
from assistant.models.loading import LoadedBase, attach_adapter, shared_base, use_adapter


def end_of_turn_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's EOS, the model's EOS ids, and the token the
    chat template writes right after an assistant message (``<|im_end|>`` for ChatML, ``<|eot_id|>`` for
    Llama 3), found by rendering a probe conversation rather than hard-coding names."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token in configured if isinstance(configured, list) else [configured]:
        if token is not None and token not in ids:
            ids.append(token)
    marker = "MARKER7f3a"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False
        )
        tail = tokenizer(text.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
        if tail and tail[0] in tokenizer.all_special_ids and tail[0] not in ids:
            ids.append(tail[0])
    except Exception:  # a tokenizer without a chat template: EOS is all we have
        pass
    return ids


class _StopFlag:
    """A stopping criterion that ends generation when the reader of a stream goes away."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _counting_streamer(tokenizer: Any, end_ids: list[int]):
    """A TextIteratorStreamer that also counts the answer's tokens (end-of-turn excluded)."""
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        new_tokens = 0

        def put(self, value):
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                self.new_tokens += sum(1 for t in value.reshape(-1).tolist() if t not in end_ids)
            super().put(value)

    return CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)


class TransformersEngine(Engine):
    """``generate`` on the process's shared base for these model settings."""

    name = "transformers"

    def __init__(self, model: ModelSettings):
        self.model_settings = model
        self._end_ids: list[int] | None = None

    @property
    def base(self) -> LoadedBase:
        m = self.model_settings
        base = shared_base(m.base, m.quantization, m.dtype, m.device, m.trust_remote_code)
        if self._end_ids is None:
            self._end_ids = end_of_turn_ids(base.tokenizer, base.model)
        return base

    @property
    def end_ids(self) -> list[int]:
        """Token ids that end the answer (found once the base is loaded)."""
        _ = self.base
        return self._end_ids

    def warm(self) -> None:
        _ = self.end_ids

    def add_adapter(self, folder: Path | None, variant: Any = None) -> str | None:
        """Loads the adapter onto the shared base (peft named adapters); returns its name."""
        return attach_adapter(self.base, folder) if folder else None

    def _kwargs(self, sampling: Sampling) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "eos_token_id": self.end_ids,
            "pad_token_id": self.base.tokenizer.pad_token_id,
            "repetition_penalty": sampling.repetition_penalty,
        }
        if not sampling.greedy:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def stream(self, input_ids: list[int], adapter: str | None, sampling: Sampling,
               stats: dict[str, Any] | None = None) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteriaList

        base = self.base
        streamer = _counting_streamer(base.tokenizer, self.end_ids)
        stop = _StopFlag()
        failure: list[BaseException] = []
        ids = torch.tensor([input_ids], device=base.model.device)

        def run() -> None:
            try:
                with base.lock, use_adapter(base, adapter) as model, torch.inference_mode():
                    torch.manual_seed(sampling.seed)
                    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                   stopping_criteria=StoppingCriteriaList([stop]), **self._kwargs(sampling))
            except BaseException as exc:  # handed to the reader below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stop.event.set()
            worker.join()
            if stats is not None:
                stats["new_tokens"] = streamer.new_tokens
                stats.setdefault("finish_reason", "length" if streamer.new_tokens >= sampling.max_new_tokens else "stop")
        if failure:
            raise failure[0]

    def generate(self, prompts: list[list[int]], adapter: str | None, sampling: Sampling) -> list[Completion]:
        import torch

        base = self.base
        tokenizer = base.tokenizer
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with base.lock, use_adapter(base, adapter) as model, torch.inference_mode():
            torch.manual_seed(sampling.seed)
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 **self._kwargs(sampling))
        completions = []
        for row in out[:, width:].tolist():
            kept, ended = [], False
            for token in row:
                if token in self.end_ids:
                    ended = True
                    break
                kept.append(token)
            text, stopped = cut_text(tokenizer.decode(kept, skip_special_tokens=True), sampling.stop)
            finish = "stop" if ended or stopped or len(kept) < sampling.max_new_tokens else "length"
            completions.append(Completion(text, len(kept), finish))
        return completions
