"""A retriever trained on the domain: the retrieval counterpart of an adapter.

    assistant train-retriever configs/tidewater-retriever.yaml     # -> adapters/tidewater-retriever/

Two kinds, both fine-tuned from the packaged all-MiniLM-L6-v2 (or a ``base`` folder) with sentence-transformers:

- bi-encoder: the sentence-embedding model of dense retrieval, trained with MultipleNegativesRankingLoss on
  (question, positive passage, BM25 hard negatives): the other pairs of a batch are negatives too. A variant
  uses the folder as its ``context.embedder``.
- cross-encoder: a reranker that reads the question and a passage together and scores them, trained with
  binary cross-entropy on (question, positive) = 1 and (question, hard negative) = 0.
  ``assistant.reranking.rerank_scores`` loads one (once per folder) and scores passages for a question;
  ``context.rerank`` names the folder.

Pairs come from labelled conversations or from questions a base model drafts (``question_pairs``). A seeded
share of the conversations is held out and searched against every passage, before and after training; the
card reports at the DOCUMENT level (is the question's source document among the first k passages' documents)
hit@1/3/5 and MRR, for a cross-encoder over the first 20 hybrid (BM25 + packaged MiniLM) candidates. The
output folder is the saved model (safetensors), ``retriever-card.json`` and ``README.md``, written to a
temporary sibling and renamed into place. (Imported only by the verb: sentence-transformers loads in its
functions.)
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from assistant.artifacts import file_sha256, fingerprint, publish_atomically, weights_fingerprint, write_json
from assistant.context import DOCUMENT_SUFFIXES, Passage, load_documents
from assistant.data import DataError
from assistant.reranking import load_reranker
from assistant.settings_reader import ConfigError
from assistant.training.card import package_versions
from assistant.training.config import RetrieverTrainConfig
from assistant.training.question_pairs import (
    Pair,
    PairBuilder,
    Question,
    draft_questions,
    keep_round_trips,
    read_labelled_questions,
    split_questions,
)

KS = (1, 3, 5)
RERANK_CANDIDATES = 20
"""Hybrid candidates a cross-encoder re-scores in the card's evaluation."""


@dataclass
class Questions:
    train: list[Question]
    held_out: list[Question]
    counts: dict[str, Any]
    """What was read, drafted, kept and skipped, for the card."""


def gather_questions(config: RetrieverTrainConfig, builder: PairBuilder, quiet: bool = False) -> Questions:
    """The labelled questions of the train file, or drafted ones that make the round trip, split (seeded)."""
    if config.train and not config.synthetic:
        read = read_labelled_questions(config.resolve(config.train), config.resolve(config.documents),
                                       builder.passages, config.turns)
        questions = read.questions
        counts = {"source": "conversations", "rows": read.rows, "skipped_no_source": read.skipped_no_source,
                  "skipped_unknown_document": read.skipped_unknown_document}
    else:
        d = config.drafting
        base = str(config.resolve(d.base)) if config.resolve(d.base).exists() else d.base
        drafts = draft_questions(builder.passages, base, d.quantization, d.questions_per_passage, d.max_new_tokens,
                                 quiet)
        kept = keep_round_trips(builder, drafts)
        questions = kept.questions
        counts = {"source": "drafted", "drafted": kept.drafted, "kept": len(kept.questions),
                  "rejected_by_round_trip": len(kept.rejected), "rejected_examples": kept.rejected[:10]}
    if not questions:
        raise DataError("no training questions: no row names a document of the documents folder"
                        if counts["source"] == "conversations" else "no drafted question made the round trip")
    train, held = split_questions(questions, config.validation_fraction, config.seed)
    if not train:
        raise ConfigError(f"validation_fraction: {config.validation_fraction} leaves no question to train on")
    return Questions(train, held, {**counts, "questions": len(questions), "train": len(train), "held_out": len(held)})


# -- evaluation -------------------------------------------------------------------------------------------


def document_metrics(rankings: Sequence[Sequence[str]], sources: Sequence[str]) -> dict[str, float]:
    """hit@1/3/5 and MRR at the document level: ``rankings[i]`` are the documents of question i's passages in
    rank order, ``sources[i]`` its document; the reciprocal rank is that of its document's first passage (0
    when none is ranked)."""
    ranks = [list(docs).index(s) + 1 if s in docs else 0 for docs, s in zip(rankings, sources)]
    n = max(len(ranks), 1)
    metrics = {f"hit@{k}": sum(0 < r <= k for r in ranks) / n for k in KS}
    metrics["mrr"] = sum(1 / r for r in ranks if r) / n
    return {k: round(v, 4) for k, v in metrics.items()}


def dense_rankings(model_folder: Path | None, passages: Sequence[Passage], questions: Sequence[Question],
                   scratch: Path) -> list[list[str]]:
    """Each question's passages' documents in the order a ``DenseIndex`` with the model of ``model_folder``
    (None: the packaged MiniLM) ranks every passage."""
    from assistant.retrieval import DenseIndex, SentenceEncoder

    index = DenseIndex(passages, folder=Path(tempfile.mkdtemp(dir=scratch)), encoder=SentenceEncoder(model_folder))
    return [[passages[i].source for i in index.ranking(q.text, len(passages))] for q in questions]


def reranked(model, questions: Sequence[Question], candidates: Sequence[Sequence[Passage]]) -> list[list[Passage]]:
    """Each question's candidates in the order of a cross-encoder's scores for it, best first (scored in one
    call, so that batches hold pairs of like length)."""
    from assistant.retrieval import passage_text

    pairs = [(q.text, passage_text(p)) for q, found in zip(questions, candidates) for p in found]
    scores = iter(model.predict(pairs, show_progress_bar=False).tolist() if pairs else [])
    orders = []
    for found in candidates:
        mine = [next(scores) for _ in found]
        orders.append([found[i] for i in sorted(range(len(found)), key=lambda i: -mine[i])])
    return orders


# -- training -----------------------------------------------------------------------------------------------


def _trainer_run(trainer, quiet: bool):
    """Trains with the project's progress bar (loss in its postfix), or silently; returns the trainer's state."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from assistant.training.callbacks import LossProgress

    trainer.remove_callback(PrinterCallback if quiet else ProgressCallback)
    if not quiet:
        trainer.add_callback(LossProgress())
    trainer.train()
    return trainer.state


def _arguments(cls, config: RetrieverTrainConfig, scratch: Path, quiet: bool, **extra):
    import torch

    return cls(output_dir=str(scratch / "trainer"), num_train_epochs=config.epochs,
               per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
               warmup_steps=config.warmup_ratio, seed=config.seed, data_seed=config.seed, save_strategy="no",
               report_to="none", logging_steps=1, disable_tqdm=quiet, use_cpu=not torch.cuda.is_available(), **extra)


def fit_bi_encoder(model, pairs: Sequence[Pair], config: RetrieverTrainConfig, scratch: Path, quiet: bool):
    """MultipleNegativesRankingLoss over (question, positive, hard negatives...): the other pairs' passages in
    a batch are negatives too, and no batch holds one text twice, so a question's own passage is never
    another's negative. Returns the trainer's state."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from assistant.retrieval import passage_text

    columns = {"anchor": [p.question.text for p in pairs], "positive": [passage_text(p.positive) for p in pairs]}
    for j in range(len(pairs[0].negatives)):
        columns[f"negative_{j + 1}"] = [passage_text(p.negatives[j]) for p in pairs]
    args = _arguments(SentenceTransformerTrainingArguments, config, scratch, quiet,
                      batch_sampler=BatchSamplers.NO_DUPLICATES)
    return _trainer_run(SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                                                   loss=MultipleNegativesRankingLoss(model)), quiet)


def fit_cross_encoder(model, pairs: Sequence[Pair], config: RetrieverTrainConfig, scratch: Path, quiet: bool):
    """Binary cross-entropy on (question, positive) = 1 and (question, each hard negative) = 0. Returns the
    trainer's state."""
    from datasets import Dataset
    from sentence_transformers import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from assistant.retrieval import passage_text

    rows = [(p.question.text, passage_text(passage), 1.0 if passage is p.positive else 0.0)
            for p in pairs for passage in [p.positive, *p.negatives]]
    data = Dataset.from_dict({"query": [r[0] for r in rows], "passage": [r[1] for r in rows],
                              "label": [r[2] for r in rows]})
    args = _arguments(CrossEncoderTrainingArguments, config, scratch, quiet)
    return _trainer_run(CrossEncoderTrainer(model=model, args=args, train_dataset=data,
                                            loss=BinaryCrossEntropyLoss(model)), quiet)


def train_retriever(config: RetrieverTrainConfig, overwrite: bool = False, quiet: bool = False) -> Path:
    """Builds the pairs, evaluates the base, trains, evaluates the saved model and writes the output folder
    (atomically: a run that fails leaves no folder, and an existing one as it was); returns it.

    Args:
        config: what to train (``load_retriever_config`` reads it).
        overwrite: replace an existing output folder.
        quiet: no progress bars.

    Raises:
        ConfigError, DataError, ContextError: user errors, found before any model loads (the drafting model
            of synthetic questions aside).
    """
    from assistant.retrieval import Retriever, embedder_path

    destination = config.resolve(config.output)
    if destination.exists() and not overwrite:
        raise ConfigError(f"{destination} exists; choose another output or pass --overwrite")
    documents = config.resolve(config.documents)
    passages = load_documents(documents, config.chunk_words)
    builder = PairBuilder(passages)
    questions = gather_questions(config, builder, quiet)
    pairs = builder.pairs(questions.train, config.hard_negatives)
    if config.kind == "cross-encoder" and not pairs[0].negatives:
        raise DataError(f"{documents}: a cross-encoder needs hard negatives, and no other document has passages")
    held, sources = questions.held_out, [q.source for q in questions.held_out]
    base = config.resolve(config.base) if config.base else None
    base_folder = base or embedder_path()

    def scored(rankings: list[list[str]]) -> dict[str, float] | None:
        return document_metrics(rankings, sources) if held else None

    metrics: dict[str, Any] = {"held_out_questions": len(held), "bm25": scored(
        [[passages[i].source for i in builder.everything.ranking(q.text, len(passages))] for q in held])}
    import transformers

    transformers.set_seed(config.seed)  # a cross-encoder's new scoring head, dropout, the data order
    with tempfile.TemporaryDirectory(prefix="train-retriever-") as scratch_name:
        scratch = Path(scratch_name)
        if config.kind == "bi-encoder":
            from sentence_transformers import SentenceTransformer

            metrics["before"] = scored(dense_rankings(base, passages, held, scratch) if held else [])
            model = SentenceTransformer(str(base_folder), local_files_only=True)
        else:
            # candidates as a hybrid retriever of the packaged MiniLM finds them, which the reranker re-orders
            hybrid = Retriever(passages, "hybrid", index=Path(tempfile.mkdtemp(dir=scratch))) if held else None
            candidates = [hybrid.search(q.text, RERANK_CANDIDATES) for q in held]
            metrics["candidates"] = scored([[p.source for p in found] for found in candidates])
            model = load_reranker(base_folder, num_labels=1)
            metrics["before"] = scored([[p.source for p in order] for order in reranked(model, held, candidates)])
        model.max_seq_length = config.max_seq_length

        def build(staging: Path) -> None:
            started = time.perf_counter()
            state = (fit_bi_encoder if config.kind == "bi-encoder" else fit_cross_encoder)(
                model, pairs, config, scratch, quiet)
            seconds = time.perf_counter() - started
            model.save(str(staging), create_model_card=False, safe_serialization=True)
            if config.kind == "bi-encoder":  # from the folder written, as a variant will load it
                metrics["after"] = scored(dense_rankings(staging, passages, held, scratch) if held else [])
            else:
                trained = load_reranker(staging)
                metrics["after"] = scored([[p.source for p in order] for order in reranked(trained, held, candidates)])
            losses = [round(float(h["loss"]), 4) for h in state.log_history if "loss" in h]
            train_file = config.resolve(config.train) if questions.counts["source"] == "conversations" else None
            card = {
                "kind": config.kind,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "base": {"model": os.path.relpath(base, destination) if base else "all-MiniLM-L6-v2 (packaged)",
                         "weights_sha256": weights_fingerprint(base_folder)},
                "data": {"documents": {"folder": os.path.relpath(documents, destination),
                                       "fingerprint": fingerprint(documents, DOCUMENT_SUFFIXES),
                                       "documents": len({p.source for p in passages}), "passages": len(passages)},
                         "train": {"file": os.path.relpath(train_file, destination),
                                   "sha256": file_sha256(train_file)} if train_file else None,
                         "questions": questions.counts,
                         "pairs": {"kept": len(pairs), "hard_negatives_each": len(pairs[0].negatives)}},
                # the files and folders are named above, relative to this folder
                "settings": {k: v for k, v in config.to_dict().items()
                             if k not in ("documents", "train", "output", "base")},
                "training": {"seconds": round(seconds, 1), "steps": state.global_step, "loss": losses},
                "metrics": metrics,
                "packages": {**package_versions(), "sentence-transformers": _version("sentence-transformers")},
            }
            write_json(staging / "retriever-card.json", card)
            (staging / "README.md").write_text(readme(card), encoding="utf-8")

        return publish_atomically(destination, build, replace=True)


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


def metrics_table(card: dict[str, Any]) -> str:
    """Markdown table of the held-out figures, base model against the trained one."""
    m = card["metrics"]
    if not m["held_out_questions"]:
        return "(no held-out questions: validation_fraction is 0)"
    rows = [("BM25 (unchanged by training)", m["bm25"])]
    if "candidates" in m:
        rows.append((f"hybrid candidates, not reranked (top {RERANK_CANDIDATES})", m["candidates"]))
    rows += [("base model", m["before"]), ("trained", m["after"])]
    head = "| | " + " | ".join([*(f"hit@{k}" for k in KS), "MRR"]) + " |"
    lines = [head, "|---|" + "---:|" * (len(KS) + 1)]
    lines += ["| " + name + " | " + " | ".join(f"{v[key]:.3f}" for key in [*(f"hit@{k}" for k in KS), "mrr"]) + " |"
              for name, v in rows]
    return "\n".join(lines)


def readme(card: dict[str, Any]) -> str:
    kind, q, t = card["kind"], card["data"]["questions"], card["training"]
    use = ("`context.embedder: <this folder>` in a variant (dense and hybrid retrievers)" if kind == "bi-encoder"
           else "`context.rerank: <this folder>` in a variant, or `assistant.reranking.rerank_scores`")
    scope = ("every passage" if kind == "bi-encoder"
             else f"the top {RERANK_CANDIDATES} hybrid candidates (BM25 + packaged MiniLM), reranked")
    return f"""# Domain retriever ({kind})

Fine-tuned from {card['base']['model']} with sentence-transformers on {card['data']['pairs']['kept']} (question,
passage) pairs from {q['source']} ({q['train']} questions; {q['held_out']} held out), in {t['steps']} steps,
{t['seconds']} s. Use it with {use}.

## Held-out questions: is the source document among the first k passages? ({scope})

{metrics_table(card)}

Data hashes, pair counts and every setting are in `retriever-card.json`.
"""
