"""Architecture rules that keep the bot fast to start and the core free of Discord."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return set(out.split())


def test_core_library_never_imports_discord():
    for path in (ROOT / "lmd_bot").rglob("*.py"):
        text = path.read_text()
        assert "import discord" not in text and "from discord" not in text, path


def test_layout_config_and_cli_load_no_heavy_dependency():
    mods = _modules_after(
        "import lmd_bot.layout, lmd_bot.config, lmd_bot.overlay, lmd_bot.rendering, lmd_bot.cli"
    )
    for heavy in ("torch", "diffusers", "transformers", "discord", "anthropic", "sqlalchemy"):
        assert heavy not in mods, heavy


def test_cli_help_builds_every_subcommand_without_heavy_imports():
    mods = _modules_after(
        "import contextlib, io\n"
        "from lmd_bot.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert "torch" not in mods and "discord" not in mods


def test_console_script_help_and_version():
    exe = Path(sys.executable).parent / "lmd-bot"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "layout" in out
    assert "lmd-bot 0.1.0" in subprocess.run([exe, "--version"], capture_output=True, text=True).stdout


def test_the_bot_and_a_worker_host_start_without_the_gpu_stack():
    """A scaled-out bot host installs no torch (the ``render`` extra): nothing it loads at start-up
    may import it, nor may the worker's Redis side (only its GPU process renders)."""
    mods = _modules_after(
        "import bot, cogs.imagine, cogs.admin, cogs._notifier, cogs._views\n"
        "import lmd_bot.services, lmd_bot.services.app, lmd_bot.jobs.local, lmd_bot.jobs.redis\n"
        "import lmd_bot.commands.run, lmd_bot.commands.worker, lmd_bot.jobs.renderers, lmd_bot.jobs.preview\n"
        "from lmd_bot.cli import build_parser; build_parser()"
    )
    for heavy in ("torch", "diffusers", "transformers", "numpy"):
        assert heavy not in mods, heavy
