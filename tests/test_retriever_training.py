"""`assistant train-retriever` on a tiny random sentence-embedding model: the pairs built, that training moves
retrieval the right way, the exact folder written (and nothing when training fails), config errors, the round
trip that filters drafted questions, and the cross-encoder kind with ``rerank_scores``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from assistant.context import load_documents
from assistant.data import DataError
from assistant.settings_reader import ConfigError
from assistant.training.config import load_retriever_config
from assistant.training.question_pairs import PairBuilder, Question, keep_round_trips, parse_questions

DOCUMENTS = {
    "returns.md": "# Returns\n\n## Window\n\nYou may return a grinder within 30 days of delivery for a full refund.\n\n"
                  "## Labels\n\nPrint a prepaid return label from your account page and drop the box at a carrier.\n",
    "shipping.md": "# Shipping\n\n## Speed\n\nStandard shipping takes five business days and express takes two.\n\n"
                   "## Alaska\n\nOrders to Alaska and Hawaii go by ground only and arrive in ten days.\n",
    "warranty.md": "# Warranty\n\n## Coverage\n\nThe warranty covers the boiler, pump and heater for two years.\n\n"
                   "## Claims\n\nFile a claim with your serial number and a photo of the fault.\n",
    "billing.md": "# Billing\n\n## Cards\n\nWe accept Visa, Mastercard and PayPal; a card is charged when the order "
                  "ships.\n\n## Invoices\n\nAn invoice with the sales tax is emailed after every charge.\n",
    "descaling.md": "# Descaling\n\n## When\n\nDescale the espresso machine every month where the water is hard.\n\n"
                    "## How\n\nMix the descaler with water, run it through the group head, then rinse twice.\n",
    "accounts.md": "# Accounts\n\n## Password\n\nA password needs twelve characters; reset it with the forgot link.\n\n"
                   "## Delete\n\nDeleting your account erases your orders and addresses after thirty days.\n",
}
ROWS = [  # (question, answer, source): five per document, answers in the words of one of its sections
    ("How many days do I get to send my grinder back?", "30 days from delivery, for a full refund.",
     "returns.md"),
    ("Is there a deadline for bringing an item back?", "Yes, you may return it within 30 days.",
     "returns.md"),
    ("Where do I get the sticker to mail my return?", "Print a prepaid return label on your account page.",
     "returns.md"),
    ("Do you pay postage on items I send back?", "The return label is prepaid; drop the box at a carrier.",
     "returns.md"),
    ("Can I get my money back after three weeks?", "Yes, within 30 days of delivery you get a full refund.",
     "returns.md"),
    ("When will my parcel arrive?", "Standard shipping takes five business days.", "shipping.md"),
    ("Is there a faster delivery option?", "Express shipping takes two business days.", "shipping.md"),
    ("Do you deliver to Honolulu?", "Hawaii orders go by ground only and arrive in ten days.", "shipping.md"),
    ("Why can't I pick express to Anchorage?", "Alaska orders go by ground only, in ten days.", "shipping.md"),
    ("How quick is the standard option?", "It takes five business days.", "shipping.md"),
    ("My pump died, is that covered?", "The warranty covers the pump for two years.", "warranty.md"),
    ("How long is the guarantee on the heater?", "The heater is covered for two years.", "warranty.md"),
    ("What do I need to report a broken boiler?", "File a claim with the serial number and a photo.", "warranty.md"),
    ("Which details go into a repair request?", "Your serial number and a photo of the fault.", "warranty.md"),
    ("Does the guarantee include the boiler?", "Yes, the boiler is covered for two years.", "warranty.md"),
    ("Can I pay with PayPal?", "We accept Visa, Mastercard and PayPal.", "billing.md"),
    ("When does my card get billed?", "A card is charged when the order ships.", "billing.md"),
    ("Where is my receipt with VAT?", "An invoice with the sales tax is emailed after every charge.", "billing.md"),
    ("Do you send invoices?", "Yes, an invoice is emailed after every charge.", "billing.md"),
    ("Is Mastercard fine?", "We accept Visa and Mastercard.", "billing.md"),
    ("How often should I clean scale out of the machine?", "Descale it every month where water is hard.",
     "descaling.md"),
    ("What are the steps to descale?", "Mix the descaler with water, run it through the group head, rinse twice.",
     "descaling.md"),
    ("Does hard tap water matter for my espresso maker?", "Yes: descale every month with hard water.",
     "descaling.md"),
    ("How many rinses after the descaler?", "Rinse twice after running the descaler.", "descaling.md"),
    ("Through which part does the descaling solution run?", "Run it through the group head.", "descaling.md"),
    ("How long must my login secret be?", "A password needs twelve characters.", "accounts.md"),
    ("I forgot my password, what now?", "Reset it with the forgot link.", "accounts.md"),
    ("Can you remove my profile?", "Deleting your account erases your orders after thirty days.", "accounts.md"),
    ("What happens to my addresses if I close my account?", "They are erased after thirty days.", "accounts.md"),
    ("Is a short password allowed?", "No, a password needs twelve characters.", "accounts.md"),
]


def build_tiny_encoder(folder: Path, texts: list[str]) -> Path:
    """A random 2-layer BERT (hidden 32) with a WordPiece vocabulary of ``texts`` and mean pooling, saved as a
    sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=special))
    cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    transformer = Transformer(str(folder / "bert"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                                device="cpu")
    model.save(str(folder / "encoder"), create_model_card=False)
    return folder / "encoder"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train no faster on two threads, and two threads slow down many times over when another
    process keeps the cores busy (OpenMP threads wait for each other at every step)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    texts = list(DOCUMENTS.values()) + [f"{q} {a}" for q, a, _ in ROWS]
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"), texts)


@pytest.fixture
def workspace(tmp_path, tiny_encoder):
    """Documents, labelled conversations and a retriever config on the tiny encoder."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCUMENTS.items():
        (docs / name).write_text(text)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "source": s}
            for q, a, s in ROWS]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "retriever.yaml").write_text(yaml.safe_dump({
        "documents": "docs", "train": "train.jsonl", "output": "out/retriever", "base": str(tiny_encoder),
        "epochs": 30, "batch_size": 10, "learning_rate": 0.003, "warmup_ratio": 0.0, "max_seq_length": 64,
        "validation_fraction": 0.2, "seed": 0}))
    return tmp_path


def builder_for(workspace: Path) -> PairBuilder:
    return PairBuilder(load_documents(workspace / "docs", 120))


def test_pairs_take_the_source_passage_that_best_matches_the_answer_and_a_hard_negative_elsewhere(workspace):
    builder = builder_for(workspace)
    question = Question("Can I return my espresso machine?", "returns.md", "train.jsonl:1", 0,
                        answer="Yes: print a prepaid label from your account page.")
    [pair] = builder.pairs([question], hard_negatives=2)
    # the answer's words are those of the Labels section, though the question says 'return' like Window
    assert (pair.positive.source, pair.positive.heading) == ("returns.md", "Returns > Labels")
    # the question's best BM25 passages outside returns.md: 'espresso machine' is in descaling.md
    assert [n.source for n in pair.negatives][0] == "descaling.md" and len(pair.negatives) == 2
    assert all(n.source != "returns.md" for n in pair.negatives)
    others = [p for p in builder.passages if p.source != "returns.md"]
    scores = builder.everything.scores(question.text)
    best = max(others, key=lambda p: scores[builder.passages.index(p)])
    assert pair.negatives[0] == best


def test_rows_without_a_known_document_are_skipped_and_a_missing_file_is_an_error(workspace):
    from assistant.training.question_pairs import read_labelled_questions

    docs = workspace / "docs"
    (docs / "notes.pdf").write_text("not a document the passages come from")
    passages = load_documents(docs, 120)
    with open(workspace / "train.jsonl", "a") as handle:
        handle.write(json.dumps({"prompt": "A question?", "completion": "An answer."}) + "\n")
        handle.write(json.dumps({"prompt": "Another?", "completion": "Yes.", "source": "notes.pdf"}) + "\n")
    read = read_labelled_questions(workspace / "train.jsonl", docs, passages)
    assert (read.rows, read.skipped_no_source, read.skipped_unknown_document) == (len(ROWS) + 2, 1, 1)
    assert len(read.questions) == len(ROWS) and read.questions[0].text == ROWS[0][0]

    with open(workspace / "train.jsonl", "a") as handle:
        handle.write(json.dumps({"prompt": "Third?", "completion": "No.", "source": "gone.md"}) + "\n")
    with pytest.raises(DataError, match=rf"train.jsonl:{len(ROWS) + 3}: source 'gone.md' is no file"):
        read_labelled_questions(workspace / "train.jsonl", docs, passages)


def test_follow_up_turns_are_searched_with_the_turn_before(workspace):
    from assistant.training.question_pairs import read_labelled_questions

    row = {"messages": [{"role": "user", "content": "Do you ship to Alaska?"},
                        {"role": "assistant", "content": "By ground only."},
                        {"role": "user", "content": "How long does that take?"},
                        {"role": "assistant", "content": "Ten days."}], "source": "shipping.md"}
    (workspace / "one.jsonl").write_text(json.dumps(row) + "\n")
    passages = load_documents(workspace / "docs", 120)
    every = read_labelled_questions(workspace / "one.jsonl", workspace / "docs", passages, "all").questions
    assert [q.text for q in every] == ["Do you ship to Alaska?", "Do you ship to Alaska?\nHow long does that take?"]
    assert [q.answer for q in every] == ["By ground only.", "Ten days."] and {q.group for q in every} == {0}
    first = read_labelled_questions(workspace / "one.jsonl", workspace / "docs", passages, "first").questions
    assert [q.text for q in first] == ["Do you ship to Alaska?"]


def training_hit_at_1(folder: Path | None, workspace: Path) -> float:
    """Document hit@1 of the training questions against every passage, with the embedder in ``folder``."""
    from assistant.training.retriever import dense_rankings, document_metrics

    passages = load_documents(workspace / "docs", 120)
    questions = [Question(q, s, "", i) for i, (q, _, s) in enumerate(ROWS)]
    rankings = dense_rankings(folder, passages, questions, workspace)
    return document_metrics(rankings, [q.source for q in questions])["hit@1"]


def test_a_trained_embedder_retrieves_its_training_questions_better(workspace, tiny_encoder):
    from assistant.training.retriever import train_retriever

    config = load_retriever_config(workspace / "retriever.yaml", ["validation_fraction=0"])
    folder = train_retriever(config, quiet=True)
    before, after = training_hit_at_1(tiny_encoder, workspace), training_hit_at_1(folder, workspace)
    # measured in 28 processes: 0.13 to 0.4 before, 0.9 to 1.0 after, never less than 0.53 apart
    assert after >= 0.8 and after >= before + 0.3, (before, after)


def test_the_output_folder_holds_the_model_card_and_readme_only(workspace, capsys):
    from assistant.cli.parser import main
    from assistant.retrieval import SentenceEncoder

    assert main(["train-retriever", str(workspace / "retriever.yaml"), "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    folder = workspace / "out" / "retriever"
    assert out.startswith(f"bi-encoder written to {folder} (24 pairs, ")
    assert "held-out questions (6), document level:" in out and "| trained |" in out
    assert sorted(p.name for p in folder.iterdir()) == [
        "1_Pooling", "README.md", "config.json", "config_sentence_transformers.json", "model.safetensors",
        "modules.json", "retriever-card.json", "sentence_bert_config.json", "tokenizer.json", "tokenizer_config.json"]
    assert not list(folder.rglob("*.bin")) and not list((workspace / "out").glob(".*"))
    assert SentenceEncoder(folder).dimension == 32  # what a variant's context.embedder loads

    card = json.loads((folder / "retriever-card.json").read_text())
    assert list(card) == ["kind", "created", "base", "data", "settings", "training", "metrics", "packages"]
    assert card["kind"] == "bi-encoder" and card["base"]["weights_sha256"]
    assert card["data"]["train"]["file"] == "../../train.jsonl" and len(card["data"]["train"]["sha256"]) == 64
    documents = card["data"]["documents"]
    assert documents == {"folder": "../../docs", "fingerprint": documents["fingerprint"], "documents": 6,
                         "passages": 12} and len(documents["fingerprint"]) == 16
    assert card["data"]["questions"] == {"source": "conversations", "rows": 30, "skipped_no_source": 0,
                                         "skipped_unknown_document": 0, "questions": 30, "train": 24, "held_out": 6}
    assert card["data"]["pairs"] == {"kept": 24, "hard_negatives_each": 1}
    assert card["settings"]["epochs"] == 2 and "documents" not in card["settings"] and "root" not in card["settings"]
    assert card["training"]["steps"] == 6 and len(card["training"]["loss"]) == 6 and card["training"]["seconds"] > 0
    metrics = card["metrics"]
    assert metrics["held_out_questions"] == 6
    for name in ("bm25", "before", "after"):
        assert list(metrics[name]) == ["hit@1", "hit@3", "hit@5", "mrr"]
        assert 0 <= metrics[name]["hit@1"] <= metrics[name]["hit@3"] <= metrics[name]["hit@5"] <= 1
    assert {"sentence-transformers", "torch"} <= set(card["packages"])
    readme = (folder / "README.md").read_text()
    assert "| trained |" in readme and "| base model |" in readme and "context.embedder" in readme


def test_nothing_is_written_when_training_fails_and_an_existing_folder_stays(workspace, monkeypatch):
    import assistant.training.retriever as retriever

    config = load_retriever_config(workspace / "retriever.yaml", ["epochs=1"])

    def broken_fit(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(retriever, "fit_bi_encoder", broken_fit)
    with pytest.raises(RuntimeError, match="out of memory"):
        retriever.train_retriever(config, quiet=True)
    assert not (workspace / "out").exists() or not list((workspace / "out").iterdir())

    monkeypatch.undo()
    first = retriever.train_retriever(config, quiet=True)
    written = (first / "retriever-card.json").read_text()
    with pytest.raises(ConfigError, match="exists; choose another output or pass --overwrite"):
        retriever.train_retriever(config, quiet=True)
    monkeypatch.setattr(retriever, "fit_bi_encoder", broken_fit)
    with pytest.raises(RuntimeError):
        retriever.train_retriever(config, overwrite=True, quiet=True)
    assert (first / "retriever-card.json").read_text() == written  # the old folder, whole
    assert sorted(p.name for p in (workspace / "out").iterdir()) == ["retriever"]


def test_help_documents_every_setting(capsys):
    import dataclasses

    from assistant.cli.parser import main
    from assistant.settings_reader import setting_docs
    from assistant.training.config import DraftingSettings, RetrieverTrainConfig

    with pytest.raises(SystemExit):
        main(["train-retriever", "--help"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    for prefix, cls in (("", RetrieverTrainConfig), ("drafting.", DraftingSettings)):
        docs = setting_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name not in ("drafting", "root"):
                assert f"\n  {prefix}{f.name}  (" in text and " ".join(docs[f.name].split()) in flat, f.name
    assert "  kind  (bi-encoder | cross-encoder; default bi-encoder)" in text


def test_config_errors_name_the_file_and_come_together(workspace):
    from assistant.cli.parser import main

    bad = workspace / "bad.yaml"
    bad.write_text("documents: docs\noutput: out\ncolour: red\nepochs: many\n")
    with pytest.raises(ConfigError) as err:
        load_retriever_config(bad)
    assert str(err.value).startswith(f"{bad}: 2 problem(s)")
    assert "colour: unknown setting" in str(err.value) and "epochs: expected a number" in str(err.value)

    bad.write_text("documents: nowhere\ntrain: missing.jsonl\nkind: cross-encoder\nhard_negatives: 0\n"
                   "batch_size: 0\nvalidation_fraction: 1\nbase: no-model\n")
    with pytest.raises(ConfigError) as err:
        load_retriever_config(bad)
    message = str(err.value)
    assert message.startswith(f"{bad}: 7 problem(s)")
    for expected in ("documents: ", "nowhere is not a folder", "missing.jsonl does not exist", "output: the folder",
                     "no-model is not a model folder", "batch_size: must be at least 1",
                     "hard_negatives: the cross-encoder needs at least 1", "validation_fraction: must be in [0, 1)"):
        assert expected in message

    assert main(["train-retriever", str(bad), "--quiet"]) == 2
    assert main(["train-retriever", str(workspace / "retriever.yaml"), "--set", "kind=poly-encoder"]) == 2


def test_a_bad_source_stops_the_command_before_any_model_loads(workspace, capsys):
    import sys

    from assistant.cli.parser import main

    with open(workspace / "train.jsonl", "a") as handle:
        handle.write(json.dumps({"prompt": "Q?", "completion": "A.", "source": "gone.md"}) + "\n")
    loaded_before = "sentence_transformers" in sys.modules
    assert main(["train-retriever", str(workspace / "retriever.yaml"), "--quiet"]) == 2
    assert f"train.jsonl:{len(ROWS) + 1}: source 'gone.md'" in capsys.readouterr().err
    assert ("sentence_transformers" in sys.modules) == loaded_before and not (workspace / "out").exists()


def test_drafted_questions_are_kept_only_when_bm25_finds_their_document_in_the_top_3(workspace):
    builder = builder_for(workspace)
    # a question in its own passage's words comes back; one in another document's words does not
    good = {"returns.md": "How many days to return a grinder for a refund?",
            "shipping.md": "How many business days does express shipping take?",
            "warranty.md": "Does the warranty cover the pump and heater?",
            "billing.md": "Do you accept Visa and PayPal cards?",
            "descaling.md": "How often do I descale the espresso machine?",
            "accounts.md": "How many characters does a password need?"}
    drafts = [[good[p.source], "Does the warranty cover the boiler pump heater?" if p.source != "warranty.md"
               else "Which cards do you accept, Visa or PayPal?"] for p in builder.passages]
    result = keep_round_trips(builder, drafts)
    assert result.drafted == 2 * len(builder.passages)
    assert [q.text for q in result.questions] == [good[p.source] for p in builder.passages]
    assert all(q.passage == p for q, p in zip(result.questions, builder.passages))  # the positive
    assert len(result.rejected) == len(builder.passages)
    for passage, question in zip(builder.passages, [d[1] for d in drafts]):
        assert builder.round_trip(passage, question) is False


def test_synthetic_training_drafts_filters_and_trains(workspace, monkeypatch):
    import assistant.training.retriever as retriever

    asked = []

    def fake_draft(passages, base, quantization, count, max_new_tokens, quiet=False):
        asked.append((len(passages), base, count))
        return [[f"{p.heading.split(' > ')[-1]} {p.text.split('.')[0]}?", "What is the colour of the moon?"]
                for p in passages]

    monkeypatch.setattr(retriever, "draft_questions", fake_draft)
    config = load_retriever_config(workspace / "retriever.yaml",
                                   ["train=null", "epochs=1", "drafting.questions_per_passage=2"])
    card = json.loads((retriever.train_retriever(config, quiet=True) / "retriever-card.json").read_text())
    assert asked == [(12, "smollm2-135m-instruct", 2)]
    questions = card["data"]["questions"]
    assert (questions["source"], questions["drafted"], questions["kept"], questions["rejected_by_round_trip"]) == (
        "drafted", 24, 12, 12)
    assert questions["questions"] == 12 and card["data"]["train"] is None


def test_drafting_goes_through_the_bot_and_parses_one_question_per_line(tiny_model_dir, workspace):
    from assistant.training.question_pairs import draft_questions

    drafted = ("1. Can I return it?\n2) How long?\n- What does shipping cost me?\nQ3: What does shipping cost me?\n"
               "Returns > Window\nYou may return a grinder within 30 days.\nDo you ship to Canada?")
    assert parse_questions(drafted, 5) == ["Can I return it?", "What does shipping cost me?", "Do you ship to Canada?"]
    assert parse_questions(drafted, 2) == ["Can I return it?", "What does shipping cost me?"]
    passages = load_documents(workspace / "docs", 120)[:2]
    drafted = draft_questions(passages, str(tiny_model_dir), "none", count=2, max_new_tokens=12, quiet=True)
    assert len(drafted) == 2 and all(isinstance(q, list) and len(q) <= 2 for q in drafted)


def test_the_cross_encoder_kind_trains_and_scores_a_positive_above_its_negative(workspace):
    from assistant.reranking import rerank_scores
    from assistant.retrieval import passage_text
    from assistant.training.retriever import train_retriever

    config = load_retriever_config(workspace / "retriever.yaml", [
        "kind=cross-encoder", "output=out/reranker", "epochs=40", "batch_size=8", "learning_rate=0.003"])
    folder = train_retriever(config, quiet=True)
    card = json.loads((folder / "retriever-card.json").read_text())
    assert card["kind"] == "cross-encoder" and set(card["metrics"]) == {
        "held_out_questions", "bm25", "candidates", "before", "after"}
    assert not list(folder.rglob("*.bin")) and (folder / "model.safetensors").is_file()

    builder = builder_for(workspace)
    questions = [Question(q, s, "", i, answer=a) for i, (q, a, s) in enumerate(ROWS)]
    pairs = builder.pairs(questions, 1)
    ranked_first = [rerank_scores(folder, p.question.text, [passage_text(p.positive), passage_text(p.negatives[0])])
                    for p in pairs]
    wins = sum(positive > negative for positive, negative in ranked_first)
    assert wins >= 0.8 * len(pairs), ranked_first  # measured in 12 processes: 26 to 29 of 30
    assert rerank_scores(folder, "anything", []) == []
