"""Retrieval at scale: the hand-written indexes retrieval used before (the baseline, copied below) against
assistant.retrieval (bm25s, sentence-transformers, the FAISS passage index), at 1k, 10k and
100k passages, both sides in one run of this script.

    .venv/bin/python bench/retrieval_scale.py                       # 1000,10000,100000 -> bench/retrieval_scale.json
    .venv/bin/python bench/retrieval_scale.py --sizes 1000 --json /tmp/scale.json

Corpus: no installed package ships a text corpus of 100k passages, so documents are generated from a seed:
words drawn with Zipf frequencies from the demo documents' vocabulary (data/tidewater/docs) extended with
made-up words to a realistic vocabulary size, 10 passages of 40-120 words per document. Queries are 5-word
runs of random passages. The same seed gives the same corpus, queries and numbers of hits.

What is measured, per size:
- BM25, old and new: build time (tokenizing and indexing every passage), p50 latency of a top-5 search over
  ``--queries`` queries, and peak memory of the build (see Memory).
- Embedding: all passages embedded once with the packaged all-MiniLM-L6-v2 (the same model on both sides),
  timed and reported separately as passages per second. The vectors are saved under ``--work`` and a later
  run reuses them instead of embedding again (unless ``--no-reuse-embeddings``); ``embedding.reused`` says
  so, and the rate reported is then the one measured when they were made.
- Dense, old and new, both given the precomputed embeddings:
  old: build = the embedding matrix written to its safetensors cache file (what a first start did besides
  embedding); reopen = the cache file read back (a later start); update after editing 1% of the documents =
  every passage embedded again (the old cache was keyed by all passages), estimated from the measured
  embedding rate plus the build; query = the old scoring (matrix product, Python sort) for a query vector.
  new: build = a fresh index filled (hashing, inserting); reopen = opening it over the same passages (hashes
  compared, nothing embedded); update = opening it over passages with 1% of the documents edited, which
  embeds only those documents' passages, all with the real model (counted and timed); query = the index's
  top-5 search for a query vector. Embedding the query is the same on both sides and left out.
- Memory: peak resident memory above the phase's start (VmRSS sampled every 2 ms in a thread, freed memory
    handed back to the system with malloc_trim between phases), so it counts C allocations (numpy, FAISS,
  torch) that tracemalloc would miss.

Nothing else should run on the machine meanwhile. Embedding is the slow part: about 15 passages a second on
2 busy cores (1000 passages: about a minute; 100k: one to two hours), done once per size and reused by later
runs from ``--work``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.artifacts import cache_dir, write_atomically  # noqa: E402
from assistant.context import Passage  # noqa: E402
from assistant.retrieval import BM25Index, DenseIndex, passage_text, sentence_encoder  # noqa: E402

PER_DOCUMENT = 10


# == BASELINE: the retrieval code of assistant/context.py before bm25s, sentence-transformers and the ==========
# == on-disk index, copied as it was (DenseIndex takes its encoder and cache folder as arguments here). ========

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the and or of to in on for is are was were be been it its this that with as at by from do does "
    "did i my me you your we our can could would should will how what when where which who why if not no "
    "have has had so".split()
)


def stem(word: str) -> str:
    """A deliberately small suffix stripper: 'returns', 'returned', 'returning' all become 'return'."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def tokenize_words(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


class OldBM25Index:
    """Okapi BM25 over passages (k1=1.5, b=0.75), heading and source words included."""

    def __init__(self, passages: Sequence[Passage], k1: float = 1.5, b: float = 0.75):
        self.passages = list(passages)
        self.k1, self.b = k1, b
        self.docs = [Counter(tokenize_words(f"{p.heading} {p.source.replace('-', ' ')} {p.text}")) for p in passages]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.mean_length = sum(self.lengths) / max(len(self.docs), 1)
        frequency = Counter(word for d in self.docs for word in d)
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items()}

    def scores(self, query: str) -> list[float]:
        words = tokenize_words(query)
        out = []
        for doc, length in zip(self.docs, self.lengths):
            score = 0.0
            norm = self.k1 * (1 - self.b + self.b * length / self.mean_length)
            for w in words:
                tf = doc.get(w, 0)
                if tf:
                    score += self.idf[w] * tf * (self.k1 + 1) / (tf + norm)
            out.append(score)
        return out

    def search(self, query: str, k: int) -> list[Passage]:
        scores = self.scores(query)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [self.passages[i] for i in order[:k] if scores[i] > 0]


class OldDenseIndex:
    """Cosine similarity of sentence embeddings (see ``SentenceEncoder``).

    Passage embeddings are cached on disk by a hash of the passages and the model, so only the first
    start over a set of documents pays for embedding them.
    """

    def __init__(self, passages: Sequence[Passage], encoder, cache: Path):
        from safetensors.torch import load_file, save_file

        self.encoder = encoder
        self.passages = list(passages)
        texts = [f"{p.heading}\n{p.text}" for p in passages]
        digest = hashlib.sha256("\x00".join([str(self.encoder.folder), *texts]).encode()).hexdigest()[:16]
        path = cache / f"{digest}.safetensors"
        if path.is_file():
            self.matrix = load_file(path)["embeddings"]
        else:
            self.matrix = self.embed(texts)
            write_atomically(path, lambda tmp: save_file({"embeddings": self.matrix.contiguous()}, str(tmp)))

    def embed(self, texts: list[str], batch: int = 32):
        return self.encoder.embed(texts, batch)

    def scores(self, query: str) -> list[float]:
        return (self.matrix @ self.embed([query])[0]).tolist()

    def search(self, query: str, k: int) -> list[Passage]:
        scores = self.scores(query)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [self.passages[i] for i in order[:k]]


# == END OF BASELINE ===========================================================================================


class Precomputed:
    """An encoder that answers from embeddings computed beforehand, and asks the real model for any other text.

    ``embed`` returns torch rows for the baseline and numpy rows for the new index, as each side's encoder did.
    """

    def __init__(self, texts: list[str], vectors: np.ndarray, as_torch: bool = False):
        self.real = sentence_encoder()
        self.name, self.dimension, self.folder = self.real.name, self.real.dimension, self.real.folder
        self.rows = {t: i for i, t in enumerate(texts)}
        self.vectors, self.as_torch = vectors, as_torch

    def embed(self, texts: list[str], batch: int = 32):
        missing = [t for t in texts if t not in self.rows]
        fresh = dict(zip(missing, self.real.embed(missing, batch))) if missing else {}
        out = np.stack([self.vectors[self.rows[t]] if t in self.rows else fresh[t] for t in texts])
        if self.as_torch:
            import torch

            return torch.from_numpy(out)
        return out


def corpus(size: int, seed: int) -> list[Passage]:
    """``size`` passages in documents of 10, words drawn with Zipf frequencies (see the module docstring)."""
    rng = random.Random(seed)
    words = sorted(set(re.findall(r"[a-z]+", " ".join(
        p.read_text(encoding="utf-8").lower() for p in sorted((ROOT / "data/tidewater/docs").glob("*.md"))))))
    rng.shuffle(words)
    vocabulary = words + [f"{a}{b}" for a in words[:300] for b in ("ex", "ol", "ium", "ara", "ton")][:20_000]
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
    cumulative = np.cumsum(weights)
    passages = []
    for i in range(size):
        draws = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(40, 120))
        sentences = [" ".join(draws[j : j + 12]).capitalize() + "." for j in range(0, len(draws), 12)]
        doc = i // PER_DOCUMENT
        passages.append(Passage(f"doc-{doc:06d}.md", f"Topic {doc} > Part {i % PER_DOCUMENT}", " ".join(sentences)))
    return passages


def queries(passages: list[Passage], count: int, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    out = []
    for _ in range(count):
        words = rng.choice(passages).text.replace(".", "").split()
        start = rng.randrange(max(1, len(words) - 5))
        out.append(" ".join(words[start : start + 5]))
    return out


def edited(passages: list[Passage], fraction: float, seed: int) -> tuple[list[Passage], int]:
    """The passages with the first passage of ``fraction`` of the documents changed; and how many documents."""
    sources = sorted({p.source for p in passages})
    chosen = set(random.Random(seed + 2).sample(sources, max(1, int(len(sources) * fraction))))
    out, seen = [], set()
    for p in passages:
        if p.source in chosen and p.source not in seen:
            p = Passage(p.source, p.heading, p.text + " Edited for the update measurement.")
        seen.add(p.source)
        out.append(p)
    return out, len(chosen)


class PeakMemory:
    """Peak VmRSS above the start of a ``with`` block, sampled in a thread every 2 ms."""

    def __enter__(self):
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so a phase starts from what it needs
        except OSError:
            pass
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.mb = round((self.peak - self.start) / 2**20, 1)


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - started, 4)


def p50_ms(fn, items) -> float:
    times = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 3)


def bench_bm25(passages, texts) -> dict:
    out = {}
    for side, cls in (("old", OldBM25Index), ("new", BM25Index)):
        with PeakMemory() as memory:
            index, build = timed(lambda cls=cls: cls(passages))
        out[side] = {"build_s": build, "query_p50_ms": p50_ms(lambda q, index=index: index.search(q, 5), texts),
                     "build_peak_mb": memory.mb, "queries_with_hits": sum(bool(index.search(q, 5)) for q in texts)}
        index = None  # freed before the next side is measured
    return out


def embeddings(passages, work: Path, size: int, seed: int, reuse: bool) -> tuple[np.ndarray, dict]:
    path = work / f"embeddings-{size}-{seed}.npy"
    meta = path.with_suffix(".json")
    if reuse and path.is_file() and meta.is_file():
        return np.load(path), {**json.loads(meta.read_text()), "reused": True}
    encoder = sentence_encoder()
    vectors, seconds = timed(lambda: encoder.embed([passage_text(p) for p in passages]))
    info = {"passages": len(passages), "seconds": seconds, "passages_per_s": round(len(passages) / seconds, 1),
            "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))}
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    meta.write_text(json.dumps(info))
    return vectors, {**info, "reused": False}


def bench_dense(passages, vectors, query_vectors, work: Path, rate: float, seed: int) -> dict:
    texts = [passage_text(p) for p in passages]
    changed, documents = edited(passages, 0.01, seed)
    out = {}

    old_cache = work / "old-cache"
    shutil.rmtree(old_cache, ignore_errors=True)
    encoder = Precomputed(texts, vectors, as_torch=True)
    with PeakMemory() as memory:
        _, build = timed(lambda: OldDenseIndex(passages, encoder, old_cache))
    old, reopen = timed(lambda: OldDenseIndex(passages, encoder, old_cache))
    import torch

    def old_query(vector):  # OldDenseIndex.search less embedding the query
        scores = (old.matrix @ vector).tolist()
        return sorted(range(len(scores)), key=lambda i: -scores[i])[:5]

    out["old"] = {"build_s": build, "reopen_s": reopen,
                  "query_p50_ms": p50_ms(old_query, [torch.from_numpy(v) for v in query_vectors]),
                  "update_s_estimated": round(len(passages) / rate + build, 2),
                  "update_embedded_passages": len(passages), "build_peak_mb": memory.mb}
    old = None

    folder = work / "new-index"
    shutil.rmtree(folder, ignore_errors=True)
    encoder = Precomputed(texts, vectors)
    with PeakMemory() as memory:
        _, build = timed(lambda: DenseIndex(passages, folder, encoder))
    with PeakMemory() as reopen_memory:
        new, reopen = timed(lambda: DenseIndex(passages, folder, encoder))
    query = p50_ms(lambda v: new.index.search(v, 5), query_vectors)
    new = None
    # The real model embeds every passage of an edited document (none of them comes from the saved vectors).
    updated, update = timed(lambda: DenseIndex(changed, folder, sentence_encoder()))
    out["new"] = {"build_s": build, "reopen_s": reopen, "query_p50_ms": query, "update_s": update,
                  "update_documents": documents, "update_embedded_passages": updated.last_update.passages,
                  "build_peak_mb": memory.mb, "reopen_peak_mb": reopen_memory.mb,
                  "index_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="passage counts, comma-separated")
    parser.add_argument("--queries", type=int, default=50, help="queries timed per index")
    parser.add_argument("--seed", type=int, default=0, help="corpus and query seed")
    parser.add_argument("--work", type=Path, default=cache_dir() / "bench-retrieval-scale",
                        help="folder for the indexes and the saved embeddings (default: under the cache)")
    parser.add_argument("--no-reuse-embeddings", dest="reuse", action="store_false",
                        help="embed the corpus again even when saved embeddings exist")
    parser.add_argument("--skip-dense", action="store_true", help="BM25 only (no embedding)")
    parser.add_argument("--embed-at-most", type=int, default=10000,
                        help="sizes above this get random unit vectors instead of real embeddings for the index "
                        "phases (exact search costs the same whatever the vectors hold); the embedding rate is "
                        "then the one measured at the largest embedded size (default 10000)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "retrieval_scale.json", help="results file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    # Imported before anything is measured, so no phase counts a library's own memory or import time.
    import bm25s
    import faiss
    import sentence_transformers

    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "bm25s": bm25s.__version__, "sentence_transformers": sentence_transformers.__version__,
                           "faiss": faiss.__version__},
               "seed": args.seed, "queries": args.queries, "sizes": {}}
    for size in sizes:
        passages = corpus(size, args.seed)
        texts = queries(passages, args.queries, args.seed)
        row = {"bm25": bench_bm25(passages, texts)}
        print(f"{size} passages, BM25: {json.dumps(row['bm25'])}", flush=True)
        if not args.skip_dense:
            if size > args.embed_at_most:  # index costs do not depend on what the vectors hold
                vectors = np.random.default_rng(args.seed).standard_normal((size, 384)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                measured = results["sizes"].get(str(args.embed_at_most), {}).get("embedding", {})
                info = {"passages": size, "synthetic": True, "passages_per_s": measured.get("passages_per_s", 40.0)}
            else:
                vectors, info = embeddings(passages, args.work, size, args.seed, args.reuse)
            row["embedding"] = info
            query_vectors = sentence_encoder().embed(texts)
            row["dense"] = bench_dense(passages, vectors, query_vectors, args.work / str(size),
                                       info["passages_per_s"], args.seed)
            print(f"{size} passages, embedding: {json.dumps(info)}\n{size} passages, dense: {json.dumps(row['dense'])}",
                  flush=True)
        results["sizes"][str(size)] = row
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))  # after every size: a long run keeps what it did
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
