import pytest

from assistant.config import Variant, variant_from_dict
from assistant.settings_reader import ConfigError
from assistant.variants import load_variant


def test_hash_is_stable_ignores_name_and_follows_settings():
    a = variant_from_dict({"name": "a"})
    b = variant_from_dict({"name": "b"})
    assert a.variant_hash() == b.variant_hash()
    assert len(a.variant_hash()) == 12
    c = variant_from_dict({"generation": {"max_new_tokens": 17}})
    assert c.variant_hash() != a.variant_hash()
    # The same settings read back from their YAML give the same hash.
    import yaml

    assert variant_from_dict(yaml.safe_load(c.to_yaml())).variant_hash() == c.variant_hash()


def test_hash_does_not_depend_on_where_the_file_lives(tmp_path):
    text = "prompt:\n  template: support.j2\ncontext:\n  documents: docs\n"
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "v.yaml").write_text(text)
    one, two = load_variant(tmp_path / "one" / "v.yaml"), load_variant(tmp_path / "two" / "v.yaml")
    assert one.variant_hash() == two.variant_hash()
    assert one.resolve(one.context.documents) == (tmp_path / "one" / "docs").resolve()


def test_every_problem_reported_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model:\n  quantization: int3\n  colour: blue\n"
        "generation:\n  max_new_tokens: many\n"
        "context:\n  top_k: 0\n"
    )
    with pytest.raises(ConfigError) as err:
        load_variant(path)
    message = str(err.value)
    assert str(path) in message
    assert "model.quantization: 'int3' is not one of 'nf4', 'none'" in message
    assert "model.colour: unknown setting" in message
    assert "generation.max_new_tokens: expected an integer, got 'many'" in message
    assert "3 problem(s)" in message  # range checks wait until the types are right


def test_range_errors_and_overrides_are_typed():
    variant = load_variant(None, ["generation.max_new_tokens=64", "generation.temperature=0.7", "context.top_k=5"])
    assert variant.generation.max_new_tokens == 64 and variant.generation.temperature == 0.7
    assert variant.context.top_k == 5
    with pytest.raises(ConfigError, match="context.top_k: must be at least 1"):
        load_variant(None, ["context.top_k=0"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_variant(None, ["context.top_k"])


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  base: x\n  quantization: [nf4\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_variant(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such variant file"):
        load_variant("does/not/exist.yaml")


def test_defaults_use_the_embedded_base_and_a_plain_prompt():
    v = Variant()
    assert v.model.base == "smollm2-135m-instruct"
    assert v.model.trust_remote_code is False
    assert v.model.quantization == "nf4"


def test_demo_variant_loads():
    from tests.conftest import ROOT

    v = load_variant(ROOT / "configs" / "tidewater.yaml")
    assert v.prompt.template == "support.j2"
    assert v.resolve(v.context.documents).is_dir()


def test_commented_yaml_documents_every_setting_and_round_trips():
    import yaml

    from assistant.config import commented_yaml

    variant = variant_from_dict({"prompt": {"variables": {"company": "Acme"}}, "context": {"top_k": 4}})
    text = commented_yaml(variant)
    assert text.startswith(f"# variant hash {variant.variant_hash()}")
    assert "# Passages retrieved for each user message." in text
    import dataclasses

    from assistant.config import ContextSettings, GenerationSettings, ModelSettings, PromptSettings, ServingSettings

    sections = (ModelSettings, PromptSettings, ContextSettings, GenerationSettings, ServingSettings)
    assert text.count("\n  # ") == sum(len(dataclasses.fields(c)) for c in sections)  # one comment per setting
    assert "  # \n" not in text  # and none of them empty
    assert variant_from_dict(yaml.safe_load(text)).variant_hash() == variant.variant_hash()


def test_hash_follows_file_contents_not_path_spelling(tmp_path):
    from assistant.config import portable_variant

    docs = tmp_path / "project" / "docs"
    docs.mkdir(parents=True)
    (docs / "a.md").write_text("# A\n\nThirty days.\n")
    variant = load_variant(None, [f"context.documents={docs}", "prompt.template=support.j2"])
    before = variant.variant_hash()
    # the same variant written relative to a report folder elsewhere keeps its hash
    report = tmp_path / "reports" / "run-1"
    report.mkdir(parents=True)
    moved = variant_from_dict(portable_variant(variant, report), root=report)
    assert moved.context.documents == "../../project/docs" and moved.variant_hash() == before
    # an edited document is a different variant
    (docs / "a.md").write_text("# A\n\nFourteen days.\n")
    assert variant.variant_hash() != before


def test_dpo_config_paths_resolve_against_its_folder_and_overrides_win(tmp_path):
    from assistant.training.config import load_dpo_settings

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "dpo.yaml").write_text("start_from: ../adapters/sft\npairs: pairs.jsonl\nmax_length: 256\n")
    settings = load_dpo_settings(tmp_path / "configs" / "dpo.yaml", ["beta=0.3", "learning_rate=1e-4"])
    assert settings.resolve(settings.start_from) == (tmp_path / "adapters" / "sft").resolve()
    assert settings.resolve(settings.pairs) == (tmp_path / "configs" / "pairs.jsonl").resolve()
    assert (settings.max_length, settings.beta, settings.learning_rate, settings.name) == (256, 0.3, 1e-4, "dpo")
    assert "root" not in settings.hyperparameters() and "start_from" not in settings.hyperparameters()


def test_dpo_config_problems_are_reported_together(tmp_path):
    from assistant.training.config import load_dpo_settings

    path = tmp_path / "bad.yaml"
    path.write_text("max_length: long\ncolour: red\n")
    with pytest.raises(ConfigError) as err:
        load_dpo_settings(path)
    assert str(path) in str(err.value)
    assert "max_length: expected an integer" in str(err.value) and "colour: unknown setting" in str(err.value)
    path.write_text("beta: 0\nmax_length: 0\nname: a b\n")
    with pytest.raises(ConfigError) as err:
        load_dpo_settings(path)
    for expected in ("start_from:", "pairs:", "beta: must be above 0", "max_length: must be at least 1", "name: 'a b'"):
        assert expected in str(err.value)


def test_a_setting_added_later_leaves_older_hashes_alone_at_its_default():
    """Committed winners and adapters were hashed before context.min_relevance existed: at its default it is
    not part of the hash (so they still load), and set it changes the hash like any setting."""
    from assistant.config import ADDED_SETTINGS, Variant

    variant = Variant()
    assert all(key not in variant._hashed_settings()[section] for section, key in ADDED_SETTINGS)
    changed = Variant()
    changed.context.min_relevance = 0.3
    assert changed._hashed_settings()["context"]["min_relevance"] == 0.3
    assert changed.variant_hash() != variant.variant_hash()
