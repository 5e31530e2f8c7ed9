"""The 0.5B catalog base end to end, as `make test` installs it: its GGUF file served by llama.cpp as it is
(no conversion), the tokenizer and chat template read from the file, the cited support prompt answering a
question from the passage it was given and citing it."""

from __future__ import annotations

import pytest

from assistant.models.catalog import CATALOG
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
QWEN = "qwen2.5-coder-0.5b-instruct"


def test_the_qwen_base_answers_from_its_passages_on_llamacpp():
    from assistant.generate import Bot
    from assistant.models.export import base_gguf
    from assistant.models.loading import converted_folder
    from assistant.variants import load_variant

    gguf = CATALOG[QWEN].file()
    assert gguf is not None, f"make installs {QWEN} (assistant models install {QWEN})"
    variant = load_variant(ROOT / "configs" / "tidewater-qwen.yaml",
                           ["generation.max_new_tokens=60", "serving.parallel=1", "serving.context_tokens=2048"])
    converted = converted_folder(gguf, QWEN)
    before = converted.exists()
    bot = Bot(variant)
    assert bot.engine_name == "llamacpp" and base_gguf(variant) == gguf  # the catalog file itself
    reply = bot.reply([{"role": "user", "content": "How many days do I have to return an opened grinder?"}])
    assert "30" in reply.text, reply.text
    assert any(p.source == "returns-policy.md" for p in reply.passages)
    assert "<|im_start|>system" in bot.prepare([{"role": "user", "content": "hi"}]).text  # ChatML from the GGUF
    assert converted.exists() == before  # serving never needs the 2.5 GB float32 copy training uses
