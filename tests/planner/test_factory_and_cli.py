"""build_planner from the settings, and `lmd-bot plan` end to end against the fake API."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from lmd_bot.config import load_settings
from lmd_bot.errors import ConfigError
from lmd_bot.planner import build_planner
from tests.planner.conftest import API_KEY


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("LMD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_missing_api_key_names_the_setting():
    with pytest.raises(ConfigError) as err:
        build_planner(load_settings())
    assert "LMD_PLANNER__API_KEY" in str(err.value)


async def test_built_anthropic_planner_uses_the_configured_server_and_model(fake_anthropic):
    settings = load_settings(
        planner={"api_key": API_KEY, "base_url": fake_anthropic.base_url, "model": "claude-sonnet-5-5"},
        layout={"max_objects": 4},
    )
    fake_anthropic.push_layout([(f"a cat {i}", (i * 100, 10, 90, 90)) for i in range(6)])
    fake_anthropic.push_layout([(f"a cat {i}", (i * 100, 10, 90, 90)) for i in range(4)])
    planner = build_planner(settings)
    try:
        result = await planner.plan("four cats")
    finally:
        await planner.aclose()
    assert len(result.layout.objects) == 4
    body = fake_anthropic.bodies[0]
    assert body["model"] == "claude-sonnet-5-5" and "At most 4 objects" in body["system"][0]["text"]


async def test_built_openai_planner_needs_no_key(fake_openai):
    settings = load_settings(planner={"backend": "openai", "openai_base_url": fake_openai.api_base})
    fake_openai.push_completion("Objects: [('a cat', [10, 10, 100, 100])]\nBackground prompt: A garden")
    planner = build_planner(settings)
    try:
        result = await planner.plan("a cat in a garden")
    finally:
        await planner.aclose()
    assert result.layout.background == "A garden"


# The tests run in a temporary folder: point the child at this checkout's lmd_bot.
ROOT = str(Path(__file__).resolve().parents[2])


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lmd_bot.cli", "plan", *args,
        env={**os.environ, "PYTHONPATH": ROOT, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_plan_command_prints_layout_writes_overlay_and_revises(fake_anthropic, tmp_path):
    env = {"LMD_PLANNER__API_KEY": API_KEY, "LMD_PLANNER__BASE_URL": fake_anthropic.base_url}
    fake_anthropic.push_layout(
        [("a red apple", (52, 292, 96, 92)), ("a blue cup", (382, 236, 100, 148))], "A table"
    )
    code, out, err = await run_cli("an apple and a cup", "--history-out", "scene.json", env=env)
    assert code == 0, err
    as_json, as_text = out.split("\n\n", 1)
    assert [o["caption"] for o in json.loads(as_json)["objects"]] == ["a red apple", "a blue cup"]
    assert as_text.startswith("[('a red apple', [52, 292, 96, 92]), ('a blue cup', [382, 236, 100, 148])]")
    assert "Background prompt: A table" in as_text
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert "usage:" in err and "cache write" in err

    fake_anthropic.push_layout(
        [("a red apple", (52, 292, 96, 92), 1), ("a green cup", (382, 236, 100, 148), 2)], "A table"
    )
    code, out, err = await run_cli(
        "make the cup green",
        "--revise",
        "scene.json",
        "--history-out",
        "scene.json",
        "--overlay",
        "r2.png",
        env=env,
    )
    assert code == 0, err
    history = json.loads((tmp_path / "scene.json").read_text())
    assert [r["instruction"] for r in history] == ["an apple and a cup", "make the cup green"]
    assert [(o["id"], o["caption"]) for o in history[1]["layout"]["objects"]] == [
        (1, "a red apple"),
        (2, "a green cup"),
    ]
    assert [m["role"] for m in fake_anthropic.bodies[1]["messages"]] == ["user", "assistant", "user"]
    assert (tmp_path / "r2.png").exists()


async def test_plan_command_reports_errors_without_a_traceback(fake_anthropic, tmp_path):
    code, _, err = await run_cli("a cat", env={})
    assert code == 2 and "LMD_PLANNER__API_KEY" in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text('[{"instruction": "x", "layout": {"objects": 5}}]')
    code, _, err = await run_cli("edit", "--revise", "bad.json", env={"LMD_PLANNER__API_KEY": API_KEY})
    assert code == 2 and "bad.json is not a scene history" in err and "Traceback" not in err


async def test_plan_command_takes_an_argument_that_is_not_utf8(fake_anthropic, tmp_path):
    """A shell in Latin-1 passes 'café' as bytes that are not UTF-8; Python hands them over as lone
    surrogates, which no HTTP client can encode (it was a UnicodeEncodeError traceback). The
    undecodable byte reaches the planner as U+FFFD, the rest as typed."""
    env = {"LMD_PLANNER__API_KEY": API_KEY, "LMD_PLANNER__BASE_URL": fake_anthropic.base_url}
    fake_anthropic.push_layout([("a table", (52, 292, 96, 92))], "A cafe")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lmd_bot.cli", "plan", "a caf\xe9 table".encode("latin-1"),
        env={**os.environ, "PYTHONPATH": ROOT, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "Background prompt: A cafe" in out.decode()
    assert "Caption: a caf\ufffd table" in fake_anthropic.bodies[0]["messages"][0]["content"]


async def test_commands_log_at_the_configured_log_level(fake_anthropic, tmp_path):
    """``log_level`` (LMD_LOG_LEVEL) is every command's, not only the bot's: ``lmd-bot chat``,
    ``plan`` and ``worker`` logged INFO whatever it said, and never DEBUG."""
    env = {"LMD_PLANNER__API_KEY": API_KEY, "LMD_PLANNER__BASE_URL": fake_anthropic.base_url}
    logged = {}
    for level in ("INFO", "WARNING", "DEBUG"):
        fake_anthropic.push_layout([("a cat", (9, 9, 99, 99))])
        code, out, err = await run_cli("a cat", env={**env, "LMD_LOG_LEVEL": level})
        assert code == 0, err
        assert "('a cat', [9, 9, 99, 99])" in out
        logged[level] = {line.split()[2] for line in err.splitlines() if line.startswith("20")}
    assert "INFO" in logged["INFO"] and "DEBUG" not in logged["INFO"]  # planned with …, the request
    assert logged["WARNING"] == set()
    assert "DEBUG" in logged["DEBUG"]


async def test_plan_command_refuses_an_unwritable_output_before_asking_the_planner(fake_anthropic, tmp_path):
    env = {"LMD_PLANNER__API_KEY": API_KEY, "LMD_PLANNER__BASE_URL": fake_anthropic.base_url}
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "plan.png"  # root writes through chmod; a file in the way stops it
    code, out, err = await run_cli("a cat", "--overlay", str(target), env=env)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: cannot write the plan picture to {target}: {tmp_path / 'afile'} is a file, not a folder"
    ]
    code, out, err = await run_cli("a cat", "--history-out", str(tmp_path), env=env)
    assert code == 2 and err.strip().splitlines() == [
        f"error: cannot write the scene history to {tmp_path}: it is a folder"
    ]
    assert fake_anthropic.received == []  # no tokens spent


async def test_effort_and_thinking_default_leave_the_parameters_out(fake_anthropic):
    settings = load_settings(
        planner={
            "api_key": API_KEY,
            "base_url": fake_anthropic.base_url,
            "effort": "default",
            "thinking": "default",
        }
    )
    fake_anthropic.push_layout([("a cat", (10, 10, 100, 100))])
    planner = build_planner(settings)
    try:
        await planner.plan("a cat")
    finally:
        await planner.aclose()
    body = fake_anthropic.bodies[0]
    assert "thinking" not in body and set(body["output_config"]) == {"format"}
