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
    from assistant.training.config import load_dpo_settings, load_retriever_config, load_train_config
    from assistant.training.prompt_search import load_prompt_search

    path = ROOT / "configs" / name
    if name.endswith(("-retriever.yaml", "-reranker.yaml")):
        load_retriever_config(path)
    elif name.endswith("-redact.yaml"):
        from assistant.redaction import load_patterns

        assert load_patterns(files=[path])
    elif name.endswith("-train.yaml"):
        config = load_train_config(path)
        load_variant(config.resolve(config.variant))
    elif name.endswith("-prompt-search.yaml"):
        config = load_prompt_search(path)
        load_variant(config.resolve(config.variant))
    elif "-dpo" in name:
        settings = load_dpo_settings(path)
        load_variant(settings.resolve(settings.start_from))
    else:
        load_variant(path)


def built_by_configs() -> set[Path]:
    """The variant files that a committed config writes when it is run (an adapter's or a searched prompt's
    variant.yaml): a suite may name one before it has been built on this machine."""
    from assistant.training.config import load_dpo_settings, load_train_config
    from assistant.training.prompt_search import load_prompt_search

    outputs = set()
    for path in (ROOT / "configs").glob("*.yaml"):
        if path.name.endswith("-train.yaml"):
            config = load_train_config(path)
        elif path.name.endswith("-prompt-search.yaml"):
            config = load_prompt_search(path)
        elif "-dpo" in path.name:
            config = load_dpo_settings(path)
        else:
            continue
        outputs.add((Path(config.resolve(config.output_dir)) / config.name / "variant.yaml").resolve())
    return outputs


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "eval" / "suites").glob("*.yaml")))
def test_every_suite_loads(name):
    """A variant whose file is missing here must be one that a committed config builds (an adapter trained
    or a prompt searched on the user's machine, possibly from data that may not be redistributed); every
    other variant must load."""
    import yaml

    from assistant.evaluation.suite import load_suite

    path = ROOT / "eval" / "suites" / name
    entries = yaml.safe_load(path.read_text())["variants"]
    missing = {e["name"]: (path.parent / e["file"]).resolve() for e in entries
               if "file" in e and not (path.parent / e["file"]).exists()}
    buildable = built_by_configs()
    assert not [n for n, f in missing.items() if f not in buildable], "a suite names a file nothing builds"
    suite = load_suite(path, only=[e["name"] for e in entries if e["name"] not in missing])
    assert suite.cases and len(suite.variants) == len(entries) - len(missing)
