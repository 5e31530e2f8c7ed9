"""Engines on the tiny model: llama.cpp computes what transformers computes (base and LoRA, through our GGUF
export), and every engine honours the same interface (streaming, batches, stop texts, limits, adapters)."""

from __future__ import annotations

import pytest

from assistant.engines import Sampling, cut_at_stop
from assistant.generate import Bot
from assistant.variants import load_variant

pytest.importorskip("xllamacpp", reason="the llama.cpp engine's package (xllamacpp) is part of the install")

QUESTION = [{"role": "user", "content": "How many days to return a grinder?"}]


def build_random_lora(model_dir, folder):
    """A LoRA on every projection of a tiny model with random A and B (PEFT starts B at zero, which would
    test nothing), alpha != r so the scale matters, saved as a PEFT folder."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=12, init_lora_weights=False, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def random_lora(tiny_model_dir, tmp_path_factory):
    return build_random_lora(tiny_model_dir, tmp_path_factory.mktemp("lora") / "random-lora")


@pytest.fixture(scope="module")
def tiny_models(tiny_model_dir, tiny_qwen2_dir, random_lora, tmp_path_factory):
    """Each architecture the GGUF export writes: (model folder, random LoRA)."""
    return {"llama": (tiny_model_dir, random_lora),
            "qwen2": (tiny_qwen2_dir, build_random_lora(tiny_qwen2_dir, tmp_path_factory.mktemp("lora") / "qwen2-lora"))}


def _variant(tiny_model_dir, engine: str, *more: str):
    return load_variant(None, [f"model.base={tiny_model_dir}", "model.quantization=none", "model.device=cpu",
                               f"serving.engine={engine}", "serving.gguf_type=f32", "serving.parallel=2",
                               "serving.context_tokens=1024", "generation.max_new_tokens=12", *more])


def _transformers_logprobs(folder, adapter, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits, -1)


def _llamacpp_logprobs(bot, ids, k):
    """Top-k log-probabilities of the next token from llama.cpp, through the engine's own server."""
    engine = bot.engine
    server = engine._acquire()
    try:
        result = server.handle_completions({
            "prompt": ids, "max_tokens": 1, "temperature": 0, "top_k": 1, "n_probs": k,
            "lora": [{"id": i, "scale": 1.0 if i == bot._adapter_handle else 0.0} for i in range(len(engine.adapters))]})
    finally:
        engine._release()
    top = result["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {t["id"]: t["logprob"] for t in top}


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "lora"])
def test_llamacpp_logits_equal_transformers_through_the_gguf_export(tiny_models, architecture, with_adapter):
    """The tiny Llama or Qwen2 written as F32 GGUF (+ the random LoRA as GGUF LoRA) gives llama.cpp
    next-token log-probabilities equal to transformers' within 0.01 (measured: about 0.002; llama.cpp keeps
    its KV cache in F16). A wrong tensor name, permutation, bias or LoRA scale is off by far more."""
    import torch

    tiny_model_dir, random_lora = tiny_models[architecture]
    variant = _variant(tiny_model_dir, "llamacpp", *( [f"model.adapter={random_lora}"] if with_adapter else []))
    bot = Bot(variant)
    ids = bot.prepare(QUESTION).input_ids
    expected = _transformers_logprobs(tiny_model_dir, random_lora if with_adapter else None, ids)
    got = _llamacpp_logprobs(bot, ids, 10)
    top = torch.topk(expected, 10)
    assert list(got) == top.indices.tolist()  # the same ten most likely tokens, in the same order
    for token, logprob in got.items():
        assert logprob == pytest.approx(float(expected[token]), abs=1e-2)
    if with_adapter:  # and the adapter really changed the distribution (so the test could fail)
        plain = _transformers_logprobs(tiny_model_dir, None, ids)
        assert (plain - expected).abs().max() > 0.05


def test_gguf_lora_refuses_what_llamacpp_cannot_apply(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from assistant.models.export import ExportError, adapter_to_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "lm_head"])).save_pretrained(tmp_path / "a")
    with pytest.raises(ExportError, match="lm_head"):
        adapter_to_gguf(tmp_path / "a", AutoConfig.from_pretrained(tiny_model_dir), tmp_path / "a.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp"))  # nothing half-written


@pytest.mark.parametrize("engine", ["transformers", "llamacpp"])
def test_every_engine_streams_batches_stops_and_cuts(tiny_model_dir, random_lora, engine):
    variant = _variant(tiny_model_dir, engine, f"model.adapter={random_lora}")
    bot = Bot(variant)
    assert bot.engine_name == engine
    questions = [QUESTION, [{"role": "user", "content": "Error E3?"}], [{"role": "user", "content": "Pause it"}]]
    streamed = [bot.reply(q) for q in questions]
    batched = bot.reply_batch(questions, batch_size=3)
    assert [r.text for r in streamed] == [r.text for r in batched]  # greedy: one answer, however it is asked
    for r in streamed:
        assert 0 < r.new_tokens <= 12
        assert r.finish_reason == ("length" if r.new_tokens == 12 else "stop")
    short = bot.reply(QUESTION, bot.sampling(max_new_tokens=3))
    assert short.new_tokens == 3 and short.finish_reason == "length"
    long_text = streamed[0].text
    assert len(long_text) > 4
    stop = long_text[2:4]  # a stop text taken from inside the answer: the answer ends right before it
    cut = bot.reply(QUESTION, bot.sampling(stop=[stop]))
    assert cut.text == long_text[: long_text.find(stop)].strip() and cut.finish_reason == "stop"


def test_llamacpp_switches_adapters_per_request_without_reloading(tiny_model_dir, random_lora):
    plain = Bot(_variant(tiny_model_dir, "llamacpp"))
    tuned = Bot(_variant(tiny_model_dir, "llamacpp", f"model.adapter={random_lora}"))
    before = plain.reply(QUESTION).text
    tuned_text = tuned.reply(QUESTION).text
    assert plain.engine is tuned.engine  # one server, one base
    server = plain.engine._server
    assert tuned_text != before  # the adapter is applied for its requests ...
    assert plain.reply(QUESTION).text == before  # ... and not for the base's
    assert tuned.reply(QUESTION).text == tuned_text
    assert plain.engine._server is server  # alternating did not restart anything


def test_closing_a_llamacpp_stream_stops_generation(tiny_model_dir):
    bot = Bot(_variant(tiny_model_dir, "llamacpp", "generation.max_new_tokens=200"))
    stats = {}
    stream = bot.stream(bot.prepare(QUESTION), stats)
    next(stream)
    stream.close()
    assert stats["new_tokens"] < 200 and bot.engine._active == 0


def test_cut_at_stop_catches_a_stop_text_split_across_pieces():
    stats = {}
    out = list(cut_at_stop(iter(["Hel", "lo, wo", "rld. END", " more"]), ("rld. E",), stats))
    assert "".join(out) == "Hello, wo" and stats["finish_reason"] == "stop"
    assert "".join(cut_at_stop(iter(["a", "b"]), ("zz",))) == "ab"


def test_sampling_takes_the_variant_and_overrides(tiny_variant):
    s = Sampling.of(tiny_variant.generation, max_new_tokens=5, temperature=None, stop=["x"])
    assert (s.max_new_tokens, s.temperature, s.stop) == (5, tiny_variant.generation.temperature, ("x",))


def test_openai_engine_talks_to_a_real_openai_compatible_server(tiny_model_dir, monkeypatch):
    """llama.cpp's own HTTP server (OpenAI-compatible /v1/completions, with an API key) as the remote end:
    streamed and batched answers agree, limits and finish reasons come back, the key is sent."""
    import socket

    import xllamacpp

    from assistant.models.export import base_gguf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    params = xllamacpp.CommonParams()
    params.model.path = str(base_gguf(_variant(tiny_model_dir, "llamacpp")))
    params.n_ctx = 1024
    params.port = port
    params.hostnames = ["127.0.0.1"]
    params.api_keys = ["k3y"]
    params.verbosity = -1
    server = xllamacpp.Server(params)
    monkeypatch.setenv("TEST_SERVER_KEY", "k3y")
    bot = Bot(_variant(tiny_model_dir, "openai", f"serving.url=http://127.0.0.1:{port}/v1",
                       "serving.api_key_env=TEST_SERVER_KEY", "serving.model_name=tiny"))
    assert bot.engine_name == "openai"
    questions = [QUESTION, [{"role": "user", "content": "Error E3?"}]]
    streamed = [bot.reply(q) for q in questions]
    batched = bot.reply_batch(questions)
    assert [r.text for r in streamed] == [r.text for r in batched]
    assert all(0 < r.new_tokens <= 12 for r in streamed)
    short = bot.reply(QUESTION, bot.sampling(max_new_tokens=2))
    assert short.new_tokens == 2 and short.finish_reason == "length"
    monkeypatch.setenv("TEST_SERVER_WRONG_KEY", "wrong")
    from assistant.engines import EngineError

    refused = Bot(_variant(tiny_model_dir, "openai", f"serving.url=http://127.0.0.1:{port}/v1",
                           "serving.api_key_env=TEST_SERVER_WRONG_KEY"))
    with pytest.raises(EngineError, match="401"):
        refused.reply(QUESTION)
    del server


def test_export_verb_writes_gguf_and_merged_folders_tied_to_the_adapter(tiny_model_dir, random_lora, tmp_path):
    import hashlib

    import gguf
    import torch
    import yaml
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from assistant.cli.parser import main

    variant = tmp_path / "variant.yaml"
    variant.write_text(yaml.safe_dump({"name": "tuned", "model": {"base": str(tiny_model_dir), "quantization": "none",
                                                                  "device": "cpu", "adapter": str(random_lora)}}))
    assert main(["export", str(variant), "--to", "gguf", "--out", str(tmp_path / "gguf"), "--base-type", "f32"]) == 0
    card = yaml.safe_load((tmp_path / "gguf" / "export.yaml").read_text())
    weights = (random_lora / "adapter_model.safetensors").read_bytes()
    assert card["adapter"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    for name in ("adapter.gguf", "base.gguf"):
        assert card["files"][name] == hashlib.sha256((tmp_path / "gguf" / name).read_bytes()).hexdigest()
    reader = gguf.GGUFReader(tmp_path / "gguf" / "adapter.gguf")
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.1.ffn_down.weight.lora_b" in names
    assert len(names) == 2 * 7 * 2  # A and B for 7 projections in 2 layers, nothing else
    assert (tmp_path / "gguf" / "Modelfile").read_text().splitlines() == ["FROM base.gguf", "ADAPTER adapter.gguf"]

    assert main(["export", str(variant), "--to", "merged", "--out", str(tmp_path / "merged")]) == 0
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.inference_mode():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(random_lora))
        expected = tuned(input_ids=ids).logits
    assert torch.allclose(merged, expected, atol=1e-4)  # merging changed nothing the model computes
    assert yaml.safe_load((tmp_path / "merged" / "export.yaml").read_text())["exported_as"] == "merged"


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_an_adapter_merged_into_a_gguf_base_computes_what_the_unmerged_lora_does(tiny_models, architecture, tmp_path,
                                                                                monkeypatch):
    """F32: the merged file gives llama.cpp the log-probabilities of the base plus the GGUF LoRA. Q8_0: every
    tensor the adapter does not touch is copied byte for byte, the file keeps its size, and each adapted matrix
    is W + B @ A re-quantized: within Q8_0's rounding of it (half a step of its block's scale, plus the
    rounding of that scale itself, stored as float16: 0.6 steps)."""
    import gguf
    import numpy as np
    from transformers import AutoConfig

    from assistant.models.export import base_to_gguf, lora_tensors, merge_into_gguf

    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path / "cache"))
    folder, lora = tiny_models[architecture]
    config = AutoConfig.from_pretrained(folder)
    base = base_to_gguf(folder, tmp_path / "base-f32.gguf", "f32")
    unmerged = Bot(_variant(folder, "llamacpp", f"serving.gguf={base}", f"model.adapter={lora}"))
    served = Bot(_variant(folder, "llamacpp", f"serving.gguf={base}", f"model.adapter={lora}"), merged=True)
    ids = unmerged.prepare(QUESTION).input_ids
    expected, got = _llamacpp_logprobs(unmerged, ids, 10), _llamacpp_logprobs(served, ids, 10)
    assert served.engine.adapters == [] and served.engine.gguf.parent == tmp_path / "cache" / "gguf"
    assert served.engine.gguf.name.startswith("merged-") and list(got) == list(expected)
    assert all(abs(got[t] - expected[t]) < 1e-3 for t in got)

    base = base_to_gguf(folder, tmp_path / "base-q8.gguf", "q8_0")
    merged = merge_into_gguf(base, lora, config, tmp_path / "merged-q8.gguf")
    assert merged.stat().st_size == base.stat().st_size
    delta = {name: b @ a for name, (a, b) in lora_tensors(lora, config).items()}
    before = {t.name: t for t in gguf.GGUFReader(str(base)).tensors}
    for tensor in gguf.GGUFReader(str(merged)).tensors:
        old = before[tensor.name]
        assert tensor.tensor_type == old.tensor_type
        if tensor.name not in delta:
            assert np.array_equal(tensor.data, old.data), tensor.name
            continue
        target = gguf.quants.dequantize(old.data, old.tensor_type) + delta[tensor.name]
        result = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        step = np.abs(target.reshape(-1, 32)).max(axis=1, keepdims=True) / 127  # Q8_0: 32 values per block
        assert np.all(np.abs(result.reshape(-1, 32) - target.reshape(-1, 32)) <= 0.6 * step), tensor.name


def test_a_merge_that_would_round_the_adapter_away_is_refused_and_served_unmerged(tiny_models, tmp_path, monkeypatch):
    """A LoRA whose change is far finer than the base's Q8_0 grid: re-quantizing W + B A gives back W, so the
    merge refuses (nothing written, the refusal remembered in the cache) and the bot applies the LoRA per
    request instead, with the unmerged bot's answer."""
    import shutil

    from safetensors.numpy import load_file, save_file
    from transformers import AutoConfig

    from assistant.models.export import MergeLossError, base_to_gguf, merge_into_gguf, merged_gguf

    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path / "cache"))
    folder, lora = tiny_models["llama"]
    faint = tmp_path / "faint-lora"
    shutil.copytree(lora, faint)
    weights = load_file(str(faint / "adapter_model.safetensors"))
    save_file({k: (v * 1e-4 if "lora_B" in k else v).astype(v.dtype) for k, v in weights.items()},
              str(faint / "adapter_model.safetensors"))
    base = base_to_gguf(folder, tmp_path / "base-q8.gguf", "q8_0")
    with pytest.raises(MergeLossError, match="keep only"):
        merge_into_gguf(base, faint, AutoConfig.from_pretrained(folder), tmp_path / "merged.gguf")
    assert not (tmp_path / "merged.gguf").exists()
    assert merge_into_gguf(base, lora, AutoConfig.from_pretrained(folder), tmp_path / "merged.gguf").is_file()

    settings = (f"serving.gguf={base}", f"model.adapter={faint}", "generation.max_new_tokens=6")
    served = Bot(_variant(folder, "llamacpp", *settings), merged=True)
    unmerged = Bot(_variant(folder, "llamacpp", *settings))
    assert served.reply(QUESTION).text == unmerged.reply(QUESTION).text
    assert not served.merged and len(served.engine.adapters) == 1  # the LoRA, applied per request
    with pytest.raises(MergeLossError):
        merged_gguf(served.variant)  # remembered: no second merge to find out
    assert not list((tmp_path / "cache" / "gguf").glob("merged-*.gguf"))
