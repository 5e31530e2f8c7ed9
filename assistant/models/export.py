"""Every GGUF file we write or pick, in one place: a LoRA adapter as a GGUF LoRA (llama.cpp, llama-server,
Ollama), a base model as a GGUF file, an adapter merged into a GGUF base, and which GGUF file a variant runs
on llama.cpp (written once into the cache); plus an adapter merged into its base as a plain Hugging Face
folder (vLLM, TGI). The llama.cpp engine imports from here, never the reverse.

    assistant export ADAPTER_OR_VARIANT --to gguf|merged [--out DIR]

GGUF notes, as llama.cpp reads the two architectures written here, Llama (SmolLM2, Mistral) and Qwen2:
- Tensor names come from the ``gguf`` package's map for the architecture
  (``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q``); Qwen2's query, key and value biases too.
- For Llama, llama.cpp stores the query and key projections with the rotary halves interleaved, so their
  output rows are permuted; a LoRA's B matrix (rows = outputs) gets the same permutation, its A matrix none.
  Qwen2 uses the other rotary layout (NEOX) in llama.cpp: nothing is permuted.
- PEFT scales a LoRA by alpha / r (alpha / sqrt(r) with rsLoRA, per-module patterns possible); llama.cpp by
  alpha / r. The PEFT scale is folded into B and alpha is written as r, so llama.cpp's scale is exactly 1.
- SmolLM2 ties its output layer to the token embedding: a base writes no ``output`` tensor then, and an
  adapter on ``lm_head`` or ``embed_tokens`` is refused (llama.cpp applies no LoRA to the embedding).
- ``merge_into_gguf`` folds an adapter into a GGUF base as llama.cpp would apply it (the same tensors as the
  GGUF LoRA), re-quantizing each changed matrix to its own type with llama.cpp's quantizer, so the merged
  file is as large, and decodes as fast, as the base file. A LoRA's change to a weight is often finer than
  a 4- or 5-bit base's quantization grid, and re-quantizing then rounds most of it away: the merge measures
  how much of the change the file keeps and refuses (``MergeLossError``) below ``MIN_KEPT``, so that the
  adapter is served unmerged instead of silently lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from assistant.artifacts import cache_dir, file_sha256, fingerprint, publish_atomically, write_atomically
from assistant.config import Variant


class ExportError(ValueError):
    """An adapter or base that cannot be exported as asked; the message says why."""


class MergeLossError(ExportError):
    """Merging into a quantized base would round away too much of the adapter's change."""


MIN_KEPT = 0.8
"""The share of the adapter's change (B @ A, summed absolute values over every adapted matrix) that a merged
file must keep after re-quantization: 1 - sum|merged - (W + B A)| / sum|B A|. Float bases keep all of it."""


@dataclass(frozen=True)
class GgufArchitecture:
    """How one transformers architecture is written for llama.cpp."""

    name: str
    """llama.cpp's architecture name (the GGUF keys' prefix)."""
    permute_qk: bool
    """Whether query and key rows are reordered for llama.cpp's rotary layout."""
    tokenizer_pre: str
    """llama.cpp's pre-tokenizer; it only matters for text llama.cpp tokenizes itself (we send ids)."""


ARCHITECTURES = {
    "llama": GgufArchitecture("llama", True, "default"),
    "mistral": GgufArchitecture("llama", True, "default"),
    "qwen2": GgufArchitecture("qwen2", False, "qwen2"),
}


def gguf_architecture(config: Any) -> GgufArchitecture:
    """The GGUF form of a transformers config, or an ExportError saying what to do instead."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        architectures = getattr(config, "architectures", None) or [model_type]
        raise ExportError(f"GGUF export is written for {', '.join(sorted(ARCHITECTURES))} models; this base is "
                          f"{architectures}. Convert it with llama.cpp's convert_hf_to_gguf.py and set serving.gguf "
                          "to the file (or name the GGUF file as model.base).")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ExportError("GGUF export does not write RoPE scaling; convert this base with llama.cpp's converter")
    return ARCHITECTURES[model_type]


def check_exportable(config: Any) -> None:
    gguf_architecture(config)


def _permute(weights: Any, heads: int) -> Any:
    """llama.cpp's row order for a Llama query or key projection: within each head, the two rotary halves
    interleaved (what llama.cpp's own converter does to Hugging Face Llama weights)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensor_names(config: Any) -> Any:
    import gguf

    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[gguf_architecture(config).name]
    return gguf.get_tensor_name_map(arch, config.num_hidden_layers)


def _write(path: Path, fill, arch: str = "llama") -> Path:
    """Writes a GGUF file through a temporary sibling, so a reader never sees half a file."""
    import gguf

    def write(staging: Path) -> None:
        writer = gguf.GGUFWriter(str(staging), arch)
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return write_atomically(path, write)


# -- adapter ---------------------------------------------------------------------------------------------


def lora_tensors(adapter_dir: Path, config: Any) -> dict[str, tuple[Any, Any]]:
    """A PEFT LoRA adapter as llama.cpp applies it: {GGUF weight name ('blk.3.attn_q.weight'): (A, B)} in
    float32, with PEFT's scale
    folded into B and B's rows in llama.cpp's order, so that the change to a weight is exactly B @ A.

    Args:
        adapter_dir: folder with adapter_config.json and adapter_model.safetensors.
        config: the base model's transformers config (architecture, heads, layers).
    """
    import numpy as np
    from safetensors.numpy import load_file

    arch = gguf_architecture(config)
    settings = json.loads((adapter_dir / "adapter_config.json").read_text())
    if settings.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{adapter_dir}: only LoRA adapters export to GGUF (this is {settings['peft_type']})")
    if settings.get("modules_to_save"):
        raise ExportError(f"{adapter_dir}: modules_to_save ({settings['modules_to_save']}) has no GGUF LoRA form")
    if settings.get("use_dora"):
        raise ExportError(f"{adapter_dir}: DoRA adapters have no GGUF LoRA form")
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    names = _tensor_names(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in weights.items():
        module, _, part = key.rpartition(".lora_")  # ...q_proj.lora_A.weight -> ...q_proj, A.weight
        if not part:
            raise ExportError(f"{adapter_dir}: unexpected tensor {key} (not a LoRA A or B matrix)")
        hf = module.removeprefix("base_model.model.")
        if hf.endswith(("lm_head", "embed_tokens")):
            raise ExportError(f"{adapter_dir}: a LoRA on {hf} cannot be exported (the embedding is tied and "
                              "llama.cpp applies no LoRA to it); train without it in lora.target_modules")
        pairs.setdefault(hf, {})[part[0]] = value.astype(np.float32)
    tensors = {}
    for hf, p in sorted(pairs.items()):
        name = names.get_name(hf + ".weight", try_suffixes=(".weight",))
        if name is None:
            raise ExportError(f"{adapter_dir}: no llama.cpp tensor for module {hf}")
        a, b = p["A"], p["B"] * _peft_scale(settings, hf, p["A"].shape[0])
        if arch.permute_qk and hf.endswith("q_proj"):
            b = _permute(b, heads)
        elif arch.permute_qk and hf.endswith("k_proj"):
            b = _permute(b, kv_heads)
        tensors[name] = (np.ascontiguousarray(a), np.ascontiguousarray(b))
    return tensors


def adapter_to_gguf(adapter_dir: Path, config: Any, out: Path) -> Path:
    """Writes a PEFT LoRA adapter folder as a GGUF LoRA (F32) for a Llama or Qwen2 base.

    Args:
        adapter_dir: folder with adapter_config.json and adapter_model.safetensors.
        config: the base model's transformers config (architecture, heads, layers).
        out: the .gguf file to write.
    """
    import gguf

    tensors = lora_tensors(adapter_dir, config)
    ranks = {a.shape[0] for a, _ in tensors.values()}

    def fill(writer: Any) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_name(adapter_dir.name)
        # llama.cpp scales by alpha / rank of each tensor; with the PEFT scale folded into B, alpha = rank
        # gives 1. One alpha per file, so ranks must agree (they do unless rank_pattern was used).
        if len(ranks) != 1:
            raise ExportError(f"{adapter_dir}: modules have different ranks ({sorted(ranks)})")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(next(iter(ranks))))
        for name, (a, b) in tensors.items():
            writer.add_tensor(f"{name}.lora_a", a)
            writer.add_tensor(f"{name}.lora_b", b)

    return _write(out, fill, gguf_architecture(config).name)


def _peft_scale(settings: dict, module: str, rank: int) -> float:
    """The factor PEFT multiplies B @ A by for this module."""
    alpha = settings.get("lora_alpha", 8)
    for pattern, value in (settings.get("alpha_pattern") or {}).items():
        if module.endswith(pattern):
            alpha = value
    return alpha / (rank ** 0.5) if settings.get("use_rslora") else alpha / rank


# -- base ------------------------------------------------------------------------------------------------


def base_to_gguf(folder: Path, out: Path, weight_type: str = "q8_0") -> Path:
    """Writes a Llama or Qwen2 safetensors folder (weights, config, tokenizer) as a GGUF base.

    Args:
        folder: the model folder (config.json, *.safetensors, tokenizer files).
        out: the .gguf file to write.
        weight_type: 'q8_0', 'f16' or 'f32' for the matrices; norms stay F32.
    """
    import gguf
    import numpy as np
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    arch = gguf_architecture(config)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    names = _tensor_names(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    quant = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16,
             "f32": gguf.GGMLQuantizationType.F32}[weight_type]
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "f32": gguf.LlamaFileType.ALL_F32}[weight_type]
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ExportError(f"{folder}: no .safetensors weights")

    def fill(writer: Any) -> None:
        writer.add_name(folder.name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or
                                        (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)))
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(file_type)
        _add_tokenizer(writer, tokenizer, folder, config.vocab_size, arch.tokenizer_pre)
        for shard in shards:
            with safe_open(str(shard), "pt") as handle:
                for key in handle.keys():
                    if key == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
                        continue
                    if "rotary_emb" in key:
                        continue
                    name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                    if name is None:
                        raise ExportError(f"{folder}: no llama.cpp tensor for {key}")
                    data = handle.get_tensor(key).float().numpy()
                    if arch.permute_qk and key.endswith("q_proj.weight"):
                        data = _permute(data, heads)
                    elif arch.permute_qk and key.endswith("k_proj.weight"):
                        data = _permute(data, kv_heads)
                    if data.ndim == 1 or quant == gguf.GGMLQuantizationType.F32:
                        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
                    elif quant == gguf.GGMLQuantizationType.F16:
                        writer.add_tensor(name, data.astype(np.float16))
                    else:
                        writer.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)

    return _write(out, fill, arch.name)


def _add_tokenizer(writer: Any, tokenizer: Any, folder: Path, vocab_size: int, pre: str) -> None:
    """A byte-level BPE vocabulary as llama.cpp's 'gpt2' tokenizer model, with merges, special ids and the
    chat template. Requests send token ids, so llama.cpp's own pre-tokenizer ``pre`` only matters for text it
    is given directly."""
    import gguf

    if not tokenizer.is_fast or tokenizer.backend_tokenizer.model.__class__.__name__ != "BPE":
        raise ExportError("GGUF export writes byte-level BPE tokenizers only; convert with llama.cpp's converter")
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    special = set(tokenizer.all_special_ids)
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i, f"[PAD{i}]")
        tokens.append(token)
        if i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif i in special or (token in added and token.startswith("<")):
            types.append(gguf.TokenType.CONTROL)
        elif token in added:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special_vocab = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special_vocab.add_to_gguf(writer)
    if tokenizer.chat_template and not special_vocab.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


# -- merged into a GGUF base -----------------------------------------------------------------------------


def merge_into_gguf(base: Path, adapter_dir: Path, config: Any, out: Path, min_kept: float = MIN_KEPT) -> Path:
    """Writes ``base`` (a GGUF file) with the adapter folded into its weights, as llama.cpp would apply the
    GGUF LoRA: W + B @ A for every adapted matrix (``lora_tensors``), re-quantized to the matrix's own type
    by llama.cpp's own quantizer. Every other tensor and every metadata field is copied byte for byte, so
    the merged file has the base's size and decodes at the base's speed.

    Args:
        base: the base GGUF file llama.cpp serves.
        adapter_dir: the PEFT adapter folder.
        config: the base's transformers config (architecture, heads, layers).
        out: the merged .gguf file to write (atomically).
        min_kept: the least share of the adapter's change the merged weights must keep (``MIN_KEPT``).

    Raises:
        MergeLossError: re-quantizing kept less than ``min_kept`` of the change; nothing is written.
    """
    import gguf
    import numpy as np

    lora = lora_tensors(adapter_dir, config)
    reader = gguf.GGUFReader(str(base))
    missing = sorted(set(lora) - {t.name for t in reader.tensors})
    if missing:
        raise ExportError(f"{base}: no tensor for the adapter's {', '.join(missing[:3])}")
    arch = str(reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())

    def write(staging: Path) -> None:
        writer = gguf.GGUFWriter(str(staging), arch)
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue  # the writer adds these itself
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        tensors = []
        change = lost = 0.0
        for tensor in reader.tensors:
            data = tensor.data
            pair = lora.get(tensor.name)
            if pair is not None:
                a, b = pair
                delta = b @ a
                target = gguf.quants.dequantize(data, tensor.tensor_type).reshape(delta.shape) + delta
                data = _quantize_like(target, tensor.tensor_type, data)
                result = gguf.quants.dequantize(data, tensor.tensor_type).reshape(delta.shape)
                change += float(np.abs(delta).sum())
                lost += float(np.abs(result - target).sum())
            tensors.append((tensor, data))
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
        kept = 1.0 - lost / change if change else 1.0
        if kept < min_kept:
            kinds = sorted({t.tensor_type.name for t in reader.tensors if t.name in lora})
            raise MergeLossError(
                f"merging {adapter_dir.name} into {base.name} would keep only {kept:.0%} of the adapter's change "
                f"(at least {min_kept:.0%} needed): the change is finer than the grid of the base's "
                f"{'/'.join(kinds)} weights, so re-quantizing rounds it away. Serve the adapter unmerged "
                "(LoRA applied per request), or merge into a float base (F16, F32)")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor, data in tensors:
            writer.write_tensor_data(data, tensor_endianess=reader.endianess)
        writer.close()

    return write_atomically(out, write)


def _quantize_like(weights: Any, kind: Any, like: Any) -> Any:
    """``weights`` (rows x columns, float32) in GGML type ``kind``, shaped as ``like`` (the stored tensor).
    Float types by numpy; every quantized type by llama.cpp's own ``ggml_quantize_chunk`` (the one in the
    prebuilt llama.cpp this project runs), without an importance matrix, as llama.cpp's quantize tool does
    by default."""
    import ctypes

    import gguf
    import numpy as np

    if kind == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(weights, dtype=np.float32).reshape(like.shape)
    if kind == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(weights, dtype=np.float16).reshape(like.shape)
    lib = _ggml()
    rows, columns = weights.shape
    source = np.ascontiguousarray(weights, dtype=np.float32)
    out = np.empty(like.nbytes, dtype=np.uint8)
    lib.ggml_quantize_init(int(kind))
    written = lib.ggml_quantize_chunk(int(kind), source.ctypes.data_as(ctypes.c_void_p),
                                      out.ctypes.data_as(ctypes.c_void_p), 0, rows, columns, None)
    if written != like.nbytes:
        raise ExportError(f"re-quantizing to {kind.name} wrote {written} bytes, expected {like.nbytes}")
    return out.view(like.dtype).reshape(like.shape)


def _ggml() -> Any:
    """llama.cpp's ggml library inside the xllamacpp wheel, for its quantizer (C functions, through ctypes)."""
    import ctypes
    import importlib.util

    spec = importlib.util.find_spec("xllamacpp")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("xllamacpp*.so")) if spec else []
    if not found:
        raise ExportError("merging into a quantized GGUF needs llama.cpp's quantizer: pip install xllamacpp")
    lib = ctypes.CDLL(str(found[0]))
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    return lib


# -- merged ----------------------------------------------------------------------------------------------


def merge_adapter(variant: Any, out: Path) -> Path:
    """Writes the variant's base with its adapter merged in, in full precision, as a Hugging Face folder.

    The base is loaded without quantization (the NF4 training base dequantized, which is what the adapter
    learned against up to rounding), the LoRA is merged with ``merge_and_unload`` and the result saved.
    """
    from peft import PeftModel

    from assistant.models.loading import load_base

    if not variant.model.adapter:
        raise ExportError("this variant has no adapter to merge")
    m = variant.model
    base = load_base(m.base, "none", "float32", "cpu", m.trust_remote_code)
    merged = PeftModel.from_pretrained(base.model, str(variant.resolve(m.adapter))).merge_and_unload()

    def build(folder: Path) -> None:
        merged.save_pretrained(folder, safe_serialization=True)
        base.tokenizer.save_pretrained(folder)

    return publish_atomically(out, build, replace=True)


# -- the GGUF file a variant runs on llama.cpp ------------------------------------------------------------


def given_gguf(variant: Variant) -> Path | None:
    """The GGUF file named by ``serving.gguf``, if any."""
    if not variant.serving.gguf:
        return None
    path = variant.resolve(variant.serving.gguf)
    if not path.is_file():
        raise ExportError(f"serving.gguf: {path} does not exist")
    return path


def gguf_source(variant: Variant) -> str | None:
    """Where this variant's base GGUF would come from, without writing anything: 'file' (``serving.gguf``,
    a GGUF base or a catalog model: served as it is, or for the embedded model written once as Q8_0 in
    seconds), 'convert' (another local folder of an architecture we export, written once), or None when
    llama.cpp cannot run this base here."""
    from assistant.models.loading import resolve_base, shared_tokenizer

    try:
        if given_gguf(variant) is not None:
            return "file"
        source = resolve_base(variant.model.base, convert=False)
        if source.gguf:
            return "file"
        if not source.local:
            return None  # a hub id: its files may not be on this machine; use serving.gguf
        config = shared_tokenizer(variant.model.base, variant.model.trust_remote_code)[1]
    except Exception:
        return None
    try:
        check_exportable(config)
    except ExportError:
        return None
    return "convert"


def base_gguf(variant: Variant) -> Path:
    """The base's GGUF file: ``serving.gguf``; else a GGUF base's own file, served as it is; else one written
    once into the cache from the base's safetensors folder as ``serving.gguf_type``. The embedded model is
    written that way too, from the folder converted from its Q4_1 file: Q8_0 prefills 1.5x faster than Q4_1
    on this CPU at the same decode speed (bench/RESULTS.md)."""
    from assistant.models.catalog import catalog_model
    from assistant.models.loading import resolve_base

    given = given_gguf(variant)
    if given is not None:
        return given
    source = resolve_base(variant.model.base, convert=False)
    entry = catalog_model(variant.model.base)
    if source.gguf and (entry is None or entry.llamacpp_file == "as_is"):
        return Path(source.gguf)
    if source.gguf:
        source = resolve_base(variant.model.base)  # the converted folder, written from it below
    if not source.local:
        raise ExportError(f"engine 'llamacpp' needs a GGUF file for {variant.model.base!r}: set serving.gguf, or "
                          "name the GGUF file as model.base")
    folder = Path(source.location)
    kind = variant.serving.gguf_type
    out = cache_dir() / "gguf" / f"{folder.name}-{fingerprint(folder, suffixes=('.safetensors', '.json'))}-{kind}.gguf"
    if not out.is_file():
        print(f"Writing {folder.name} as GGUF ({kind}) once into {out} ...", flush=True)
        base_to_gguf(folder, out, kind)
    return out


def adapter_gguf(folder: Path, variant: Variant) -> Path:
    """The adapter as GGUF LoRA, converted once into the cache (named by the adapter's content)."""
    from assistant.models.loading import shared_tokenizer

    digest = fingerprint(folder, suffixes=(".safetensors", ".json"))
    out = cache_dir() / "gguf" / f"lora-{folder.name}-{digest}.gguf"
    if not out.is_file():
        config = shared_tokenizer(variant.model.base, variant.model.trust_remote_code)[1]
        adapter_to_gguf(folder, config, out)
    return out


def merged_gguf(variant: Variant) -> Path:
    """The base GGUF with the variant's adapter folded into its weights, written once into the cache and named
    by both the base file's and the adapter's content: as large as the base and as fast, with no LoRA work
    per token (``export.merge_into_gguf``).

    Raises:
        MergeLossError: the merge would lose the adapter (also remembered in the cache, so that the next
            start does not merge again to find out).
    """
    from assistant.models.loading import shared_tokenizer

    base = base_gguf(variant)
    adapter = variant.resolve(variant.model.adapter)
    digest = fingerprint(adapter, suffixes=(".safetensors", ".json"))
    # "-kept": written by a merge that checked how much of the adapter it keeps (files of older merges are not)
    out = cache_dir() / "gguf" / f"merged-{adapter.name}-{fingerprint(base)[:12]}-{digest[:12]}-kept.gguf"
    refused = out.with_suffix(".refused.txt")
    if refused.is_file():
        raise MergeLossError(refused.read_text(encoding="utf-8"))
    if not out.is_file():
        print(f"Merging {adapter.name} into {base.name} once: {out} ...", flush=True)
        config = shared_tokenizer(variant.model.base, variant.model.trust_remote_code)[1]
        try:
            merge_into_gguf(base, adapter, config, out)
        except MergeLossError as exc:
            write_atomically(refused, lambda path: path.write_text(str(exc), encoding="utf-8"))
            raise
    return out


# -- the export verb -------------------------------------------------------------------------------------


def export(variant: Any, to: str, out: Path, base_type: str = "q8_0") -> Path:
    """``assistant export``: writes an export folder with a card whose hashes tie it to the adapter card.

    Args:
        variant: the variant (an adapter folder's variant.yaml, or any variant file with an adapter).
        to: 'gguf' (adapter.gguf, plus base.gguf unless serving.gguf names the base's file) or 'merged'.
        out: the folder to write (replaced atomically).
        base_type: weight type of a base GGUF written here ('q8_0', 'f16', 'f32').
    """
    from assistant.models.loading import resolve_base, shared_tokenizer

    if not variant.model.adapter:
        raise ExportError("the variant has no adapter: set model.adapter or export an adapter folder")
    adapter = variant.resolve(variant.model.adapter)
    card_file = adapter / "card.yaml"
    card = {
        "exported_as": to,
        "adapter": {"folder": adapter.name, "weights_sha256": file_sha256(adapter / "adapter_model.safetensors"),
                    "card_sha256": file_sha256(card_file) if card_file.is_file() else None,
                    "content_digest": fingerprint(adapter, suffixes=(".safetensors", ".bin"))},
        "base": variant.model.base,
    }
    if to == "merged":
        merge_adapter(variant, out)
        card["files"] = {f.name: file_sha256(f) for f in sorted(out.glob("*.safetensors"))}
        (out / "export.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        return out
    if to != "gguf":
        raise ExportError(f"--to must be gguf or merged, not {to!r}")
    config = shared_tokenizer(variant.model.base, variant.model.trust_remote_code)[1]

    def build(folder: Path) -> None:
        adapter_to_gguf(adapter, config, folder / "adapter.gguf")
        given = given_gguf(variant)
        if given is None:
            base_to_gguf(Path(resolve_base(variant.model.base).location), folder / "base.gguf", base_type)
        base_file = str(given) if given else "base.gguf"
        card["files"] = {f.name: file_sha256(f) for f in sorted(folder.glob("*.gguf"))}
        card["base_gguf"] = base_file
        (folder / "export.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        (folder / "Modelfile").write_text(f"FROM {base_file}\nADAPTER adapter.gguf\n")
        (folder / "README.md").write_text(
            f"# {adapter.name} as GGUF\n\nllama.cpp: `llama-server -m {base_file} --lora adapter.gguf`\n\n"
            "Ollama: `ollama create NAME -f Modelfile`\n\nRequests must use the same chat template as the "
            "adapter's variant (export.yaml ties these files to the adapter's card by hash).\n")

    return publish_atomically(out, build, replace=True)
