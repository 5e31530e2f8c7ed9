"""Engines on the real embedded model and the committed demo adapter: llama.cpp agrees with transformers
on greedy answers, and the vLLM engine answers on a GPU (skipped elsewhere)."""

from __future__ import annotations

import json

import pytest

from assistant.generate import Bot
from assistant.variants import load_variant
from tests.conftest import ROOT

ADAPTER = ROOT / "adapters" / "tidewater-multitask"
PROMPTS = 12
TOKENS = 24


def held_out_questions(n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in (ROOT / "data" / "tidewater" / "eval.jsonl").read_text().splitlines() if line]
    return [[m for m in row["messages"] if m["role"] == "user"][:1] for row in rows[:n]]


@pytest.mark.integration
def test_llamacpp_and_transformers_give_the_same_greedy_answers_with_the_demo_adapter():
    """Same weights on both sides (the embedded model dequantized: fp32 in transformers, F32 GGUF in
    llama.cpp) plus the demo adapter through its GGUF export, greedy, 24 tokens, 12 held-out questions.
    Measured here: 12 of 12 identical. Kernels that sum in another order can flip a near-tie, so the test
    asks for 10 of 12. (The served configurations, NF4 in transformers and Q8_0 in llama.cpp, are different
    roundings of the weights and agree on 0 of 12 word for word; their quality is compared by the suites.)"""
    pytest.importorskip("xllamacpp")
    settings = ["model.quantization=none", f"generation.max_new_tokens={TOKENS}", "serving.gguf_type=f32"]
    reference = Bot(load_variant(ADAPTER / "variant.yaml", settings), "transformers")
    fast = Bot(load_variant(ADAPTER / "variant.yaml", settings), "llamacpp")
    questions = held_out_questions(PROMPTS)
    expected = [r.text for r in reference.reply_batch(questions, batch_size=4)]
    got = [r.text for r in fast.reply_batch(questions, batch_size=4)]
    same = sum(a == b for a, b in zip(expected, got))
    assert same >= 10, list(zip(expected, got))
    assert len(set(expected)) > PROMPTS // 2  # the answers differ by question: agreement is not trivial


@pytest.mark.integration
def test_auto_serves_the_embedded_base_with_llamacpp_on_the_cpu():
    pytest.importorskip("xllamacpp")
    variant = load_variant(ADAPTER / "variant.yaml", ["model.device=cpu", "generation.max_new_tokens=16"])
    bot = Bot(variant)
    assert bot.engine_name == "llamacpp"
    reply = bot.reply([{"role": "user", "content": "How many days do I have to return a grinder?"}])
    assert reply.text and 0 < reply.new_tokens <= 16
    assert any(p.source == "returns-policy.md" for p in reply.passages)


cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.cuda
def test_vllm_engine_serves_the_demo_adapter_on_a_gpu():
    pytest.importorskip("vllm")
    variant = load_variant(ADAPTER / "variant.yaml", ["model.quantization=none", "generation.max_new_tokens=24"])
    bot = Bot(variant, "vllm")
    questions = held_out_questions(4)
    replies = bot.reply_batch(questions)
    assert all(r.text and 0 < r.new_tokens <= 24 for r in replies)
    streamed = bot.reply(questions[0])
    assert streamed.text == replies[0].text
