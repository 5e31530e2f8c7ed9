"""Every committed settings file loads through the functions the app and the command line use, with no model
and no generation: the newest winner of each suite (what `make demo` serves), every adapter's variant.yaml,
every file in configs/ and every suite. A winner whose adapter was retrained after its evaluation is
refused, and must say that it is stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.settings_reader import ConfigError
from assistant.variants import load_contenders, load_variant, read_winner

ROOT = Path(__file__).resolve().parent.parent


def winners_by_suite() -> dict[str, list[Path]]:
    """Each suite's committed winner files, newest last."""
    suites: dict[str, list[tuple[str, Path]]] = {}
    for path in (ROOT / "eval" / "reports").glob("*/winner.yaml"):
        winner = read_winner(path)
        suites.setdefault(winner.suite, []).append((winner.created, path))
    return {suite: [path for _, path in sorted(found)] for suite, found in suites.items()}


def test_the_newest_winner_of_every_suite_loads_with_its_contenders():
    suites = winners_by_suite()
    assert "tidewater-support" in suites, "make demo serves the support suite's winner"
    for suite, paths in suites.items():
        variant = load_variant(paths[-1])
        contenders = load_contenders(paths[-1])
        assert variant.name in contenders, suite
        assert read_winner(paths[-1]).engine, f"{paths[-1]}: the engine that answered is recorded"


def test_older_winners_load_or_are_refused_as_stale():
    for suite, paths in winners_by_suite().items():
        for path in paths[:-1]:
            try:
                load_variant(path)
            except ConfigError as exc:
                assert "stale: the adapter changed since this evaluation" in str(exc), (path, str(exc))


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in (ROOT / "adapters").glob("*/variant.yaml")))
def test_every_adapter_variant_loads(folder):
    variant = load_variant(ROOT / "adapters" / folder)
    assert variant.resolve(variant.model.adapter) == (ROOT / "adapters" / folder).resolve()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_config_loads(name):
    from assistant.training.config import load_dpo_settings, load_train_config

    path = ROOT / "configs" / name
    if name.endswith("-train.yaml"):
        config = load_train_config(path)
        load_variant(config.resolve(config.variant))
    elif "-dpo" in name:
        settings = load_dpo_settings(path)
        load_variant(settings.resolve(settings.start_from))
    else:
        load_variant(path)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "eval" / "suites").glob("*.yaml")))
def test_every_suite_loads(name):
    """Variants built on the user's machine and never committed (git-ignored adapters trained on data that
    may not be redistributed) are left out; every other variant must load."""
    import subprocess

    import yaml

    from assistant.evaluation.suite import load_suite

    path = ROOT / "eval" / "suites" / name
    entries = yaml.safe_load(path.read_text())["variants"]
    built_here = [e["name"] for e in entries if "file" in e and not (path.parent / e["file"]).exists()
                  and subprocess.run(["git", "check-ignore", "-q", str(path.parent / e["file"])], cwd=ROOT).returncode == 0]
    suite = load_suite(path, only=[e["name"] for e in entries if e["name"] not in built_here])
    assert suite.cases and len(suite.variants) == len(entries) - len(built_here)
