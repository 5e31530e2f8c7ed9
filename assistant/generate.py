"""The one path from a conversation to an answer, used by the CLI, the app, evaluation and any API.

    history -> retrieve passages -> render template -> trim history to budget -> chat template -> tokens
            -> generate (streamed token by token, or batched with left padding) -> stop at end of turn

``Bot.prepare`` does everything up to the tokens and is what ``assistant render`` prints, so what you
inspect is exactly what the model receives.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from assistant.config import Variant
from assistant.context import ContextError, Passage, Retriever, load_documents, retrieval_query, trim_history
from assistant.models import LoadedBase, attach_adapter, shared_base, shared_tokenizer, use_adapter
from assistant.prompts import PromptTemplate, find_template, render_messages

DEFAULT_CONTEXT_CAP = 4096


@dataclass
class PreparedPrompt:
    """Everything the model will see for one turn."""

    messages: list[dict[str, str]]
    """Messages produced by the prompt template (system, examples, kept history)."""
    text: str
    """The final prompt text after the tokenizer's chat template, ending where the answer starts."""
    input_ids: list[int]
    passages: list[Passage]
    dropped_messages: int
    """History messages left out to fit the token budget."""
    budget: int
    """Tokens the prompt may use: context window minus the reserved answer length."""


@dataclass
class Reply:
    text: str
    passages: list[Passage]
    prompt_tokens: int
    new_tokens: int
    seconds: float
    first_token_seconds: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)


_RETRIEVERS: dict[tuple, Retriever] = {}
_RETRIEVERS_LOCK = threading.Lock()


def shared_retriever(folder: Path, method: str, chunk_words: int) -> Retriever:
    """One index per (documents folder, method, passage size) in a process."""
    key = (str(folder), method, chunk_words)
    with _RETRIEVERS_LOCK:
        if key not in _RETRIEVERS:
            _RETRIEVERS[key] = Retriever(load_documents(folder, chunk_words), method)
        return _RETRIEVERS[key]


def load_examples(path: Path, count: int) -> list[list[dict[str, str]]]:
    """The first ``count`` conversations of a chat JSONL file, as user/assistant messages."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if len(examples) >= count:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = [
                    {"role": m["role"], "content": m["content"]}
                    for m in row["messages"]
                    if m["role"] in ("user", "assistant")
                ]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ContextError(f"{path}:{number}: not a chat example ({exc})") from None
            examples.append(messages)
    return examples


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


class Bot:
    """A variant ready to answer: shared base (+ adapter), template, retriever, examples.

    Heavy parts load on first use, so building a Bot is free and the app can start before the model.
    """

    def __init__(self, variant: Variant):
        self.variant = variant
        self._base: LoadedBase | None = None
        self._adapter_name: str | None = None
        self._template: PromptTemplate | None = None
        self._retriever: Retriever | None = None
        self._examples: list | None = None
        self._end_ids: list[int] | None = None
        self._load_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------------------

    @property
    def template(self) -> PromptTemplate:
        if self._template is None:
            self._template = find_template(self.variant.prompt.template, [Path(self.variant.root)])
        return self._template

    @property
    def retriever(self) -> Retriever | None:
        ctx = self.variant.context
        if ctx.documents and self._retriever is None:
            self._retriever = shared_retriever(self.variant.resolve(ctx.documents), ctx.retriever, ctx.chunk_words)
        return self._retriever

    @property
    def examples(self) -> list:
        if self._examples is None:
            p = self.variant.prompt
            self._examples = load_examples(self.variant.resolve(p.few_shot), p.few_shot_count) if p.few_shot else []
        return self._examples

    @property
    def base(self) -> LoadedBase:
        with self._load_lock:
            if self._base is None:
                m = self.variant.model
                base = shared_base(m.base, m.quantization, m.dtype, m.device, m.trust_remote_code)
                if m.adapter:
                    self._adapter_name = attach_adapter(base, self.variant.resolve(m.adapter))
                self._end_ids = end_of_turn_ids(base.tokenizer, base.model)
                self._base = base
        return self._base

    @property
    def tokenizer(self) -> Any:
        """The base's tokenizer; available without loading the weights (for rendering)."""
        if self._base is not None:
            return self._base.tokenizer
        return shared_tokenizer(self.variant.model.base, self.variant.model.trust_remote_code)[0]

    def check(self) -> None:
        """Loads template, examples and documents (not the model), raising on any user error."""
        _ = self.template, self.examples, self.retriever

    @property
    def context_window(self) -> int:
        if self.variant.context.context_window:
            return self.variant.context.context_window
        config = shared_tokenizer(self.variant.model.base, self.variant.model.trust_remote_code)[1]
        limit = getattr(config, "max_position_embeddings", None) or DEFAULT_CONTEXT_CAP
        return min(limit, DEFAULT_CONTEXT_CAP)

    # -- prompt ---------------------------------------------------------------------------------------

    def prepare(self, history: list[dict[str, str]]) -> PreparedPrompt:
        """Renders the prompt for the next answer to ``history`` (which ends with a user message)."""
        if not history or history[-1]["role"] != "user":
            raise ValueError("the conversation must end with a user message")
        tokenizer = self.tokenizer
        ctx = self.variant.context
        passages = self.retriever.search(retrieval_query(history), ctx.top_k) if self.retriever else []
        budget = self.context_window - self.variant.generation.max_new_tokens

        def render(kept: list[dict[str, str]]) -> tuple[list[dict[str, str]], str, list[int]]:
            messages = render_messages(
                self.template,
                kept,
                variables=self.variant.prompt.variables,
                passages=passages,
                examples=self.examples,
            )
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return messages, text, tokenizer(text, add_special_tokens=False)["input_ids"]

        kept, dropped = trim_history(history, lambda h: len(render(h)[2]), budget)
        messages, text, ids = render(kept)
        return PreparedPrompt(messages, text, ids, passages, dropped, budget)

    # -- generation -----------------------------------------------------------------------------------

    def _generation_kwargs(self) -> dict[str, Any]:
        g = self.variant.generation
        kwargs: dict[str, Any] = {
            "max_new_tokens": g.max_new_tokens,
            "eos_token_id": self._end_ids,
            "pad_token_id": self.base.tokenizer.pad_token_id,
            "repetition_penalty": g.repetition_penalty,
        }
        if g.temperature > 0:
            kwargs.update(do_sample=True, temperature=g.temperature, top_p=g.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def stream(self, prepared: PreparedPrompt, stats: dict[str, Any] | None = None) -> Iterator[str]:
        """Yields the answer's text piece by piece as tokens are generated; stops at the end of turn.

        Closing the iterator early (the user left) stops generation at the next token. When given,
        ``stats["new_tokens"]`` is set to the number of answer tokens once the stream ends.
        """
        import torch
        from transformers import StoppingCriteriaList

        base = self.base
        streamer = _counting_streamer(base.tokenizer, self._end_ids)
        stop = _StopFlag()
        failure: list[BaseException] = []
        input_ids = torch.tensor([prepared.input_ids], device=base.model.device)

        def run() -> None:
            try:
                with base.lock, use_adapter(base, self._adapter_name) as model, torch.inference_mode():
                    torch.manual_seed(self.variant.generation.seed)
                    model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([stop]),
                        **self._generation_kwargs(),
                    )
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
        if failure:
            raise failure[0]

    def reply(self, history: list[dict[str, str]]) -> Reply:
        """Answers one conversation by streaming, with timing (time to first token, tokens/s)."""
        started = time.perf_counter()
        prepared = self.prepare(history)
        first = None
        pieces = []
        stats: dict[str, Any] = {}
        for piece in self.stream(prepared, stats):
            if first is None:
                first = time.perf_counter() - started
            pieces.append(piece)
        seconds = time.perf_counter() - started
        text = "".join(pieces).strip()
        return Reply(text, prepared.passages, len(prepared.input_ids), stats["new_tokens"], seconds, first)

    def reply_batch(self, histories: list[list[dict[str, str]]], batch_size: int = 8) -> list[Reply]:
        """Answers many conversations, ``batch_size`` at a time with left padding (for evaluation)."""
        import torch

        base = self.base
        tokenizer = base.tokenizer
        replies: list[Reply] = []
        for start in range(0, len(histories), batch_size):
            prepared = [self.prepare(h) for h in histories[start : start + batch_size]]
            width = max(len(p.input_ids) for p in prepared)
            pad = tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(p.input_ids)) + p.input_ids for p in prepared])
            mask = torch.tensor([[0] * (width - len(p.input_ids)) + [1] * len(p.input_ids) for p in prepared])
            began = time.perf_counter()
            with base.lock, use_adapter(base, self._adapter_name) as model, torch.inference_mode():
                torch.manual_seed(self.variant.generation.seed)
                out = model.generate(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **self._generation_kwargs()
                )
            seconds = time.perf_counter() - began
            for row, p in zip(out[:, width:].tolist(), prepared):
                kept = []
                for token in row:
                    if token in self._end_ids:
                        break
                    kept.append(token)
                text = tokenizer.decode(kept, skip_special_tokens=True).strip()
                replies.append(Reply(text, p.passages, len(p.input_ids), len(kept), seconds))
        return replies
