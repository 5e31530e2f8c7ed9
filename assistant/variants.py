"""The one way to build a Variant from what a user points at.

``load_variant`` takes any of these, so every command (chat, serve, arena, eval, train, dpo) reads variants
alike and reports problems alike:

- nothing: the defaults;
- a variant YAML file (``configs/tidewater.yaml``);
- an evaluation's ``winner.yaml``: the variant it names, whose hash must still equal the evaluated one
  unless overrides change it on purpose;
- an adapter folder: its ``variant.yaml`` (how the adapter is served);
- a mapping of settings written inline (a suite's variant entry), with the folder its paths are relative to.

Overrides are ``KEY=VALUE`` strings (``generation.max_new_tokens=64``) or a mapping of dotted keys.
Relative paths inside a file are resolved against the file's folder, so a variant works from anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from assistant.config import Variant, variant_from_dict
from assistant.settings_reader import ConfigError, apply_overrides, read_settings_file


def is_winner_file(path: str | Path) -> bool:
    """Whether ``path`` is an evaluation's winner.yaml (a 'variant' section and the suite it won)."""
    try:
        data = read_settings_file(Path(path), "variant file")
    except ConfigError:
        return False
    return "variant" in data and "suite" in data


def load_variant(
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] | Mapping[str, Any] = (),
    *,
    name: str | None = None,
    root: str | Path | None = None,
    where: str | None = None,
) -> Variant:
    """Builds the Variant ``source`` describes (see the module docstring for what it may be).

    Args:
        overrides: settings to change, as KEY=VALUE strings or {dotted key: value}.
        name: display name, replacing the file's own (default: the file's 'name', else its stem).
        root: for inline settings and defaults, the folder relative paths are resolved against
            (default: the working directory).
        where: how error messages name inline settings (default '<settings>').

    Raises:
        ConfigError: naming the file (or ``where``) and every problem found.
    """
    if isinstance(overrides, Mapping):
        overrides = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    overrides = list(overrides)
    hash_to_match = None
    if source is None or isinstance(source, Mapping):
        data = dict(source or {})
        label = where or ("<defaults>" if source is None else "<settings>")
        folder = Path(root) if root is not None else Path.cwd()
    else:
        path = Path(source)
        if path.is_dir():
            if not (path / "variant.yaml").is_file():
                raise ConfigError(f"{path}: not an adapter folder (it has no variant.yaml)")
            path = path / "variant.yaml"
        data = read_settings_file(path, "variant file")
        if "variant" in data and "suite" in data:  # a winner.yaml
            if not isinstance(data["variant"], dict):
                raise ConfigError(f"{path}: not a winner file ('variant' is not a section)")
            hash_to_match = None if overrides else data.get("variant_hash")
            data = data["variant"]
        data.setdefault("name", path.stem)
        label, folder = str(path), path.parent
    data = apply_overrides(data, overrides)
    if name:
        data["name"] = str(name)
    variant = variant_from_dict(data, label, root=folder)
    if hash_to_match and variant.variant_hash() != hash_to_match:
        raise ConfigError(f"{label}: the variant's settings no longer match the evaluated hash {hash_to_match} "
                          "(was the file edited?)")
    return variant


def load_contenders(path: str | Path) -> dict[str, Variant]:
    """Every variant a winner.yaml's evaluation compared, by name, best first."""
    path = Path(path)
    data = read_settings_file(path, "winner file")
    return {name: load_variant(settings, root=path.parent, where=f"{path} (contender {name})")
            for name, settings in (data.get("contenders") or {}).items()}
