"""The verbs of the model catalog: ``models list`` and ``models install`` (assistant/models/catalog.py)."""

from __future__ import annotations

from pathlib import Path

from assistant.settings_reader import ConfigError


def cmd_models_list(args) -> int:
    from assistant.models.catalog import catalog_table

    print(catalog_table())
    return 0


def cmd_models_install(args) -> int:
    from assistant.models.catalog import CATALOG, install

    names = list(args.names)
    if args.served:
        from assistant.serve.server import REPORTS
        from assistant.serve.winner import arena_variants, served_variant_file
        from assistant.variants import load_variant

        path, _ = served_variant_file(None, Path(args.reports) if args.reports else REPORTS)
        variants = [load_variant(path), *arena_variants([], path, []).values()]
        names += [v.model.base for v in variants if v.model.base in CATALOG and v.model.base not in names]
    if not names:
        raise ConfigError("name a catalog model to install (assistant models list), or give --served")
    for name in dict.fromkeys(names):
        install(name)
    return 0
