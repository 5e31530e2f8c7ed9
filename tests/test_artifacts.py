"""Files on disk: atomic writes, content fingerprints and their memo, the answer cache's key migration,
the one message check and the one variant loader."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from assistant import artifacts
from assistant.messages import message_problems
from assistant.settings_reader import ConfigError
from assistant.variants import load_contenders, load_variant


def test_write_atomically_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    path = artifacts.write_json(tmp_path / "out.json", {"v": 1})

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        artifacts.write_atomically(path, fail)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_fingerprint_names_content_not_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path / "cache"))
    one = tmp_path / "one"
    one.mkdir()
    (one / "model.safetensors").write_bytes(b"\x01" * 10)
    (one / "config.json").write_text("{}")
    (one / ".hidden").write_text("ignored")
    two = tmp_path / "elsewhere" / "two"
    shutil.copytree(one, two)
    (two / ".hidden").write_text("different, still ignored")
    assert artifacts.fingerprint(one) == artifacts.fingerprint(two)
    assert artifacts.weights_fingerprint(one) == artifacts.fingerprint(one, artifacts.WEIGHT_SUFFIXES)
    assert artifacts.fingerprint(one, (".safetensors",)) != artifacts.fingerprint(one)  # config.json left out
    (two / "model.safetensors").write_bytes(b"\x02" * 10)
    assert artifacts.fingerprint(one) != artifacts.fingerprint(two)
    assert artifacts.fingerprint(tmp_path / "nothing") == "missing:nothing"
    assert artifacts.weights_fingerprint("org/model") == "hub:org/model"


def test_large_files_are_hashed_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path / "cache"))
    big = tmp_path / "weights.safetensors"
    big.write_bytes(os.urandom(2 << 20))
    digest = artifacts.file_sha256(big)
    memo = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert list(memo.values()) == [digest]
    # another process (simulated: the in-process view dropped) trusts the memo instead of reading the file
    artifacts._MEMO_LOADED.clear()
    key = next(iter(memo))
    (tmp_path / "cache" / "fingerprints.json").write_text(json.dumps({key: "from-the-memo"}))
    assert artifacts.file_sha256(big) == "from-the-memo"
    big.write_bytes(os.urandom(2 << 20))  # new content, new size/mtime key: hashed again
    assert artifacts.file_sha256(big) not in (digest, "from-the-memo")


def test_answer_cache_moves_entries_from_the_legacy_weights_key(tmp_path, tiny_model_dir, monkeypatch):
    from assistant.evaluation.answers import AnswerCache, _legacy_weights_key, weights_fingerprint

    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path / "cache"))
    variant = load_variant(None, [f"model.base={tiny_model_dir}"])
    legacy, new = _legacy_weights_key(variant), weights_fingerprint(variant)
    assert legacy != new
    cache = AnswerCache(tmp_path / "eval")
    cache.put(legacy, "vhash", "case1", {"answer": "kept"})
    cache.put(new, "vhash", "case2", {"answer": "newer"})
    cache.put(legacy, "vhash", "case2", {"answer": "older"})
    cache.migrate(variant, new)
    assert cache.get(new, "vhash", "case1") == {"answer": "kept"}
    assert cache.get(new, "vhash", "case2") == {"answer": "newer"}  # an entry under the new key wins


# -- messages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("messages, last, strict, expected", [
    ([{"role": "user", "content": "hi"}], "user", True, []),
    ([], None, True, ["'messages' must be a non-empty list of {role, content} objects"]),
    ("hi", None, True, ["'messages' must be a non-empty list of {role, content} objects"]),
    (["hi"], None, True, ["message 1 is not a {role, content} object"]),
    ([{"role": "bot", "content": "x"}], None, True, ["message 1 has unknown role 'bot' (use system, user, assistant)"]),
    ([{"role": "user", "content": 3}], None, True, ["message 1 (user) has no text content"]),
    ([{"role": "user", "content": "a\x00b"}], None, True, ["message 1 (user) contains a NUL character"]),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], None, True,
     ["user and assistant messages must alternate"]),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "user", False, []),
    ([{"role": "user", "content": "a"}], "assistant", True, ["no assistant message to learn from"]),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "user", False,
     ["the conversation must end with the user message to be answered"]),
])
def test_message_problems(messages, last, strict, expected):
    assert message_problems(messages, last=last, strict_order=strict) == expected


# -- the variant loader ----------------------------------------------------------------------------------


def test_one_loader_reads_files_adapter_folders_winners_and_inline_settings(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "docs").mkdir()
    (folder / "support.yaml").write_text("context: {documents: docs}\ngeneration: {max_new_tokens: 64}\n")
    from_file = load_variant(folder / "support.yaml", ["generation.max_new_tokens=32"])
    assert from_file.name == "support" and from_file.generation.max_new_tokens == 32
    assert from_file.resolve("docs") == (folder / "docs").resolve()

    adapter = tmp_path / "adapters" / "mine"
    adapter.mkdir(parents=True)
    (adapter / "variant.yaml").write_text("name: mine\n")
    assert load_variant(adapter).name == "mine"
    with pytest.raises(ConfigError, match="no variant.yaml"):
        load_variant(tmp_path / "adapters")

    inline = load_variant({"prompt": {"template": "plain.j2"}}, {"context.top_k": 5}, name="bare", root=folder)
    assert (inline.name, inline.prompt.template, inline.context.top_k) == ("bare", "plain.j2", 5)

    winner = tmp_path / "report" / "winner.yaml"
    winner.parent.mkdir()
    winner.write_text(yaml.safe_dump({"suite": "s", "variant": inline.to_dict(), "variant_hash": inline.variant_hash(),
                                      "contenders": {"bare": inline.to_dict()}}))
    assert load_variant(winner).variant_hash() == inline.variant_hash()
    assert list(load_contenders(winner)) == ["bare"]
    assert load_variant(winner, ["context.top_k=2"]).context.top_k == 2  # an override is a deliberate change
    data = yaml.safe_load(winner.read_text())
    data["variant"]["context"]["top_k"] = 9
    winner.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="no longer matches its evaluation: evaluated hash"):
        load_variant(winner)
