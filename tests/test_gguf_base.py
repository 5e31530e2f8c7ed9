"""Any GGUF file as a base (what Ollama and LM Studio keep on disk): llama.cpp serves the file as it is, and
training and the transformers engine use a copy converted once and cached by the file's hash, with the
tokenizer and chat template read from the file. Tiny random Llama and Qwen2 models, written as GGUF here."""

from __future__ import annotations

import pytest

from assistant.generate import Bot
from assistant.variants import load_variant

QUESTION = [{"role": "user", "content": "How many days to return a grinder?"}]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def gguf_base(request, tiny_model_dir, tiny_qwen2_dir, tmp_path_factory):
    """(the tiny model's folder, the same model written as an F32 GGUF file)."""
    from assistant.models.export import base_to_gguf

    folder = {"llama": tiny_model_dir, "qwen2": tiny_qwen2_dir}[request.param]
    out = tmp_path_factory.mktemp("gguf") / f"tiny-{request.param}.gguf"
    return folder, base_to_gguf(folder, out, "f32")


def _variant(base, engine):
    return load_variant(None, [f"model.base={base}", "model.quantization=none", "model.device=cpu",
                               f"serving.engine={engine}", "serving.context_tokens=1024", "serving.parallel=1",
                               "generation.max_new_tokens=10"])


def test_a_gguf_base_converts_once_with_its_tokenizer_and_chat_template(gguf_base, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from assistant.models.loading import resolve_base

    folder, gguf = gguf_base
    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path / "cache"))
    lazy = resolve_base(str(gguf), convert=False)  # llama.cpp needs only the file: nothing is converted
    assert lazy.gguf == str(gguf) and not (tmp_path / "cache" / "models").exists()
    source = resolve_base(str(gguf))
    assert source.location == lazy.location and (tmp_path / "cache" / "models").is_dir()
    assert resolve_base(str(gguf)).location == source.location  # cached by the file's hash
    original = AutoTokenizer.from_pretrained(folder)
    converted = AutoTokenizer.from_pretrained(source.location)
    rendered = original.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert converted.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True) == rendered
    assert converted(rendered)["input_ids"] == original(rendered)["input_ids"]


def test_a_gguf_base_answers_like_its_folder_on_both_engines(gguf_base, tmp_path, monkeypatch):
    """The converted copy answers exactly as the original folder on transformers; llama.cpp, serving the file
    itself, gives the same next-token log-probabilities (within its F16 KV cache's rounding: greedy answers
    of a random model can part at a near tie)."""
    from assistant.models.export import base_gguf
    from tests.test_engines import _llamacpp_logprobs, _transformers_logprobs

    folder, gguf = gguf_base
    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path / "cache"))
    expected = Bot(_variant(folder, "transformers")).reply(QUESTION).text
    assert Bot(_variant(gguf, "transformers")).reply(QUESTION).text == expected
    served = Bot(_variant(gguf, "llamacpp"))
    assert base_gguf(served.variant) == gguf  # served as it is, not rewritten
    ids = served.prepare(QUESTION).input_ids
    reference = _transformers_logprobs(folder, None, ids)
    got = _llamacpp_logprobs(served, ids, 5)
    assert list(got) == reference.topk(5).indices.tolist()
    assert all(abs(value - float(reference[token])) < 1e-2 for token, value in got.items())


def test_a_missing_gguf_file_says_so(tmp_path):
    from assistant.models.loading import ModelNotFoundError, resolve_base

    with pytest.raises(ModelNotFoundError, match="GGUF file .* does not exist"):
        resolve_base(str(tmp_path / "nowhere.gguf"))
