"""The one way to build a Variant from what a user points at.

``load_variant`` takes any of these, so every command (chat, serve, arena, eval, train, dpo) reads variants
alike and reports problems alike:

- nothing: the defaults;
- a variant YAML file (``configs/tidewater.yaml``);
- an evaluation's ``winner.yaml``: the variant it names, whose hash must still equal the evaluated one
  unless overrides change it on purpose (``read_winner`` reads the file, older layouts included);
- an adapter folder: its ``variant.yaml`` (how the adapter is served);
- a mapping of settings written inline (a suite's variant entry), with the folder its paths are relative to.

Overrides are ``KEY=VALUE`` strings (``generation.max_new_tokens=64``) or a mapping of dotted keys.
Relative paths inside a file are resolved against the file's folder, so a variant works from anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from assistant.config import Variant, variant_from_dict
from assistant.settings_reader import ConfigError, apply_overrides, read_settings_file


@dataclass
class WinnerFile:
    """An evaluation's winner.yaml as read, whatever year's layout it was written in."""

    path: Path
    suite: str
    created: str
    """The report's time stamp, local time: YYYYmmdd-HHMMSS."""
    serve: bool
    variant_hash: str
    """The evaluated variant's hash: what the model was asked (settings, template, documents, weights)."""
    engine: str | None
    """The engine that produced the evaluated answers (None: not recorded)."""
    hash_parts: dict[str, str]
    """The hash's parts (``Variant.hash_parts``) when recorded, so a mismatch can say what changed."""
    settings: dict[str, Any]
    contenders: dict[str, Any] = field(default_factory=dict)


def read_winner(path: str | Path) -> WinnerFile:
    """Reads a winner.yaml. Files written before the engine had a field of its own carried it in the hash
    ('9fe139c75c4f-llamacpp'); they are read as the hash plus the engine, and are never rewritten."""
    path = Path(path)
    data = read_settings_file(path, "winner file")
    if not isinstance(data.get("variant"), dict):
        raise ConfigError(f"{path}: not a winner file ('variant' is not a section)")
    recorded = str(data.get("variant_hash") or "")
    variant_hash, _, engine_in_hash = recorded.partition("-")
    return WinnerFile(path=path, suite=str(data.get("suite", "")), created=str(data.get("created", "")),
                      serve=bool(data.get("serve", True)), variant_hash=variant_hash,
                      engine=data.get("engine") or engine_in_hash or None,
                      hash_parts=dict(data.get("variant_parts") or {}), settings=data["variant"],
                      contenders=dict(data.get("contenders") or {}))


def newest_servable_winner(reports: str | Path, before: str | None = None) -> Path | None:
    """The newest winner.yaml under ``reports`` that may be served (suites of classifiers opt out), of a report
    older than ``before`` (a report time stamp) when given; None when there is none."""
    found = []
    for path in Path(reports).glob("*/winner.yaml"):
        if path.parent.name.startswith("."):
            continue
        try:
            winner = read_winner(path)
        except Exception:
            continue
        if winner.serve and (before is None or winner.created < before):
            found.append((winner.created, path))
    return max(found)[1] if found else None


PART_NAMES = {"settings": "settings", "template": "template", "documents": "documents",
              "few_shot": "few-shot examples", "weights": "adapter weights"}


def hash_mismatch(winner: WinnerFile, variant: Variant) -> str:
    """Why ``variant`` no longer has the hash its evaluation recorded: both hashes, what differs, and whether
    the evaluation is simply stale because its adapter was retrained since."""
    now = variant.hash_parts()
    head = (f"{winner.path}: the variant no longer matches its evaluation: evaluated hash {winner.variant_hash}, "
            f"now {variant.variant_hash()}")
    if winner.hash_parts:
        changed = [part for part in PART_NAMES if winner.hash_parts.get(part) != now.get(part)]
        what = ", ".join(PART_NAMES[part] for part in changed) or "the way the hash is computed"
        if changed == ["weights"]:
            return f"{head}. stale: the adapter changed since this evaluation (differs: {what})"
        return f"{head}. Differs: {what} (was the file, or a file it points to, edited?)"
    adapter_time = _adapter_written(variant)
    evaluated = _stamp_time(winner.created)
    if adapter_time and evaluated and adapter_time > evaluated:
        return (f"{head}. stale: the adapter changed since this evaluation (adapter written "
                f"{adapter_time:%Y-%m-%d %H:%M}, evaluated {evaluated:%Y-%m-%d %H:%M}); evaluate again to serve it")
    return (f"{head}. This older winner file does not record what its hash was made of: compare the settings, "
            "template, documents and adapter with `assistant variant`")


def _adapter_written(variant: Variant) -> datetime | None:
    """When the variant's adapter was written, from its card (None: no adapter or no card)."""
    if not variant.model.adapter:
        return None
    card = variant.resolve(variant.model.adapter) / "card.yaml"
    try:
        created = read_settings_file(card, "adapter card").get("created")
        return datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except (ConfigError, ValueError):
        return None


def _stamp_time(stamp: str) -> datetime | None:
    """A report's local-time stamp as an aware time."""
    try:
        return datetime.strptime(stamp, "%Y%m%d-%H%M%S").astimezone(timezone.utc)
    except ValueError:
        return None


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
    winner = None
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
        if "variant" in data and "suite" in data:
            winner = read_winner(path)
            data = dict(winner.settings)
        data.setdefault("name", path.stem)
        label, folder = str(path), path.parent
    data = apply_overrides(data, overrides)
    if name:
        data["name"] = str(name)
    variant = variant_from_dict(data, label, root=folder)
    # overrides change the variant on purpose; without them it must be exactly what was evaluated
    if winner and winner.variant_hash and not overrides and variant.variant_hash() != winner.variant_hash:
        raise ConfigError(hash_mismatch(winner, variant))
    return variant


def load_contenders(path: str | Path) -> dict[str, Variant]:
    """Every variant a winner.yaml's evaluation compared, by name, best first."""
    winner = read_winner(path)
    return {name: load_variant(settings, root=winner.path.parent, where=f"{winner.path} (contender {name})")
            for name, settings in winner.contenders.items()}
