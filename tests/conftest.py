"""Shared fixtures. Unit tests use a tiny random Llama and a tokenizer trained here in milliseconds;
integration tests use the real embedded model (see test_integration.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "How long do I have to return my grinder? You have 30 days to return it for a refund.",
    "My espresso machine shows error E3. Descale the boiler and restart the machine.",
    "Can I pause my coffee subscription? Yes, pause it for up to three months in your account.",
    "Shipping to Canada takes five to eight business days and customs fees are included.",
    "You are a helpful assistant. Reference passages: warranty, billing, refunds, orders.",
] * 4


def build_tiny_model(folder: Path, seed: int = 0, architecture: str = "llama") -> Path:
    """Writes a 2-layer random Llama (or Qwen2, with random query, key and value biases) and a ChatML
    byte-level BPE tokenizer into ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    special = ["<|im_end|>", "<|im_start|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.3,  # wide enough that greedy decoding wanders over the vocabulary
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = model_class(config)
    with torch.no_grad():  # biases start at zero, which would test nothing
        for name, param in model.named_parameters():
            if name.endswith("proj.bias"):
                param.normal_(0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), architecture="qwen2")


@pytest.fixture
def tiny_variant(tiny_model_dir, tmp_path):
    """A variant on the tiny model, without quantization, with two small documents to retrieve from."""
    from assistant.variants import load_variant

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text(
        "# Returns\n\n## Window\n\nYou have 30 days to return any grinder or machine.\n\n"
        "## Refunds\n\nRefunds reach your card within 5 business days.\n"
    )
    (docs / "errors.md").write_text("# Error codes\n\n## E3\n\nE3 means the boiler needs descaling.\n")
    return load_variant(
        None,
        [
            f"model.base={tiny_model_dir}",
            "model.quantization=none",
            "model.device=cpu",
            "generation.max_new_tokens=12",
            f"context.documents={docs}",
            "prompt.template=support.j2",
            "prompt.variables={company: Acme, persona: a support agent, tone: Be brief.}",
        ],
    )
