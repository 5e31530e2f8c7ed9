"""The one path from a conversation to an answer, used by the CLI, the app, evaluation and any API.

    history -> retrieve passages -> render template -> trim history to budget -> chat template -> tokens
            -> engine (streamed piece by piece, or a batch at once) -> stop at end of turn or a stop text
            -> the answer's facts checked against the prompt (``generation.verify``, assistant/verify.py)

``Bot.prepare`` does everything up to the tokens and is what ``assistant render`` prints, so what you
inspect is exactly what the model receives, whichever engine generates (assistant/engines/).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from assistant.artifacts import cache_dir
from assistant.config import Variant
from assistant.context import Passage, load_documents, retrieval_query, trim_history
from assistant.data import DataError, read_examples
from assistant.engines import Engine, Sampling, cut_at_stop, resolve_engine, shared_engine
from assistant.engines.transformers_engine import end_of_turn_ids  # noqa: F401  (re-exported)
from assistant.evidence import Evidence, EvidenceSettings
from assistant.models.loading import LoadedBase, attach_adapter, shared_base, shared_tokenizer
from assistant.prompts import PromptTemplate, find_template, render_messages
from assistant.retrieval import Retriever
from assistant.verify import FALLBACK_ABSTENTION, Verified, check_answer, retry_instruction

DEFAULT_CONTEXT_CAP = 4096
IGNORE = -100  # label value a loss skips: the prompt's tokens in an encoded example


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
    relevance: float | None = None
    """How relevant the best retrieved passage is (None: no retrieval)."""
    abstention: str | None = None
    """The answer when retrieval found nothing relevant enough (``context.min_relevance``): said without
    asking the model. None: the model answers."""


@dataclass
class Reply:
    text: str
    passages: list[Passage]
    prompt_tokens: int
    new_tokens: int
    seconds: float
    first_token_seconds: float | None = None
    finish_reason: str = "stop"
    """'stop': the answer ended by itself (or at a stop text); 'length': cut at the token limit."""
    abstained: bool = False
    """Retrieval found nothing relevant enough, so the bot abstained without asking the model."""
    verified: Verified | None = None
    """What the ``generation.verify`` check found and changed (``text`` is already its result); None when the
    check is off or the model was not asked."""


_RETRIEVERS: dict[tuple, Retriever] = {}
_RETRIEVERS_LOCK = threading.Lock()


def shared_retriever(folder: Path, method: str, chunk_words: int, embedder: Path | None = None) -> Retriever:
    """One index per (documents folder, method, passage size, embedder) in a process. Passage embeddings live
    on disk in one index per folder, passage size and embedder, so adding, editing or removing a document
    embeds only it."""
    key = (str(folder), method, chunk_words, str(embedder or ""))
    with _RETRIEVERS_LOCK:
        if key not in _RETRIEVERS:
            spelled = f"{Path(folder).resolve()}|{chunk_words}" + (f"|{Path(embedder).resolve()}" if embedder else "")
            name = hashlib.sha256(spelled.encode()).hexdigest()[:16]
            _RETRIEVERS[key] = Retriever(load_documents(folder, chunk_words), method,
                                         index=cache_dir() / "passage-index" / name, embedder=embedder)
        return _RETRIEVERS[key]


def evidence_settings(variant: Variant) -> EvidenceSettings:
    """The variant's retrieval stages as plain values, its paths resolved."""
    c = variant.context

    def path(value: str | None) -> Path | None:
        return variant.resolve(value) if value else None

    return EvidenceSettings(c.top_k, path(c.conversations), c.conversations_k, path(c.rerank), c.rerank_candidates,
                            c.expand, c.max_words, path(c.embedder))


def select_examples(pool: list[list[dict[str, str]]], count: int, how: str) -> list[list[dict[str, str]]]:
    """The examples a variant shows on every request: the first ``count`` of the pool, or, 'balanced', taken
    in turn from each distinct answer (label) in the pool's order. ('dynamic' picks per request instead.)"""
    if how != "balanced":
        return pool[:count]
    by_answer: dict[str, list[list[dict[str, str]]]] = {}
    for example in pool:
        by_answer.setdefault(example[-1]["content"].strip(), []).append(example)
    queues = list(by_answer.values())
    chosen: list[list[dict[str, str]]] = []
    while len(chosen) < min(count, len(pool)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


class Bot:
    """A variant ready to answer: template, retriever, examples, and the engine that generates.

    Heavy parts load on first use, so building a Bot is free and the app can start before the model.

    Args:
        variant: what to serve.
        engine: engine name, overriding ``variant.serving.engine`` ('auto' resolves per machine).
        merged: on llama.cpp, generate from a copy of the base with the adapter folded in (written once),
            instead of applying the LoRA per request on the shared base: bare speed, for a variant served
            alone (the app's chat). When re-quantizing would round the adapter's change away
            (``export.MergeLossError``) it is served unmerged, with a warning. Other engines ignore it.
    """

    def __init__(self, variant: Variant, engine: str | None = None, merged: bool = False):
        self.variant = variant
        self.engine_name = resolve_engine(variant, engine)
        self.merged = merged and self.engine_name == "llamacpp" and bool(variant.model.adapter)
        self._base: LoadedBase | None = None
        self._adapter_name: str | None = None
        self._engine: Engine | None = None
        self._adapter_handle: Any = None
        self._template: PromptTemplate | None = None
        self._retriever: Evidence | None = None
        self._examples: list | None = None
        self._example_pool: list | None = None
        self._example_retriever: Retriever | None = None
        self._load_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------------------

    @property
    def template(self) -> PromptTemplate:
        if self._template is None:
            self._template = find_template(self.variant.prompt.template, [Path(self.variant.root)])
        return self._template

    @property
    def retriever(self) -> Evidence | None:
        """The retriever with the variant's stages (votes, reranking, expansion): what finds the passages."""
        ctx = self.variant.context
        if ctx.documents and self._retriever is None:
            settings = evidence_settings(self.variant)
            plain = shared_retriever(self.variant.resolve(ctx.documents), ctx.retriever, ctx.chunk_words,
                                     settings.embedder)
            self._retriever = Evidence(plain, settings)
        return self._retriever

    @property
    def example_pool(self) -> list:
        """Every example of the few-shot file, as conversations ending with their answer (any row format)."""
        if self._example_pool is None:
            p = self.variant.prompt
            self._example_pool = [messages for _, messages in read_examples(self.variant.resolve(p.few_shot))] \
                if p.few_shot and p.few_shot_count else []
        return self._example_pool

    @property
    def examples(self) -> list:
        """The examples shown on every request ('first' or 'balanced' selection; none for 'dynamic')."""
        if self._examples is None:
            p = self.variant.prompt
            self._examples = [] if p.few_shot_selection == "dynamic" else select_examples(
                self.example_pool, p.few_shot_count, p.few_shot_selection)
        return self._examples

    def examples_for(self, history: list[dict[str, str]]) -> list:
        """The examples for this request: the fixed ones, or with 'dynamic' selection the few-shot file's
        examples whose first question is most like the conversation's latest messages (topped up in the
        file's order when fewer than ``few_shot_count`` share a word with them)."""
        p = self.variant.prompt
        if p.few_shot_selection != "dynamic" or not self.example_pool:
            return self.examples
        with self._load_lock:
            if self._example_retriever is None:
                questions = [Passage(f"example {i}", "", next(m["content"] for m in ex if m["role"] == "user"))
                             for i, ex in enumerate(self.example_pool)]
                index = cache_dir() / "example-index" / hashlib.sha256(
                    str(self.variant.resolve(p.few_shot)).encode()).hexdigest()[:16]
                self._example_retriever = Retriever(questions, self.variant.context.retriever, index=index,
                                                    embedder=evidence_settings(self.variant).embedder)
        found = self._example_retriever.search(retrieval_query(history), p.few_shot_count)
        chosen = [int(passage.source.split()[1]) for passage in found]
        chosen += [i for i in range(len(self.example_pool)) if i not in chosen][: p.few_shot_count - len(chosen)]
        return [self.example_pool[i] for i in chosen]

    @property
    def engine(self) -> Engine:
        """The engine that generates for this variant, with its adapter registered (loads on first use)."""
        with self._load_lock:
            if self._engine is None:
                m = self.variant.model
                if self.merged:
                    from assistant.models.export import MergeLossError, merged_gguf

                    try:
                        serving = dataclasses.replace(self.variant.serving, gguf=str(merged_gguf(self.variant)))
                    except MergeLossError as exc:  # the adapter would be lost: serve it unmerged, and say so
                        print(f"{self.variant.name}: not merged: {exc}", file=sys.stderr, flush=True)
                        self.merged = False
                if self.merged:
                    engine = shared_engine(dataclasses.replace(self.variant, serving=serving), self.engine_name)
                    self._adapter_handle = engine.add_adapter(None, self.variant)
                else:
                    engine = shared_engine(self.variant, self.engine_name)
                    self._adapter_handle = engine.add_adapter(self.variant.resolve(m.adapter) if m.adapter else None,
                                                              self.variant)
                self._engine = engine
        return self._engine

    @property
    def base(self) -> LoadedBase:
        """The base in PyTorch with this variant's adapter attached: for scoring (perplexity), training and
        inspection. With the transformers engine it is the very model that generates."""
        with self._load_lock:
            if self._base is None:
                m = self.variant.model
                base = shared_base(m.base, m.quantization, m.dtype, m.device, m.trust_remote_code)
                if m.adapter:
                    self._adapter_name = attach_adapter(base, self.variant.resolve(m.adapter))
                self._base = base
        return self._base

    @property
    def adapter_name(self) -> str | None:
        """The peft name of this variant's adapter on ``base`` (None: no adapter); use with
        ``models.use_adapter``."""
        _ = self.base
        return self._adapter_name

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

    def prepare(self, history: list[dict[str, str]], max_new_tokens: int | None = None) -> PreparedPrompt:
        """Renders the prompt for the next answer to ``history`` (which ends with a user message).

        ``max_new_tokens`` (default: the variant's) is reserved out of the context window."""
        if not history or history[-1]["role"] != "user":
            raise ValueError("the conversation must end with a user message")
        ctx = self.variant.context
        found = self.retriever.find(retrieval_query(history)) if self.retriever else None
        examples = self.examples_for(history)
        passages = found.passages if found else []
        abstention = None
        if found and ctx.min_relevance is not None and found.relevance < ctx.min_relevance:
            abstention = str(self.variant.prompt.variables["abstention"]).strip()
        budget = self.context_window - (max_new_tokens or self.variant.generation.max_new_tokens)

        def render(kept: list[dict[str, str]]) -> tuple[list[dict[str, str]], str, list[int]]:
            messages = render_messages(
                self.template,
                kept,
                variables=self.variant.prompt.variables,
                passages=passages,
                examples=examples,
            )
            return messages, *self.chat_prompt(messages)

        kept, dropped = trim_history(history, lambda h: len(render(h)[2]), budget)
        messages, text, ids = render(kept)
        return PreparedPrompt(messages, text, ids, passages, dropped, budget,
                              found.relevance if found else None, abstention)

    def chat_prompt(self, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        """The messages through the tokenizer's chat template, ending where the answer starts: text and ids."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def reprompt(self, prepared: PreparedPrompt, instruction: str) -> PreparedPrompt:
        """``prepared`` with ``instruction`` added at the end of its system message (a system message of its own
        first, when the template writes none): the prompt of a retry."""
        messages = [dict(m) for m in prepared.messages]
        if messages and messages[0]["role"] == "system":
            messages[0]["content"] = messages[0]["content"].rstrip() + "\n\n" + instruction
        else:
            messages.insert(0, {"role": "system", "content": instruction})
        text, ids = self.chat_prompt(messages)
        return dataclasses.replace(prepared, messages=messages, text=text, input_ids=ids)

    def answer_text(self, prepared: PreparedPrompt, answer: str) -> str:
        """What the chat template writes after the served prompt when ``answer`` is the reply: the answer and
        its end-of-turn marker. Used for SFT examples and for DPO's chosen and rejected answers alike."""
        full = self.tokenizer.apply_chat_template(prepared.messages + [{"role": "assistant", "content": answer}],
                                                  tokenize=False)
        if not full.startswith(prepared.text):
            raise DataError(f"the chat template of {self.variant.model.base} renders the prompt differently when "
                            "an answer follows; cannot separate prompt and answer reliably")
        return full[len(prepared.text):]

    def encode(self, history: list[dict[str, str]], answer: str) -> tuple[list[int], list[int]]:
        """Token ids and labels of one example: the served prompt (labels ``IGNORE``) followed by the answer.

        The answer's text is whatever the chat template writes after the prompt for this reply, so the
        end-of-turn marker is learned too and the model stops where serving expects it to.
        """
        prepared = self.prepare(history)
        answer_ids = self.tokenizer(self.answer_text(prepared, answer), add_special_tokens=False)["input_ids"]
        return prepared.input_ids + answer_ids, [IGNORE] * len(prepared.input_ids) + answer_ids

    # -- generation -----------------------------------------------------------------------------------

    def sampling(self, **overrides: Any) -> Sampling:
        """The variant's generation settings, with per-request overrides (None values are ignored)."""
        return Sampling.of(self.variant.generation, **overrides)

    def stream(self, prepared: PreparedPrompt, stats: dict[str, Any] | None = None,
               sampling: Sampling | None = None) -> Iterator[str]:
        """Yields the answer's text piece by piece as tokens are generated; stops at the end of turn.

        Closing the iterator early (the user left) stops generation at the next token. When given,
        ``stats`` gets ``new_tokens`` (answer tokens) and ``finish_reason`` once the stream ends, and, unless
        ``generation.verify`` is off, ``verified``: the answer after that check (``Verified``), which is what
        to show in place of the streamed text.
        """
        sampling = sampling or self.sampling()
        if prepared.abstention is not None:
            if stats is not None:
                stats.update(new_tokens=self._token_count(prepared.abstention), finish_reason="stop")
            yield prepared.abstention
            return
        engine = self.engine
        text = ""
        for piece in cut_at_stop(engine.stream(prepared.input_ids, self._adapter_handle, sampling, stats),
                                 sampling.stop, stats):
            text += piece
            yield piece
        if stats is not None and self.variant.generation.verify != "off":
            stats["verified"] = self.verified([prepared], [text.strip()], sampling)[0]

    def _token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def start(self, history: list[dict[str, str]], sampling: Sampling | None = None,
              stats: dict[str, Any] | None = None) -> tuple[PreparedPrompt, Iterator[str]]:
        """Prepares the prompt for ``history`` and returns it with the stream of the answer's pieces: what a
        chat turn needs (the passages to show, then the text as it comes). Nothing generates until the
        stream is read; closing it stops generation."""
        sampling = sampling or self.sampling()
        prepared = self.prepare(history, sampling.max_new_tokens)
        return prepared, self.stream(prepared, stats, sampling)

    def reply(self, history: list[dict[str, str]], sampling: Sampling | None = None) -> Reply:
        """Answers one conversation by streaming, with timing (time to first token, tokens/s)."""
        started = time.perf_counter()
        stats: dict[str, Any] = {}
        prepared, stream = self.start(history, sampling, stats)
        first = None
        pieces = []
        for piece in stream:
            if first is None:
                first = time.perf_counter() - started
            pieces.append(piece)
        seconds = time.perf_counter() - started
        verified = stats.get("verified")
        text = verified.text if verified else "".join(pieces).strip()
        return Reply(text, prepared.passages, len(prepared.input_ids), stats["new_tokens"], seconds, first,
                     stats.get("finish_reason", "stop"), prepared.abstention is not None, verified)

    def reply_batch(self, histories: list[list[dict[str, str]]], batch_size: int = 8,
                    sampling: Sampling | None = None) -> list[Reply]:
        """Answers many conversations, ``batch_size`` at a time (for evaluation): the engine batches them
        (left padding with transformers, continuous batching with llama.cpp and vLLM)."""
        sampling = sampling or self.sampling()
        replies: list[Reply] = []
        for start in range(0, len(histories), batch_size):
            prepared = [self.prepare(h, sampling.max_new_tokens) for h in histories[start : start + batch_size]]
            asked = [p for p in prepared if p.abstention is None]  # abstentions need no model
            began = time.perf_counter()
            completions = self.engine.generate([p.input_ids for p in asked], self._adapter_handle, sampling) \
                if asked else []
            checked = self.verified(asked, [c.text.strip() for c in completions], sampling)
            seconds = time.perf_counter() - began
            done = iter(zip(completions, checked))
            for p in prepared:
                if p.abstention is not None:
                    replies.append(Reply(p.abstention, p.passages, len(p.input_ids),
                                         self._token_count(p.abstention), 0.0, abstained=True))
                    continue
                c, verified = next(done)
                replies.append(Reply(verified.text if verified else c.text.strip(), p.passages, len(p.input_ids),
                                     c.new_tokens, seconds, finish_reason=c.finish_reason, verified=verified))
        return replies

    def verified(self, prepared: list[PreparedPrompt], answers: list[str],
                 sampling: Sampling) -> list[Verified | None]:
        """The answers after the variant's ``generation.verify`` check (assistant/verify.py) against the prompts
        they were generated from; None each when it is off. With 'retry', the answers stating unsupported facts
        are asked again in one greedy batch; a retry whose prompt would not fit the budget is not asked (its
        answer is dropped as in 'drop')."""
        mode = self.variant.generation.verify
        if mode == "off":
            return [None] * len(answers)
        abstention = str(self.variant.prompt.variables.get("abstention", "")).strip() or FALLBACK_ABSTENTION
        retries: dict[int, PreparedPrompt] = {}
        for i, (p, answer) in enumerate(zip(prepared, answers)):
            instruction = retry_instruction(answer, p.text) if mode == "retry" else None
            retry = self.reprompt(p, instruction) if instruction else None
            if retry and len(retry.input_ids) <= p.budget:
                retries[i] = retry
        greedy = dataclasses.replace(sampling, temperature=0.0)
        again = self.engine.generate([r.input_ids for r in retries.values()], self._adapter_handle, greedy) \
            if retries else []
        retried = {i: c.text.strip() for i, c in zip(retries, again)}
        return [check_answer(answer, p.text, mode, abstention, retried.get(i))
                for i, (p, answer) in enumerate(zip(prepared, answers))]
