"""``lmd-bot chat``: the same scene flow in a terminal."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

from PIL import Image

from lmd_bot.commands.chat import chat
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.rendering import candidate_seeds
from lmd_bot.services import open_core
from lmd_bot.testing import ScriptedPlanner
from tests.fakes import Reply
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.services.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


async def _preview_core(tmp_path: Path, **sections):
    """A core with the scripted planner and the instant preview renderer; new seeds 10, 11, …"""
    return await open_core(
        make_settings(tmp_path, **sections),
        planner=ScriptedPlanner(),
        renderer=RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer"),
        new_seed=iter(range(10, 20)).__next__,
    )


async def _lines(items):
    for item in items:
        yield item


async def test_chat_runs_the_scene_flow_and_writes_images(tmp_path):
    core = await _preview_core(tmp_path)
    said: list[str] = []
    out = tmp_path / "out"
    script = [
        "/undo",
        "a red apple, a blue cup",
        "move apple right",
        "/reroll",
        "/undo",
        "what now?",
        "/layout",
    ]
    try:
        await chat(core, _lines(script), out, said.append)
    finally:
        await core.close()
    text = "\n".join(said)
    assert "Start a scene first" in text
    assert "round 1: a red apple, a blue cup; background: a plain room" in text
    assert "changed: moved: a red apple" in text
    assert "rerolling with seed 11" in text and "back to round 2" in text
    assert "I can add, remove and move objects." in text and '"caption": "a red apple"' in text
    files = sorted(p.name for p in out.iterdir())
    assert "scene1-round1-plan.png" in files and "scene1-round1-seed10.png" in files
    assert "scene1-round2-seed10-overlay.png" in files and "scene1-round3-seed11.png" in files


async def test_chat_renders_a_grid_of_candidates_and_picks_one(tmp_path):
    core = await _preview_core(tmp_path)
    said: list[str] = []
    script = ["/pick 1", "a red apple, a blue cup", "/pick 9", "/pick 2", "move apple right"]
    try:
        await chat(core, _lines(script), tmp_path / "out", said.append, candidates=4)
    finally:
        await core.close()
    text = "\n".join(said)
    seeds = candidate_seeds(10, 4)
    assert "Start a scene first" in text
    assert f"4 candidates (1: seed 10, 2: seed {seeds[1]}," in text
    assert "This grid has 4 candidates: pick 1 to 4." in text
    assert f"round 2, seed {seeds[1]}" in text and f"round 3, seed {seeds[1]}" in text


async def test_chat_refines_as_diffusion_refine_says(tmp_path):
    """``on`` refines every image and says so; ``button`` offers /refine for the last image (the
    preview renderer's refinement doubles the image's size)."""

    async def chatted(refine: str, script: list[str], **imagine) -> tuple[str, dict[str, tuple[int, int]]]:
        home = tmp_path / f"{refine}-{len(list(tmp_path.iterdir()))}"  # a database of its own
        core = await _preview_core(home, diffusion={"refine": refine})
        said: list[str] = []
        out = home / "out"
        try:
            await chat(core, _lines(script), out, said.append, **imagine)
        finally:
            await core.close()
        return "\n".join(said), {p.name: Image.open(p).size for p in out.iterdir() if "plan" not in p.name}

    text, sizes = await chatted("on", ["a red apple, a blue cup", "/refine"])
    [line] = [t for t in text.splitlines() if t.startswith("  round 1, seed 10")]
    assert line.startswith("  round 1, seed 10, refined in ")
    assert line.endswith("/out/scene1-round1-seed10-refined.png")
    assert sizes["scene1-round1-seed10-refined.png"] == (1024, 1024)
    assert "/refine refines" not in text and "can't be refined" in text  # refined already

    text, sizes = await chatted("button", ["/refine", "a red apple, a blue cup", "/refine", "/refine"])
    assert "Start a scene first" in text
    assert "  /refine refines it with the SDXL refiner" in text and "refining the last image" in text
    assert "  round 1, seed 10, refined in " in text
    assert "can't be refined" in text  # the second /refine: the last image is the refined one
    assert sorted(sizes) == [  # the refined image beside the first, not over it
        "scene1-round1-seed10-overlay.png",
        "scene1-round1-seed10-refined-overlay.png",
        "scene1-round1-seed10-refined.png",
        "scene1-round1-seed10.png",
    ]
    assert sizes["scene1-round1-seed10.png"] == (512, 512)
    assert sizes["scene1-round1-seed10-refined.png"] == (1024, 1024)

    text, _ = await chatted("button", ["a red apple, a blue cup", "/refine"], candidates=2)
    assert "Pick a candidate first" in text and "refining" not in text  # a grid is not refined

    text, _ = await chatted("off", ["a red apple, a blue cup", "/refine"])
    assert "SDXL refinement is off on this bot" in text and "/refine refines" not in text


async def test_lmd_bot_chat_command_with_the_real_planner(tmp_path):
    """The installed command, its configured planner against a fake Messages API, stdin lines."""
    async with FakeAnthropic(api_key="test-key") as claude:
        claude.push_layout([("a red apple", (40, 300, 90, 90))], background="A kitchen table")
        claude.push_reply("I can move, add and remove objects.")
        env = {
            **os.environ,
            "LMD_PLANNER__API_KEY": "test-key",
            "LMD_PLANNER__BASE_URL": claude.base_url,
            "LMD_STORAGE__IMAGE_DIR": str(tmp_path / "store"),
            "LMD_DIFFUSION__MODE": "lmd",
            "LMD_DIFFUSION__STEPS": "2",
        }
        proc = await asyncio.create_subprocess_exec(
            Path(sys.executable).parent / "lmd-bot",
            "chat",
            "--renderer",
            "preview",
            "--db",
            f"sqlite+aiosqlite:///{tmp_path}/chat.sqlite3",
            "--out",
            str(tmp_path / "out"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        stdout, stderr = await asyncio.wait_for(
            proc.communicate(b"an apple on a table\nwhat can you do?\n"), 120
        )
    assert proc.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert "round 1: a red apple; background: A kitchen table" in text
    assert "I can move, add and remove objects." in text
    assert any(p.name.endswith("-overlay.png") for p in (tmp_path / "out").iterdir())
    assert "test-key" not in stderr.decode() and "test-key" not in text


def _chat_env(tmp_path: Path, base_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "LMD_PLANNER__API_KEY": "test-key",
        "LMD_PLANNER__BASE_URL": base_url,
        "LMD_STORAGE__IMAGE_DIR": str(tmp_path / "store"),
        "LMD_DB__URL": f"sqlite+aiosqlite:///{tmp_path}/chat.sqlite3",
    }


async def _start_chat(
    tmp_path: Path, base_url: str, *args: str, renderer: tuple[str, ...] = ("--renderer", "preview")
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lmd_bot.cli", "chat", *renderer, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path, env={**_chat_env(tmp_path, base_url), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def test_ctrl_c_leaves_the_chat_at_once_without_a_traceback(tmp_path):
    """Ctrl-C at the prompt ends the chat (exit status 130), however long the terminal stays open;
    it used to wait for one more line of input, and a third Ctrl-C printed a traceback."""
    async with FakeAnthropic(api_key="test-key") as claude:
        proc = await _start_chat(tmp_path, claude.base_url, "--out", str(tmp_path / "out"))
        seen = b""
        while b"Type a scene to start" not in seen:  # the prompt is up: waiting for a line
            chunk = await asyncio.wait_for(proc.stdout.read(256), 60)
            assert chunk, f"chat ended early: {seen.decode()}"
            seen += chunk
        proc.send_signal(signal.SIGINT)  # stdin stays open, as a terminal's does
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), 40)
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 130
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]


async def test_an_output_folder_that_is_a_file_is_refused_before_the_chat_starts(tmp_path):
    """``--out`` naming a file: one line saying so, at once (it used to log tracebacks for every
    picture and then wait forever for a result it could not write)."""
    (tmp_path / "taken").write_text("not a folder")
    async with FakeAnthropic(api_key="test-key") as claude:
        claude.always = Reply(500, {"type": "error", "error": {"type": "api_error", "message": "unused"}})
        proc = await _start_chat(tmp_path, claude.base_url, "--out", str(tmp_path / "taken"))
        _, stderr = await asyncio.wait_for(proc.communicate(b"an apple on a table\n"), 60)
    assert proc.returncode == 2
    assert f"error: cannot write the images to {tmp_path / 'taken'}: it is a file" in stderr.decode()
    assert b"Traceback" not in stderr and not claude.received  # no planner call either


async def test_a_picture_that_cannot_be_written_is_said_and_the_chat_goes_on(tmp_path):
    """The folder becomes unwritable mid-chat (here: replaced by a file): each picture's failure
    is one line, the round still ends, and the next instruction is read."""
    core = await _preview_core(tmp_path)
    said: list[str] = []
    out = tmp_path / "out"

    async def lines():
        yield "a red apple, a blue cup"
        shutil.rmtree(out)
        out.write_text("in the way")
        yield "move apple right"
        yield "/layout"

    try:
        await asyncio.wait_for(chat(core, lines(), out, said.append), 60)
    finally:
        await core.close()
    text = "\n".join(said)
    assert "round 2: a red apple, a blue cup" in text
    assert f"could not write {out}/scene1-round2-plan.png" in text
    assert f"could not write {out}/scene1-round2-seed10.png" in text
    assert '"caption": "a red apple"' in text  # /layout after the failures: the chat went on


async def test_a_line_that_is_not_utf8_is_said_and_the_chat_goes_on(tmp_path):
    """A terminal in another encoding (here Latin-1 'café'): the chat says the line is not text
    it can read and reads the next (it used to crash with UnicodeDecodeError or, in a C locale,
    reach the planner and crash in the HTTP client with UnicodeEncodeError)."""
    async with FakeAnthropic(api_key="test-key") as claude:
        claude.push_layout([("a red apple", (40, 300, 90, 90))], background="A kitchen table")
        proc = await _start_chat(tmp_path, claude.base_url, "--out", str(tmp_path / "out"))
        stdout, stderr = await asyncio.wait_for(
            proc.communicate("a café table\nan apple on a table\n".encode("latin-1")), 120
        )
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
    text = stdout.decode()
    assert "That line is not UTF-8 text" in text
    assert "round 1: a red apple; background: A kitchen table" in text
    assert [b["messages"][-1]["content"] for b in claude.bodies] == ["Caption: an apple on a table"]


async def test_an_unknown_slash_command_is_said_not_sent_to_the_planner(tmp_path):
    """A mistyped command (/udno) used to become an instruction: an LLM call and a new round.
    Commands are read whatever their case."""
    planner = ScriptedPlanner()
    core = await open_core(
        make_settings(tmp_path),
        planner=planner,
        renderer=RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer"),
    )
    said: list[str] = []
    try:
        await chat(core, _lines(["a red apple, a blue cup", "/udno", "/Undo"]), tmp_path / "out", said.append)
    finally:
        await core.close()
    text = "\n".join(said)
    assert "Unknown command /udno: /help lists the commands." in text
    assert "there's nothing to undo" in text  # /Undo is /undo
    assert [call[0] for call in planner.calls] == ["plan"]  # no revise
    assert "round 2" not in text


def test_candidates_out_of_range_are_refused_before_the_chat_starts(capsys):
    """--candidates 7 used to start the chat and then refuse every prompt it was given."""
    from lmd_bot.cli import main

    assert main(["chat", "--candidates", "7"]) == 2
    assert capsys.readouterr().err.strip() == "error: --candidates must be between 1 and 4"


async def test_chat_with_shapes_draws_with_the_shapes_models(tmp_path):
    """``--shapes``: a newcomer's demo with real grounding on a CPU, no model settings to write.
    The picture is the shapes models' (64 px, where the configured models draw 512)."""
    from PIL import Image

    async with FakeAnthropic(api_key="test-key") as claude:
        claude.push_layout([("a red circle", (40, 150, 200, 200))], background="A white wall")
        proc = await _start_chat(
            tmp_path, claude.base_url, "--steps", "3", "--out", str(tmp_path / "out"), renderer=("--shapes",)
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(b"a red circle on a white wall\n"), 240)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "round 1, seed" in stdout.decode()
    [result] = (tmp_path / "out").glob("scene1-round1-seed*[0-9].png")
    assert Image.open(result).size == (64, 64)


def test_a_bad_db_option_is_named_as_the_option_not_the_setting(capsys, tmp_path):
    """The refusal said "db.url (LMD_DB__URL)", a setting the user had not touched, for what they
    typed as --db."""
    from lmd_bot.cli import main

    assert main(["chat", "--renderer", "preview", "--db", "mysql://me@host/db", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --db: mysql+mysqldb is not supported; use sqlite+aiosqlite:///"), err
    assert "LMD_DB__URL" not in err


async def test_pick_after_a_single_image_points_at_the_chat_option(tmp_path):
    """The service's answer names Discord's `/imagine candidates:`, which a terminal has not."""
    core = await _preview_core(tmp_path)
    said: list[str] = []
    try:
        await chat(core, _lines(["a red apple, a blue cup", "/pick 1"]), tmp_path / "out", said.append)
    finally:
        await core.close()
    assert said[-1] == "The last image is not a grid: start the chat with --candidates 2 to 4 to get grids."
