"""DPO from preference pairs on the tiny model: the pairs are rendered as served, training moves the
policy towards the chosen answers, and the result is a variant like any other."""

from __future__ import annotations

import json

import pytest
import yaml

from assistant.data import DataError
from assistant.training.config import DpoSettings
from assistant.training.dpo import read_pairs, render_pairs, train_dpo

PAIRS = [
    ("How many days to return a grinder?", "You have 30 days.", "Shipping to Canada takes five days."),
    ("What does error E3 mean?", "Descale the boiler.", "Pause your subscription."),
    ("Can I pause my subscription?", "Yes, for three months.", "Error E3 means descaling."),
    ("When does my refund arrive?", "Within 5 business days.", "You have 30 days."),
]


@pytest.fixture
def sft_adapter(tiny_model_dir, tmp_path):
    """A LoRA adapter on the tiny model with the variant.yaml every adapter folder carries."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "adapters" / "sft"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nYou have 30 days to return a grinder.\n")
    variant = {"name": "sft", "model": {"base": str(tiny_model_dir), "quantization": "none", "device": "cpu",
                                        "adapter": "."},
               "prompt": {"template": "support.j2", "variables": {"company": "Acme", "persona": "an agent",
                                                                  "tone": "Be brief."}},
               "context": {"documents": "../../docs", "top_k": 1}, "generation": {"max_new_tokens": 8}}
    (folder / "variant.yaml").write_text(yaml.safe_dump(variant))
    return folder


def write_pairs(path, pairs=PAIRS):
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}], "chosen": c, "rejected": r,
                                        "provenance": {"source": "test"}}) + "\n" for q, c, r in pairs))
    return path


def test_pairs_are_rendered_with_the_served_prompt(sft_adapter, tmp_path):
    from assistant.generate import Bot
    from assistant.variants import load_variant

    variant = load_variant(sft_adapter / "variant.yaml")
    rows = render_pairs(variant, read_pairs(write_pairs(tmp_path / "pairs.jsonl")))
    served = Bot(variant).prepare([{"role": "user", "content": PAIRS[0][0]}])
    assert rows[0]["prompt"] == served.text and "You have 30 days to return a grinder." in rows[0]["prompt"]
    assert rows[0]["chosen"] == "You have 30 days.<|im_end|>\n"  # the answer plus its end-of-turn marker
    assert rows[0]["rejected"].startswith("Shipping to Canada")


def test_bad_pairs_name_their_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{"prompt": "hi", "chosen": "a"}\n'
                    '{"prompt": "hi", "chosen": "same", "rejected": "same"}\nnot json\n')
    with pytest.raises(DataError) as error:
        read_pairs(path)
    message = str(error.value)
    assert f"{path}:2: 'chosen' and 'rejected' must be non-empty" in message
    assert f"{path}:3: 'chosen' and 'rejected' are the same answer" in message
    assert f"{path}:4: invalid JSON" in message


def margin(variant, rows) -> float:
    """Mean log-probability of the chosen answer minus the rejected one under a variant."""
    import torch

    from assistant.generate import Bot
    from assistant.models.loading import use_adapter

    bot = Bot(variant)
    base = bot.base
    tokenizer = base.tokenizer
    total = 0.0
    for row in rows:
        scores = []
        for key in ("chosen", "rejected"):
            prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            ids = tokenizer(row["prompt"] + row[key], add_special_tokens=False)["input_ids"]
            with use_adapter(base, bot.adapter_name) as model, torch.inference_mode():
                logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            logp = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
            scores.append(float(logp[len(prompt_ids) - 1 :].sum()))
        total += scores[0] - scores[1]
    return total / len(rows)


def test_dpo_moves_the_policy_towards_chosen_answers_and_is_a_variant(sft_adapter, tmp_path):
    from safetensors.torch import load_file

    from assistant.variants import load_variant

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    settings = DpoSettings(start_from=str(sft_adapter), pairs=str(pairs), name="tiny-dpo",
                           output_dir=str(tmp_path / "adapters"), beta=0.1, max_steps=12, batch_size=4,
                           learning_rate=5e-3)
    folder = train_dpo(settings, quiet=True)
    assert folder == (tmp_path / "adapters" / "tiny-dpo").resolve()
    assert not list(folder.parent.glob(".*"))  # nothing half-written left behind

    weights = load_file(folder / "adapter_model.safetensors")
    assert weights and not any(".ref." in k for k in weights)  # only the policy, not TRL's frozen reference
    before = load_file(sft_adapter / "adapter_model.safetensors")
    assert any(not (weights[k] == before[k]).all() for k in before)

    card = yaml.safe_load((folder / "card.yaml").read_text())
    assert card["method"] == "dpo" and card["pairs"]["count"] == 4 and card["steps"] == 12
    assert card["settings"] == {"quantization": "none", "beta": 0.1, "epochs": 1.0, "max_steps": 12, "batch_size": 4, "grad_accum": 1,
                                "learning_rate": 5e-3, "max_length": 1024, "seed": 0}  # no paths, no root

    tuned = load_variant(folder / "variant.yaml")  # a variant like any other
    assert tuned.name == "tiny-dpo" and tuned.resolve(tuned.model.adapter) == folder
    assert tuned.resolve(tuned.context.documents) == (tmp_path / "docs").resolve()
    start = load_variant(sft_adapter / "variant.yaml")
    rows = render_pairs(start, read_pairs(pairs))
    assert margin(tuned, rows) > margin(start, rows) + 1.0  # chosen answers became more likely than rejected

    with pytest.raises(Exception, match="exists"):
        train_dpo(settings, quiet=True)


def test_votes_to_export_to_dpo_to_an_evaluation_report(sft_adapter, tiny_model_dir, tmp_path):
    """The whole loop through the command line: arena votes and thumbs in the store, `feedback export`,
    `train --method dpo`, and the new adapter evaluated beside the one it started from."""
    from assistant.cli.parser import main
    from assistant.evaluation import AnswerCache, evaluate_suite, load_suite
    from assistant.evaluation.report import write_report
    from assistant.feedback import FeedbackStore, Shown
    from assistant.variants import load_variant

    start = load_variant(sft_adapter / "variant.yaml")
    store = FeedbackStore(tmp_path / "feedback" / "feedback.db")
    bare = Shown("Shipping to Canada takes five days.", "bare", "b" * 12)
    for question, good, bad in PAIRS:
        conversation = [{"role": "user", "content": question}]
        store.add_vote(conversation, Shown(bad, "bare", "b" * 12), Shown(good, "sft", start.variant_hash()), "b")
    store.add_rating([{"role": "user", "content": "Do you ship to Canada?"}], Shown("Yes.", "sft", "s" * 12), 1)
    store.add_rating([{"role": "user", "content": "Do you ship to Canada?"}], bare, -1)

    pairs = tmp_path / "feedback" / "pairs.jsonl"
    assert main(["feedback", "export", "--data", str(tmp_path / "feedback"), "--out", str(pairs)]) == 0
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(rows) == 5 and {r["provenance"]["source"] for r in rows} == {"arena", "thumbs"}

    assert main(["train", "--method", "dpo", "--from", str(sft_adapter), "--pairs", str(pairs), "--name", "loop-dpo",
                 "--output-dir", str(tmp_path / "adapters"), "--max-steps", "8", "--batch-size", "5",
                 "--learning-rate", "5e-3",
                 "--quiet"]) == 0
    (tmp_path / "cases.jsonl").write_text("".join(
        json.dumps({"question": q, "reference": c}) + "\n" for q, c, _ in PAIRS))
    (tmp_path / "suite.yaml").write_text(f"""name: loop
cases: cases.jsonl
metrics: [rouge_l, perplexity]
bootstrap_rounds: 100
cost_probe: 0
reports: reports
variants:
  - file: {sft_adapter / 'variant.yaml'}
  - file: adapters/loop-dpo/variant.yaml
""")
    suite = load_suite(tmp_path / "suite.yaml")
    result = evaluate_suite(suite, cache=AnswerCache(tmp_path / "cache"), quiet=True)
    report = (write_report(result) / "report.md").read_text()
    assert "loop-dpo" in report and "sft" in report
    # preference tuning towards the chosen answers makes the references (the chosen answers) more likely
    assert (result.scores["loop-dpo"]["perplexity"].estimate.value
            < result.scores["sft"]["perplexity"].estimate.value)
