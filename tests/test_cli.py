"""The training verbs' command line: every setting documented in --help from the dataclasses' attribute
docstrings, and DPO settings read from a config file, --set, --KEY VALUE and the older options alike."""

from __future__ import annotations

import dataclasses

import pytest

from assistant.cli.parser import main
from assistant.settings_reader import setting_docs
from assistant.training.config import DpoSettings, LoraSettings, TaskSettings, TrainConfig, TrainingSettings
from tests.conftest import ROOT

TRAINING_SECTIONS = {"": TrainConfig, "tasks[].": TaskSettings, "lora.": LoraSettings, "training.": TrainingSettings}
SECTION_FIELDS = {"tasks", "lora", "training", "root"}  # sections, and the folder the loader sets


def help_text(verb: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([verb, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def assert_documents(text: str, sections: dict[str, type]) -> None:
    flat = " ".join(text.split())  # the epilog wraps docstrings; compare them word for word
    for prefix, cls in sections.items():
        docs = setting_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name in SECTION_FIELDS:
                continue
            assert f"\n  {prefix}{f.name}  (" in text, f"{prefix}{f.name} is not listed"
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no attribute docstring"
            assert " ".join(docs[f.name].split()) in flat, f"{prefix}{f.name}: its docstring is not in --help"


def test_train_help_lists_every_training_and_dpo_setting_with_its_docstring(capsys):
    text = help_text("train", capsys)
    assert_documents(text, TRAINING_SECTIONS)
    assert_documents(text, {"": DpoSettings})
    assert "  training.lr_schedule  (cosine | linear | constant; default cosine)" in text
    assert "  max_length  (default 1024)" in text and "  beta  (default 0.1)" in text
    assert "\n  root  (" not in text  # set by the loader, not by users


def test_sweep_help_lists_every_training_setting(capsys):
    assert_documents(help_text("sweep", capsys), TRAINING_SECTIONS)


@pytest.fixture
def dpo_runs(monkeypatch, tmp_path):
    """The settings each `train --method dpo` call would train with (nothing trains)."""
    import assistant.training.dpo

    seen: list[DpoSettings] = []

    def fake_train_dpo(settings, overwrite=False, quiet=False):
        seen.append(settings)
        (tmp_path / "README.md").write_text("a DPO adapter\n")
        return tmp_path

    monkeypatch.setattr(assistant.training.dpo, "train_dpo", fake_train_dpo)
    monkeypatch.chdir(ROOT)
    return seen


def test_demo_dpo_config_is_the_readme_command_line(dpo_runs):
    assert main(["train", "--method", "dpo", "configs/tidewater-dpo.yaml"]) == 0
    assert main(["train", "--method", "dpo", "--from", "adapters/tidewater-multitask", "--pairs",
                 "feedback/pairs.jsonl", "--name", "tidewater-dpo", "--beta", "0.1"]) == 0
    from_file, from_options = dpo_runs

    def files(s: DpoSettings):
        return s.resolve(s.start_from), s.resolve(s.pairs), s.resolve(s.output_dir) / s.name

    assert files(from_file) == files(from_options) == (
        ROOT / "adapters" / "tidewater-multitask", ROOT / "feedback" / "pairs.jsonl", ROOT / "adapters" / "tidewater-dpo")
    assert from_file.hyperparameters() == from_options.hyperparameters()


def test_dpo_settings_are_overridden_like_training_settings(dpo_runs, capsys):
    assert main(["train", "--method", "dpo", "configs/tidewater-dpo.yaml", "--set", "max_length=512",
                 "--set", "beta=0.2", "--max_steps", "3", "--learning-rate", "1e-4"]) == 0
    settings = dpo_runs[-1]
    assert (settings.max_length, settings.beta, settings.max_steps, settings.learning_rate) == (512, 0.2, 3, 1e-4)
    assert settings.name == "tidewater-dpo"

    assert main(["train", "--method", "dpo", "--set", "beta=0", "--batch-size", "0", "--set", "colour=red"]) == 2
    err = capsys.readouterr().err
    assert "colour: unknown setting" in err  # a wrong type or name stops the range checks ...
    assert main(["train", "--method", "dpo", "--set", "beta=0", "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    for expected in ("start_from: the SFT adapter folder", "pairs: a preference pairs file", "beta: must be above 0",
                     "batch_size: must be at least 1"):
        assert expected in err  # ... which are reported all at once
    assert len(dpo_runs) == 1


def test_dpo_options_are_refused_without_method_dpo(dpo_runs, capsys):
    assert main(["train", "configs/tidewater-train.yaml", "--beta", "0.2"]) == 2
    assert "--beta: only with --method dpo" in capsys.readouterr().err
    assert not dpo_runs
