"""A wheel built from this checkout, installed (not editable) into a fresh virtualenv, runs: the
bot starts far enough to ask for its token (so the packaged defaults load), and ``lmd-bot worker``
and ``lmd-bot render --tiny`` work from a folder outside the repository.

The fresh venv gets the dependencies this test runs with through a path file instead of a
download (the wheel is installed with ``--no-deps``), so the test costs seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "bot.py", "config", "lmd_bot", "cogs")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The fresh venv's bin folder, lmd-bot installed from a wheel of this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing in the checkout
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, src], check=True)
    (wheel,) = dist.glob("lmd_bot-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    python = bin_dir / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Its own site-packages first (the wheel), then this interpreter's (torch, discord, ...).
    Path(purelib, "deps-of-the-test-run.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)
    return bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMD_") and k != "PYTHONPATH"}
    env["LMD_DB__URL"] = f"sqlite+aiosqlite:///{cwd}/bot.sqlite3"
    return subprocess.run(
        [bin_dir / args[0], *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_installed_package_is_not_this_checkout(installed, tmp_path):
    where = _run(
        installed,
        "python",
        "-c",
        "import lmd_bot, cogs; print(lmd_bot.__file__, cogs.__file__)",
        cwd=tmp_path,
    )
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout, where.stdout + where.stderr
    files = _run(
        installed,
        "python",
        "-c",
        "from lmd_bot.config import DEFAULT_TOML; from lmd_bot.db.engine import MIGRATIONS; "
        "print(DEFAULT_TOML.is_file(), (MIGRATIONS / 'env.py').is_file(),"
        " any(MIGRATIONS.glob('versions/0*.py')))",
        cwd=tmp_path,
    )
    assert files.stdout.split() == ["True", "True", "True"], files.stderr


@pytest.mark.parametrize(
    "command", [["lmd-bot", "run"], ["python", str(ROOT / "bot.py")]], ids=["run", "bot.py"]
)
def test_the_installed_bot_starts_and_asks_for_its_token(installed, tmp_path, command):
    if command[0] == "python":  # bot.py from the checkout, on the installed package
        command = ["python", "-c", "import runpy; runpy.run_path('bot.py', run_name='__main__')"]
        shutil.copy(ROOT / "bot.py", tmp_path / "bot.py")
    result = _run(installed, *command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "lmd-bot cannot start" in result.stderr and "LMD_DISCORD__TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_installed_worker_and_tiny_renderer_run(installed, tmp_path):
    help_ = _run(installed, "lmd-bot", "worker", "--help", cwd=tmp_path)
    assert help_.returncode == 0 and "--renderer" in help_.stdout, help_.stderr
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps({"objects": [{"id": 1, "caption": "a cat", "box": [32, 32, 160, 160]}]}))
    out = tmp_path / "cat.png"
    render = _run(
        installed,
        "lmd-bot",
        "render",
        "--tiny",
        "--layout",
        str(layout),
        "--out",
        str(out),
        "--mode",
        "sd",
        "--steps",
        "2",
        "--size",
        "256",
        cwd=tmp_path,
        timeout=300,
    )
    assert render.returncode == 0, render.stderr[-3000:]
    assert out.read_bytes().startswith(b"\x89PNG")
