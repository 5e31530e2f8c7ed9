"""A non-editable install: the wheel carries prompts/ and eval/metrics/, and an environment without the
repository renders a bundled template and computes a bundled metric.

The wheel is built from a copy of the sources, so a stale build/ folder in the checkout cannot leak into it,
and installed into a temporary virtual environment. That environment borrows the project's third-party
packages (torch and the rest are not installed twice) through a path line in a .pth file: Python adds the
folder to sys.path but does not run the .pth files inside it, so the editable install of ``assistant`` in
.venv (its ``__editable__*.pth`` and finder) stays out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from assistant.metrics import METRICS_DIR
from assistant.prompts import PROMPTS_DIR

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "assistant", "prompts", "eval/metrics"]
"""What building the wheel reads (README.md is the project's long description)."""

PROBE = r"""
import json, sys

import assistant
from assistant.metrics import METRICS_DIR, available_metrics, load_metric
from assistant.prompts import PROMPTS_DIR, find_template, render_messages

template = find_template("support.j2")
messages = render_messages(
    template,
    [{"role": "user", "content": "Can I return an opened grinder?"}],
    variables={"company": "Acme", "persona": "a support agent", "tone": "Be brief."},
)
rouge = load_metric("rouge_l").compute(predictions=["the cat is on the mat"], references=["the cat sat on the mat"])
print(json.dumps({
    "assistant": assistant.__file__,
    "prompts_dir": str(PROMPTS_DIR),
    "metrics_dir": str(METRICS_DIR),
    "template": str(template.path),
    "messages": messages,
    "metrics": available_metrics(),
    "rouge_l": [float(s) for s in rouge["scores"]],
    "editable": sorted(name for name in sys.modules if name.startswith("__editable__")),
    "sys_path": sys.path,
}))
"""


def run(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{' '.join(command[:5])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_a_checkout_reads_the_repository_folders_through_the_links():
    # The links, not copies: a copy inside the package would drift from the documented prompts/ and eval/metrics/.
    assert (ROOT / "assistant" / "bundled" / "prompts").is_symlink()
    assert (ROOT / "assistant" / "bundled" / "metrics").is_symlink()
    assert PROMPTS_DIR == ROOT / "prompts"
    assert METRICS_DIR == ROOT / "eval" / "metrics"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, set[str]]:
    """Builds the wheel and installs it into a fresh virtual environment; returns its python, its
    site-packages and the names in the wheel."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            # symlinks=True keeps assistant/bundled's relative links, which then point into the copy
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)

    pip = [sys.executable, "-m", "pip"]
    offline = ["--quiet", "--no-deps", "--no-index"]
    wheels = tmp / "wheels"
    run([*pip, "wheel", *offline, "--no-build-isolation", "--wheel-dir", str(wheels), str(source)])
    (wheel,) = wheels.glob("assistant-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([*pip, "--python", str(python), "install", *offline, str(wheel)])  # pip from .venv, into the new one
    site = Path(run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    borrowed = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (site / "borrowed_project_packages.pth").write_text("\n".join(borrowed) + "\n")
    return python, site, names


def test_the_wheel_carries_every_template_and_metric_file(installed):
    _, _, names = installed
    expected = {f"assistant/bundled/prompts/{name}" for name in files_under(ROOT / "prompts")}
    expected |= {f"assistant/bundled/metrics/{name}" for name in files_under(ROOT / "eval" / "metrics")}
    assert {n for n in names if n.startswith("assistant/bundled/")} == expected | {"assistant/bundled/__init__.py"}


def test_an_installed_wheel_renders_and_scores_without_the_repository(installed, tmp_path):
    python, site, _ = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # -I: neither the working folder nor PYTHONPATH nor the user's site-packages lands on sys.path
    out = json.loads(run([str(python), "-I", "-c", PROBE], cwd=elsewhere, env=env).splitlines()[-1])

    assert Path(out["assistant"]).is_relative_to(site / "assistant")
    assert out["editable"] == []
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    from_checkout = [p for p in out["sys_path"] if Path(p).is_relative_to(ROOT) and p not in borrowed]
    assert from_checkout == []

    assert Path(out["prompts_dir"]) == site / "assistant" / "bundled" / "prompts"
    assert Path(out["template"]) == site / "assistant" / "bundled" / "prompts" / "support.j2"
    system, user = out["messages"]
    assert system["role"] == "system" and "a support agent for Acme" in system["content"]
    assert user == {"role": "user", "content": "Can I return an opened grinder?"}

    assert Path(out["metrics_dir"]) == site / "assistant" / "bundled" / "metrics"
    assert out["metrics"] == sorted(p.name for p in (ROOT / "eval" / "metrics").iterdir() if p.is_dir())
    assert out["rouge_l"] == pytest.approx([5 / 6])  # LCS "the cat on the mat": 5 of 6 tokens each way
