"""The committed demo adapter, on the real embedded model: it loads with plain transformers + peft, it is
served through its variant file, and its loss on held-out evaluation answers is below the base model's
(measured here, not read from its card)."""

import subprocess
import sys

import pytest
import yaml

from assistant.generate import Bot
from assistant.variants import load_variant
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

ADAPTER = ROOT / "adapters" / "tidewater-multitask"


def test_demo_adapter_is_committed_and_self_describing():
    card = yaml.safe_load((ADAPTER / "card.yaml").read_text())
    assert card["base_model"]["id"] == "smollm2-135m-instruct" and card["base_model"]["quantization"] == "nf4"
    assert [t["name"] for t in card["hyperparameters"]["tasks"]] == ["support", "intent", "sentiment"]
    assert (ADAPTER / "adapter_model.safetensors").stat().st_size < 20 * 2**20


def test_demo_adapter_loads_with_transformers_and_peft_only():
    from assistant.models.loading import resolve_base

    location = resolve_base("smollm2-135m-instruct").location
    code = (f"import sys; from transformers import AutoModelForCausalLM; from peft import PeftModel; "
            f"m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({location!r}), {str(ADAPTER)!r}); "
            f"assert not any(n.startswith('assistant') for n in sys.modules); print(m.active_adapter)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_demo_adapter_beats_the_base_on_held_out_answers():
    import torch

    from assistant.data import read_jsonl

    bot = Bot(load_variant(ADAPTER / "variant.yaml"))
    records, problems = read_jsonl(ROOT / "data" / "tidewater" / "eval.jsonl")
    assert not problems
    examples = [bot.encode(r.messages[:-1], r.messages[-1]["content"]) for r in records[:20]]
    base = bot.base

    def mean_loss(adapter_name):
        from assistant.models.loading import use_adapter

        total, count = 0.0, 0
        with base.lock, use_adapter(base, adapter_name) as model, torch.inference_mode():
            for ids, labels in examples:
                out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
                n = sum(1 for x in labels[1:] if x != -100)
                total, count = total + out.loss.item() * n, count + n
        return total / count

    tuned, plain = mean_loss(bot.adapter_name), mean_loss(None)
    assert tuned < plain, (tuned, plain)


def test_demo_adapter_variant_answers_with_sources():
    bot = Bot(load_variant(ADAPTER / "variant.yaml", ["generation.max_new_tokens=40"]))
    reply = bot.reply([{"role": "user", "content": "How many days do I have to return a grinder?"}])
    assert reply.text and any(p.source == "returns-policy.md" for p in reply.passages)
