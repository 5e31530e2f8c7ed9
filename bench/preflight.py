"""Pre-flight against the real run: how long the estimate takes, and how close it comes to the training it
predicts.

    .venv/bin/python bench/preflight.py [--config configs/sentiment-train.yaml] [--set KEY=VALUE ...]

1. ``assistant data check --config CONFIG`` in a child process, timed: it renders the data and times two
   real training steps; its estimate of minutes and peak memory is read from its output.
2. ``assistant train CONFIG`` in a child process, into a temporary folder (the adapter folder the config
   names is not touched, unless ``--keep`` moves the result there, replacing it), timed from start to exit, with the child's peak resident memory (VmHWM, read every 0.5 s).

Reported: the pre-flight's own seconds, estimated against real minutes (the ratio), and estimated against
real peak memory. The training's wall time includes loading the model and the evaluations before and after,
which the estimate also counts. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_child(command: list[str]) -> tuple[float, str, int]:
    """Seconds, combined output and peak resident bytes (the kernel's VmHWM, read until it exits) of a child."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak = 0
        while child.poll() is None:
            try:
                status = Path(f"/proc/{child.pid}/status").read_text()
                peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024)
            except (OSError, AttributeError):
                pass
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        log.seek(0)
        out = log.read()
    if child.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{out[-3000:]}")
    return seconds, out, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/sentiment-train.yaml", help="training config to run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting for both runs (repeatable)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true",
                        help="move the trained adapter into the config's output_dir afterwards, replacing one there")
    args = parser.parse_args()
    assistant = str(Path(sys.executable).parent / "assistant")
    overrides = [f"--set={o}" for o in args.overrides]

    check_seconds, out, _ = timed_child([assistant, "data", "check", "--config", args.config, *overrides])
    line = next(line for line in out.splitlines() if line.startswith("pre-flight:"))
    estimate = {key: float(value) for key, value in re.findall(r"(estimated minutes|peak memory gib) ([\d.]+)", line)}
    print(f"pre-flight took {check_seconds:.0f} s: {line}", flush=True)

    # Trained in a hidden folder beside the config's adapters folder, so that the adapter lands at the same
    # depth as in adapters/ and its relative paths (variant.yaml, card.yaml) stay right when --keep moves it.
    from assistant.training.config import load_train_config

    config = load_train_config(args.config, args.overrides)
    outputs = config.resolve(config.output_dir)
    outputs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".preflight-", dir=outputs.parent) as tmp:
        train_seconds, out, peak = timed_child([assistant, "train", args.config, "--quiet", *overrides,
                                                f"--set=output_dir={tmp}", f"--set=runs_dir={tmp}/runs"])
        import yaml

        folder = Path(tmp) / config.name
        trained = yaml.safe_load((folder / "card.yaml").read_text())["training"]
        if args.keep:
            from assistant.artifacts import publish_atomically

            target = outputs / folder.name
            publish_atomically(target, lambda staging: shutil.copytree(folder, staging, dirs_exist_ok=True),
                               replace=True)
            print(f"adapter kept: {target}")
    real_minutes = train_seconds / 60
    result = {
        "config": args.config, "overrides": args.overrides, "cpus": os.cpu_count(),
        "preflight_seconds": round(check_seconds, 1), "estimated_minutes": estimate.get("estimated minutes"),
        "real_minutes": round(real_minutes, 2), "steps": trained["steps"], "tokens_seen": trained["tokens_seen"],
        "estimated_peak_gib": estimate.get("peak memory gib"), "real_peak_gib": round(peak / 2**30, 2),
    }
    result["minutes_ratio"] = round(result["estimated_minutes"] / real_minutes, 2)
    print(json.dumps(result, indent=1))
    print(f"\nestimate {result['estimated_minutes']} min against {real_minutes:.1f} min real "
          f"({result['minutes_ratio']:.2f}x); peak memory estimate {result['estimated_peak_gib']} GiB against "
          f"{result['real_peak_gib']} GiB; the pre-flight took {check_seconds:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
