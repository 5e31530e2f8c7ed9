"""Prompt search on the tiny model: the development split comes from the training rows (held-out cases
dropped first), every trial is recorded with its score, poor trials are pruned on partial scores, and the
best prompt is a variant folder that loads and draws its examples from the pool it was searched with."""

from __future__ import annotations

import json

import pytest
import yaml

from assistant.variants import load_variant

LABELS = ["negative", "neutral", "positive"]
TEXTS = {"negative": ["The grinder broke.", "Refunds are slow and rude.", "It leaks water.", "Awful kettle.",
                      "The order never came.", "Descaling failed again.", "Broken handle.", "Late and damaged."],
         "neutral": ["The kettle is white.", "Shipping takes five days.", "It has a timer.", "The box is brown.",
                     "Error E3 means descale.", "It uses filters.", "The manual is printed.", "It weighs 2 kg."],
         "positive": ["Great coffee!", "I love the grinder.", "Fast and friendly.", "Best espresso ever.",
                      "Wonderful support.", "Lovely kettle.", "Perfect crema.", "Happy with the refund."]}


@pytest.fixture
def search_files(tmp_path, tiny_model_dir):
    rows = [{"text": t, "label": label} for label, texts in TEXTS.items() for t in texts]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    held = [{"id": "h1", "messages": [{"role": "user", "content": "Great coffee!"}], "reference": "positive"}]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    (tmp_path / "variant.yaml").write_text(yaml.safe_dump({
        "name": "zero-shot", "model": {"base": str(tiny_model_dir), "quantization": "none", "device": "cpu"},
        "prompt": {"template": "classify.j2", "variables": {"instruction": "Answer negative, neutral or positive."}},
        "generation": {"max_new_tokens": 3}, "serving": {"engine": "transformers"}}))
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({
        "name": "best", "variant": "variant.yaml", "data": "train.jsonl", "held_out": "eval.jsonl", "dev_size": 8,
        "metric": "accuracy", "search": "random", "trials": 8, "prune_parts": 4, "paraphrases": 1,
        "instructions": ["Answer negative, neutral or positive.", "Say negative, neutral or positive."],
        "space": {"prompt.few_shot_count": [0, 2], "prompt.few_shot_selection": ["first", "dynamic"]},
        "output_dir": "tuned", "seed": 0}))
    return tmp_path


def test_a_search_writes_the_best_prompt_as_a_variant_folder(search_files, monkeypatch):
    from assistant.training import prompt_search
    from assistant.training.prompt_search import load_prompt_search, tune_prompt

    # Scores by construction: two few-shot examples answer well, none badly, so the pruner has something
    # to stop (the tiny model's own answers are noise; what is tested is what the search does with scores).
    monkeypatch.setattr(prompt_search, "dev_score", lambda metric, answers, refs, labels:
                        0.2 if "[few-shot]" in " ".join(answers) else 0.9)
    from assistant import generate

    class MarkedBot(generate.Bot):
        def reply_batch(self, histories, batch_size=8, sampling=None):
            replies = super().reply_batch(histories, batch_size, sampling)
            for reply in replies:
                reply.text += " [few-shot]" if self.variant.prompt.few_shot_count else ""
            return replies

    monkeypatch.setattr(generate, "Bot", MarkedBot)
    config = load_prompt_search(search_files / "search.yaml")
    folder = tune_prompt(config, quiet=True)
    assert {p.name for p in folder.iterdir()} == {"variant.yaml", "examples.jsonl", "card.yaml", "search.csv", "search.png"}
    card = yaml.safe_load((folder / "card.yaml").read_text())
    assert card["data"]["dropped_as_held_out"] == 1 and card["data"]["dev"] == 8 and card["data"]["pool"] == 15
    assert len(card["trials"]) == 8 and len(card["instructions"]["candidates"]) >= 2
    complete = [t for t in card["trials"] if t["state"] == "complete"]
    pruned = [t for t in card["trials"] if t["state"] == "pruned"]
    assert card["best"]["dev_score"] == max(t["score"] for t in complete) == 0.9
    assert pruned and all(t["answered"] < 8 and t["prompt.few_shot_count"] == 2 for t in pruned)
    best = load_variant(folder / "variant.yaml")
    assert best.name == "best" and best.prompt.few_shot_count == 0 and best.prompt.few_shot is None
    pool = (folder / "examples.jsonl").read_text()
    assert "Great coffee!" not in pool  # a held-out case is in neither the pool nor the development split


def test_a_search_config_is_checked_before_anything_runs(search_files):
    from assistant.settings_reader import ConfigError
    from assistant.training.prompt_search import load_prompt_search

    with pytest.raises(ConfigError) as refused:
        load_prompt_search(search_files / "search.yaml", ["space={lora.r: [4]}", "data=nowhere.jsonl", "trials=0"])
    message = str(refused.value)
    assert "space.lora.r: not searchable" in message and "nowhere.jsonl does not exist" in message
    assert "trials: must be at least 1" in message
