"""Which variant to serve: the promoted evaluation winner (assistant promote: its winner.yaml, checked against
the evaluated hash), or where nothing was ever promoted the newest winner; a variant file chosen with
--variant; and the arena's contenders."""

from __future__ import annotations

from pathlib import Path

from assistant.variants import is_winner_file, load_contenders, load_variant, newest_servable_winner

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VARIANT = ROOT / "configs" / "tidewater.yaml"


def latest_winner(reports: Path) -> Path | None:
    """The newest winner.yaml under ``reports`` that may be served (suites of classifiers opt out)."""
    return newest_servable_winner(reports)


def served_variant_file(chosen: str | None, reports: Path) -> tuple[Path, str]:
    """The file to serve and why: the one asked for, else the promoted winner, else (nothing was ever
    promoted) the latest evaluation winner, else the demo."""
    from assistant.evaluation.promotion import served_winner

    if chosen:
        return Path(chosen), "chosen with --variant"
    promoted = served_winner(reports)
    if promoted is not None:
        path, entry = promoted
        return path, f"promoted by {entry.who} at {entry.when}: {entry.reason}"
    winner = latest_winner(reports)
    if winner is not None:
        return winner, "the winner of the latest evaluation"
    return DEFAULT_VARIANT, "no evaluation winner found, serving the demo variant"


def arena_variants(files: list[str], served_file: Path, overrides: list[str]) -> dict:
    """The arena's contenders: --arena files (variant files or winner.yaml), else every variant the served
    winner's evaluation compared."""
    if files:
        variants = [load_variant(Path(f), overrides) for f in files]
        return {v.name: v for v in variants}
    if is_winner_file(served_file):
        return load_contenders(served_file)
    return {}
