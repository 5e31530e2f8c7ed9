"""Integration tests: the real embedded SmolLM2-135M-Instruct, converted from its GGUF file."""

import os
import subprocess
import sys

import pytest

from assistant.generate import Bot
from assistant.variants import load_variant
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

FACT = [{"role": "user", "content": "What is the capital of France?"}]


def embedded(quantization, *extra):
    return Bot(load_variant(None, [f"model.quantization={quantization}", "model.device=cpu",
                                   "generation.max_new_tokens=24", *extra]))


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_factual_answer_fp32_and_nf4(quantization):
    bot = embedded(quantization)
    reply = bot.reply(FACT)
    assert "paris" in reply.text.lower()
    assert 0 < reply.new_tokens <= 24
    assert bot.base.quantization == quantization
    assert str(bot.base.dtype) == "torch.float32"


def test_nf4_weights_are_4bit_and_smaller():
    import bitsandbytes as bnb

    nf4, fp32 = embedded("nf4").base, embedded("none").base
    layers = [m for m in nf4.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 30 * 7
    assert nf4.memory_bytes() < 0.6 * fp32.memory_bytes()


def test_support_question_retrieves_and_cites_the_policy():
    bot = Bot(load_variant(ROOT / "configs" / "tidewater.yaml", ["generation.max_new_tokens=48"]))
    prepared = bot.prepare([{"role": "user", "content": "How many days do I have to return a grinder?"}])
    assert any(p.source == "returns-policy.md" for p in prepared.passages)
    assert "returns-policy.md" in prepared.text  # the model sees where each passage comes from
    reply = bot.reply([{"role": "user", "content": "How many days do I have to return a grinder?"}])
    assert reply.text and reply.passages == prepared.passages


def run_cli(*args, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "assistant", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={**os.environ, **(env or {})})


def test_cli_render_prints_the_literal_prompt_and_token_counts():
    result = run_cli("render", "--variant", "configs/tidewater.yaml", "{{ 7*7 }} where is my order?")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "<|im_start|>user\n{{ 7*7 }} where is my order?<|im_end|>" in out
    assert "## Messages" in out and "--- system (" in out
    assert "prompt: " in out and "budget: " in out and "passages: " in out


def test_cli_chat_streams_answers_from_stdin():
    result = run_cli("chat", "--set", "generation.max_new_tokens=24", "--quantization", "none",
                     stdin="What is the capital of France?\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert "paris" in result.stdout.lower()


def test_cli_info_describes_the_resolved_model():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert "quantization      nf4" in result.stdout
    assert "memory footprint" in result.stdout and "MiB" in result.stdout
    assert "<|im_end|>" in result.stdout


def test_two_first_runs_at_once_convert_the_cache_safely(tmp_path):
    code = ("from assistant.models.loading import resolve_base; from transformers import AutoConfig; "
            "s = resolve_base('smollm2-135m-instruct'); AutoConfig.from_pretrained(s.location); print(s.location)")
    env = {**os.environ, "ASSISTANT_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    locations = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(locations) == 1
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == [os.path.basename(locations.pop())]  # no staging left
    assert (next(models.iterdir()) / "model.safetensors").is_file()


cuda = pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (the CPU path is tested above)"
)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_cuda_bf16_factual_answer(quantization):
    import torch

    bot = Bot(load_variant(None, [f"model.quantization={quantization}", "model.device=cuda",
                                  "generation.max_new_tokens=24"]))
    assert bot.base.dtype == torch.bfloat16
    assert next(bot.base.model.parameters()).device.type == "cuda"
    assert "paris" in bot.reply(FACT).text.lower()


@cuda
@pytest.mark.cuda
def test_cuda_nf4_uses_bitsandbytes_kernels():
    import bitsandbytes as bnb
    import torch

    bot = Bot(load_variant(None, ["model.quantization=nf4", "model.device=cuda"]))
    layer = next(m for m in bot.base.model.modules() if isinstance(m, bnb.nn.Linear4bit))
    assert layer.weight.device.type == "cuda" and layer.weight.dtype == torch.uint8
    assert layer.compute_dtype == torch.bfloat16
