"""Start-up against the fake Discord: command sync where the settings ask, refusals as one line
that says what to fix, network failures retried with backoff."""

from __future__ import annotations

import logging
import socket

import aiohttp
import pytest

from cogs import _startup
from lmd_bot.errors import ConfigError
from tests.cogs.world import GUILD_ID, discord_world
from tests.fakes.fake_discord import APP_ID, MISSING_ACCESS

NAMES = {"imagine", "share", "queue", "info", "settings"}


def _names(request) -> set[str]:
    return {c["name"] for c in request.json}


async def test_a_dev_server_sync_registers_a_copy_of_every_command_there_only(tmp_path):
    async with discord_world(tmp_path, discord={"dev_guild_id": GUILD_ID}) as world:
        await world.bot.sync_commands()
        [guild_put] = world.api.requests_to("PUT", f"/applications/{APP_ID}/guilds/{GUILD_ID}/commands")
        assert _names(guild_put) == NAMES
        assert not world.api.requests_to("PUT", f"/applications/{APP_ID}/commands")


async def test_dev_server_and_global_sync_do_not_list_every_command_twice(tmp_path):
    async with discord_world(tmp_path, discord={"dev_guild_id": GUILD_ID, "sync_global": True}) as world:
        await world.bot.sync_commands()
        [global_put] = world.api.requests_to("PUT", f"/applications/{APP_ID}/commands")
        assert _names(global_put) == NAMES
        # The dev server shows the global commands; its own copies (from earlier runs) are removed.
        [guild_put] = world.api.requests_to("PUT", f"/applications/{APP_ID}/guilds/{GUILD_ID}/commands")
        assert guild_put.json == []


async def test_no_sync_configured_says_so_in_the_log(tmp_path, caplog):
    async with discord_world(tmp_path) as world:
        with caplog.at_level(logging.INFO, logger="cogs._startup"):
            await world.bot.sync_commands()
        assert not world.api.requests_to("PUT", r"/applications/.*")
        assert "not synced" in caplog.text and "--sync-global" in caplog.text


async def test_a_refused_dev_server_sync_is_one_line_naming_the_cause_and_the_fix(tmp_path):
    async with discord_world(tmp_path, discord={"dev_guild_id": GUILD_ID}) as world:
        world.api.fail(
            "PUT",
            rf"/applications/{APP_ID}/guilds/{GUILD_ID}/commands",
            403,
            MISSING_ACCESS,
            "Missing Access",
        )
        with pytest.raises(ConfigError) as err:
            await world.bot.sync_commands()
        line = str(err.value)
        assert "\n" not in line and str(GUILD_ID) in line and "Missing Access" in line
        assert "applications.commands" in line and "dev_guild_id" in line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_login_retries_network_failures_with_backoff_then_gives_up(tmp_path, caplog):
    async with discord_world(tmp_path) as world:
        world.api.base_url = f"http://127.0.0.1:{_closed_port()}/api/v10"  # Discord unreachable
        with (
            world.api.pointed_at(),
            caplog.at_level(logging.WARNING, logger="cogs._startup"),
            pytest.raises(aiohttp.ClientConnectionError),
        ):
            await _startup.login(world.bot, "fake-token", delays=(0.01, 0.02))
        assert caplog.text.count("retrying") == 2


async def test_a_network_failure_is_retried_until_a_try_succeeds():
    tries = []

    async def flaky() -> None:
        tries.append(1)
        if len(tries) < 3:
            raise aiohttp.ClientConnectionError("Cannot connect to host discord.com:443")

    await _startup.with_retries("logging in", flaky, delays=(0.01, 0.01, 0.01))
    assert len(tries) == 3


async def test_a_refusal_is_not_retried():
    tries = []

    async def refused() -> None:
        tries.append(1)
        raise ConfigError("no")

    with pytest.raises(ConfigError):
        await _startup.with_retries("syncing", refused, delays=(0.01,))
    assert len(tries) == 1


async def test_a_failed_first_gateway_connect_is_retried_not_a_discord_py_attribute_error(
    tmp_path, caplog, monkeypatch
):
    import yarl
    from discord.gateway import DiscordWebSocket

    # The gateway is unreachable (nothing listens there), as when its name does not resolve.
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{_closed_port()}/"))
    async with discord_world(tmp_path) as world:
        with (
            caplog.at_level(logging.WARNING, logger="cogs._startup"),
            pytest.raises(aiohttp.ClientConnectionError),
        ):
            await _startup.connect(world.bot, delays=(0.01,))
        assert caplog.text.count("retrying") == 1


def test_the_backoff_doubles_up_to_a_ceiling():
    assert _startup.backoff(0) == ()
    assert _startup.backoff(7) == (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0)
