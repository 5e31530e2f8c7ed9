"""Answering a suite's cases: each variant's answers, cached on disk, with the reference's likelihood and
what the answers cost (speed, first token, peak memory).

Cache layout: ``<cache>/eval/<weights fingerprint>/<cache key>/<case hash>.json``, plus a ``cost.json`` per
variant, where the cache key is the variant hash, followed by ``-<engine>`` for engines other than
transformers (engines run the same prompt on slightly different weights and kernels). The key is the
cache's own: reports and winner files carry the variant hash and the engine as two fields. Every entry is written atomically, so a run killed at any point leaves only
whole entries, and the next run answers just the cases that are missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from assistant.artifacts import WEIGHT_SUFFIXES, cache_dir, file_sha256, write_json
from assistant.artifacts import weights_fingerprint as folder_fingerprint
from assistant.config import Variant
from assistant.evaluation.suite import Suite, SuiteVariant


def weights_fingerprint(variant: Variant) -> str:
    """16 hex digits naming the weights a variant runs: the base's weight files and the adapter's."""
    from assistant.models.loading import resolve_base

    source = resolve_base(variant.model.base)
    parts = [folder_fingerprint(source.location) if source.local else f"hub:{source.location}"]
    if variant.model.adapter:
        parts.append(folder_fingerprint(variant.resolve(variant.model.adapter)))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _legacy_weights_key(variant: Variant) -> str:
    """The weights key answers were cached under before ``assistant.artifacts`` (kept for migration only)."""
    from assistant.models.loading import resolve_base

    def folder_hash(folder: Path) -> str:
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
            digest.update(f"{path.name}:{file_sha256(path)}".encode())
        return digest.hexdigest()

    source = resolve_base(variant.model.base)
    parts = [folder_hash(Path(source.location)) if source.local else f"hub:{source.location}"]
    if variant.model.adapter:
        parts.append(folder_hash(variant.resolve(variant.model.adapter)))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cache_key(variant_hash: str, engine: str) -> str:
    """The folder a variant's answers on an engine are cached in (transformers answers keep the key they had
    before there were engines)."""
    return variant_hash if engine == "transformers" else f"{variant_hash}-{engine}"


class AnswerCache:
    """One JSON file per (weights, variant, case): the answer, its timing and the reference's perplexity."""

    def __init__(self, root: Path):
        self.root = root
        self._migrated: set[str] = set()
        self._lock = threading.Lock()

    def path(self, weights: str, variant_hash: str, case_hash: str) -> Path:
        return self.root / weights / variant_hash / f"{case_hash}.json"

    def get(self, weights: str, variant_hash: str, case_hash: str) -> dict | None:
        path = self.path(weights, variant_hash, case_hash)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, weights: str, variant_hash: str, case_hash: str, record: dict) -> None:
        write_json(self.path(weights, variant_hash, case_hash), record)

    def migrate(self, variant: Variant, weights: str) -> None:
        """Moves answers cached under the legacy weights key to ``weights`` (once per key, by renames; entries
        already under the new key win)."""
        with self._lock:
            if weights in self._migrated or not self.root.is_dir():
                return
            self._migrated.add(weights)
            try:
                legacy = self.root / _legacy_weights_key(variant)
            except OSError:
                return
            if not legacy.is_dir() or legacy.name == weights:
                return
            for entry in legacy.rglob("*.json"):
                target = self.root / weights / entry.relative_to(legacy)
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(entry, target)
            for folder in sorted(legacy.rglob("*"), reverse=True) + [legacy]:  # drop what is now empty
                with contextlib.suppress(OSError):
                    folder.rmdir()


def default_cache() -> AnswerCache:
    return AnswerCache(cache_dir() / "eval")


class MemorySampler:
    """Peak memory while a block runs: CUDA's peak allocation, or else the process's peak resident set
    sampled every 10 ms (so the number belongs to that block, not to the whole process's lifetime)."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            try:
                with open("/proc/self/statm") as handle:
                    self.peak = max(self.peak, int(handle.read().split()[1]) * page)
            except OSError:  # not Linux: no sampling
                return
            self._stop.wait(0.01)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            import torch

            self.peak = int(torch.cuda.max_memory_allocated())
        else:
            self._stop.set()
            self._thread.join()


def _median(values: list[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    return finite[len(finite) // 2] if finite else math.nan


def reference_nll(bot, history: list[dict[str, str]], reference: str) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the reference answer, and its token count, under the
    variant: the served prompt, then the reference as the model's reply (end-of-turn marker included)."""
    import torch

    from assistant.generate import IGNORE
    from assistant.models.loading import use_adapter

    ids, labels = bot.encode(history, reference)
    base = bot.base
    with base.lock, use_adapter(base, bot.adapter_name) as model, torch.inference_mode():
        input_ids = torch.tensor([ids], device=model.device)
        logits = model(input_ids=input_ids).logits[0, :-1].float()
        target = torch.tensor(labels[1:], device=logits.device)
        keep = target != IGNORE
        nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
    return float(nll), int(keep.sum())


def stream_timing(bot, history: list[dict[str, str]]) -> tuple[float, float]:
    """Streams one answer: seconds from the request to its first piece (prompt building included), and the
    single-stream decode speed after it in tokens/s (nan for an answer of one token or an abstention)."""
    stats: dict[str, Any] = {}
    started = time.perf_counter()
    prepared, stream = bot.start(history, stats=stats)
    first = None
    for _ in stream:
        if first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    if first is None:
        return math.nan, math.nan
    tokens = stats.get("new_tokens", 0)
    decode = (tokens - 1) / (ended - first) if tokens > 1 and ended > first and prepared.abstention is None else math.nan
    return first - started, decode


@dataclass
class Answer:
    """One variant's answer to one case, as cached on disk (one JSON object)."""

    case: str
    """The case's id."""
    answer: str
    new_tokens: int
    prompt_tokens: int
    passages: list[str]
    """Citations of the passages retrieved for the prompt."""
    nll: float | None = None
    """Summed negative log-likelihood of the reference answer (nats), when perplexity is measured."""
    ref_tokens: int | None = None
    """Tokens of the reference answer, when perplexity is measured."""
    passage_texts: list[str] | None = None
    """The text of every passage shown, in the order shown (None in answers cached before it was kept)."""

    @classmethod
    def from_record(cls, record: dict | None) -> "Answer | None":
        """The cached entry as an Answer, or None when it is missing or not a whole entry."""
        try:
            return cls(**record) if isinstance(record, dict) else None
        except TypeError:
            return None


@dataclass
class VariantRun:
    """One variant's answers to the suite's cases, with cost."""

    name: str
    variant: Variant
    variant_hash: str
    """What the model was asked: ``Variant.variant_hash``, never with the engine in it."""
    engine: str
    """The engine that generated the answers."""
    weights: str
    records: list[Answer]
    """One per case, in case order."""
    cost: dict[str, Any]
    cached: int
    """How many answers came from the cache."""


def answer_cases(
    suite: Suite,
    sv: SuiteVariant,
    cache: AnswerCache | None,
    progress: Callable[[int], None] = lambda n: None,
    refresh: bool = False,
    engine: str | None = None,
    record_cost: bool = True,
) -> VariantRun:
    """Answers every case with one variant: cached answers are reused, the rest generated in batches.
    ``refresh`` answers every case again and replaces the cached answers and cost; without ``record_cost``
    (extra cases such as the probe's) the variant's cached cost is read but never replaced."""
    from assistant.generate import Bot

    variant = sv.variant
    bot = Bot(variant, engine)
    weights = weights_fingerprint(variant)
    if cache:
        cache.migrate(variant, weights)
    vhash = variant.variant_hash()
    key = cache_key(vhash, bot.engine_name)
    records: list[Answer | None] = [Answer.from_record(cache.get(weights, key, c.case_hash()))
                                    if cache and not refresh else None for c in suite.cases]
    cached = sum(r is not None for r in records)
    progress(cached)
    missing = [i for i, r in enumerate(records) if r is None]
    cost_path = cache.root / weights / key / "cost.json" if cache else None
    cost = json.loads(cost_path.read_text()) if cost_path and cost_path.is_file() else {}
    if not record_cost:
        cost_path = None
    scored = "perplexity" in suite.metrics  # the reference's likelihood needs the PyTorch model
    device = bot.base.device if scored or bot.engine_name == "transformers" else (
        "cuda" if bot.engine_name == "vllm" else "cpu")
    if missing:
        generated_tokens, generated_seconds = 0, 0.0
        with MemorySampler(device) as memory:
            # Timed first, one at a time and streamed, before the batches: a prompt the engine has just
            # answered would come back from its cache and time the cache, not the prefill.
            bot.engine.warm()
            probe = suite.cost_probe if record_cost else 0
            timings = [stream_timing(bot, case.messages) for case in suite.cases[:probe]]
            for start in range(0, len(missing), suite.batch_size):
                chunk = missing[start : start + suite.batch_size]
                replies = bot.reply_batch([suite.cases[i].messages for i in chunk], batch_size=len(chunk))
                generated_seconds += max(r.seconds for r in replies)  # the batch's time (abstentions: 0)
                for i, reply in zip(chunk, replies):
                    case = suite.cases[i]
                    nll, ref_tokens = reference_nll(bot, case.messages, case.reference) if scored else (None, None)
                    record = Answer(case.id, reply.text, reply.new_tokens, reply.prompt_tokens,
                                    [p.cite() for p in reply.passages], nll, ref_tokens,
                                    [p.text for p in reply.passages])
                    generated_tokens += 0 if reply.abstained else reply.new_tokens
                    records[i] = record
                    if cache:
                        cache.put(weights, key, case.case_hash(), dataclasses.asdict(record))
                progress(len(chunk))
        cost = {
            "tokens_per_second": generated_tokens / generated_seconds if generated_seconds else math.nan,
            "batch_size": suite.batch_size,
            "first_token_seconds": _median([first for first, _ in timings]),
            "decode_tokens_per_second": _median([decode for _, decode in timings]),
            "peak_memory_bytes": memory.peak,
            "device": device,
            "engine": bot.engine_name,
            "measured_on_cases": len(missing),
        }
        if cost_path:
            write_json(cost_path, cost)
    lengths = [r.new_tokens for r in records]
    cost = {**cost, "answer_tokens_mean": sum(lengths) / len(lengths) if lengths else math.nan}
    return VariantRun(sv.name, variant, vhash, bot.engine_name, weights, records, cost, cached)
