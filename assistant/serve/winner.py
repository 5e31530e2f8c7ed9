"""Which variant to serve: the newest evaluation winner (its winner.yaml, checked against the evaluated
hash), a variant file chosen with --variant, and the arena's contenders."""

from __future__ import annotations

from pathlib import Path

from assistant.config import ConfigError, Variant, apply_overrides, load_variant, read_settings_file, variant_from_dict

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VARIANT = ROOT / "configs" / "tidewater.yaml"


def is_winner_file(path: str | Path) -> bool:
    try:
        data = read_settings_file(Path(path), "variant file")
    except ConfigError:
        return False
    return "variant" in data and "suite" in data


def load_winner(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Variant:
    """The variant a winner.yaml names, ready to serve. Without overrides, its hash must equal the one
    evaluated: serving something else under the winner's name would be a quiet lie."""
    path = Path(path)
    data = read_settings_file(path, "winner file")
    if not isinstance(data.get("variant"), dict):
        raise ConfigError(f"{path}: not a winner file (no 'variant' section)")
    variant = variant_from_dict(apply_overrides(data["variant"], list(overrides)), str(path), root=path.parent)
    if not overrides and data.get("variant_hash") and variant.variant_hash() != data["variant_hash"]:
        raise ConfigError(f"{path}: the variant's settings no longer match the evaluated hash "
                          f"{data['variant_hash']} (was the file edited?)")
    return variant


def load_contenders(path: str | Path) -> dict[str, Variant]:
    """Every variant a winner.yaml's evaluation compared, by name, best first."""
    path = Path(path)
    data = read_settings_file(path, "winner file")
    return {name: variant_from_dict(settings, f"{path} (contender {name})", root=path.parent)
            for name, settings in (data.get("contenders") or {}).items()}


def latest_winner(reports: Path) -> Path | None:
    """The newest winner.yaml under ``reports`` that may be served (suites of classifiers opt out)."""
    found = []
    for path in Path(reports).glob("*/winner.yaml"):
        if path.parent.name.startswith("."):
            continue
        try:
            data = read_settings_file(path, "winner file")
        except Exception:
            continue
        if data.get("serve", True):
            found.append((str(data.get("created", "")), path))
    return max(found)[1] if found else None


def served_variant_file(chosen: str | None, reports: Path) -> tuple[Path, str]:
    """The file to serve and why: the one asked for, else the latest evaluation winner, else the demo."""
    if chosen:
        return Path(chosen), "chosen with --variant"
    winner = latest_winner(reports)
    if winner is not None:
        return winner, "the winner of the latest evaluation"
    return DEFAULT_VARIANT, "no evaluation winner found, serving the demo variant"


def load_any_variant(path: Path, overrides: list[str]):
    """A variant file, or an evaluation's winner.yaml."""
    return load_winner(path, overrides) if is_winner_file(path) else load_variant(path, overrides)


def arena_variants(files: list[str], served_file: Path, overrides: list[str]) -> dict:
    """The arena's contenders: --arena files (variant files or winner.yaml), else every variant the served
    winner's evaluation compared."""
    if files:
        variants = [load_any_variant(Path(f), overrides) for f in files]
        return {v.name: v for v in variants}
    if is_winner_file(served_file):
        return load_contenders(served_file)
    return {}
