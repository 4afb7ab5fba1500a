"""Discord start-up: logging in and connecting through short network outages, and syncing slash
commands, with failures a person can act on (one line naming the cause and the fix)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import discord
from discord import app_commands

from lmd_bot.errors import ConfigError

log = logging.getLogger(__name__)

# Failures that say nothing about the bot's configuration: the network, DNS, Discord's 5xx.
TRANSIENT = (aiohttp.ClientConnectionError, TimeoutError, discord.DiscordServerError, discord.GatewayNotFound)
MAX_DELAY_S = 30.0


def backoff(retries: int) -> tuple[float, ...]:
    """The waits before each retry: 1, 2, 4, … seconds, at most :data:`MAX_DELAY_S`."""
    return tuple(min(2.0**i, MAX_DELAY_S) for i in range(retries))


async def with_retries(what: str, attempt: Callable[[], Awaitable[None]], delays: tuple[float, ...]) -> None:
    """Run ``attempt``; on a transient failure wait and try again (``delays``, then give up by
    raising the last failure)."""
    for delay in (*delays, None):
        try:
            await attempt()
            return
        except TRANSIENT as exc:
            if delay is None:
                raise
            log.warning("%s failed (%s); retrying in %.0f s", what, _describe(exc), delay)
            await asyncio.sleep(delay)


async def login(client: discord.Client, token: str, delays: tuple[float, ...]) -> None:
    """Log in (which runs ``setup_hook`` once it succeeded), retrying network failures."""

    async def attempt() -> None:
        try:
            await client.login(token)
        except TRANSIENT:
            # Each try opens its own HTTP session (on a new connector: closing the session closed
            # the old one); close this one rather than leak it.
            await client.http.close()
            client.http.connector = discord.utils.MISSING
            raise

    await with_retries("logging in to Discord", attempt, delays)


async def connect(client: discord.Client, delays: tuple[float, ...]) -> None:
    """Open the gateway and stay connected (discord.py reconnects once it was connected)."""

    async def attempt() -> None:
        try:
            await client.connect(reconnect=True)
        except AttributeError as exc:
            # discord.py 2.7: when the very first connection fails, its reconnect path reads
            # ``self.ws.sequence`` while ``ws`` is still None. The real failure is the context.
            cause = exc.__context__
            if client.ws is not None or not isinstance(cause, TRANSIENT):
                raise
            raise cause from None

    await with_retries("connecting to Discord's gateway", attempt, delays)


async def sync_commands(
    tree: app_commands.CommandTree, *, dev_guild_id: int | None, sync_global: bool
) -> None:
    """Register the slash commands where the settings ask: the dev server (instant), everywhere
    (up to an hour to show), or neither (those registered before stay)."""
    if dev_guild_id is None and not sync_global:
        log.info(
            "slash commands not synced (set discord.dev_guild_id, or run once with --sync-global); "
            "those registered before stay as they were"
        )
        return
    if dev_guild_id is not None:
        guild = discord.Object(dev_guild_id)
        if sync_global:
            # Global commands show in the dev server too: a server copy would list each twice.
            tree.clear_commands(guild=guild)
        else:
            tree.copy_global_to(guild=guild)
        synced = await _sync(tree, guild)
        log.info("synced %d commands to server %s", len(synced), dev_guild_id)
    if sync_global:
        synced = await _sync(tree, None)
        log.info("synced %d commands globally (visible within an hour)", len(synced))


async def _sync(tree: app_commands.CommandTree, guild: discord.abc.Snowflake | None) -> list:
    try:
        return await tree.sync(guild=guild)
    except discord.Forbidden as exc:
        cause = f"{exc.status} {exc.text or 'Forbidden'}, code {exc.code}"
        if guild is not None:
            raise ConfigError(
                f"Discord refused to register the slash commands in server {guild.id} ({cause}): "
                "invite the bot to that server with the 'bot' and 'applications.commands' scopes "
                "(developer portal -> OAuth2 -> URL Generator), or unset discord.dev_guild_id."
            ) from None
        raise ConfigError(
            f"Discord refused to register the slash commands globally ({cause}): check that "
            "discord.token belongs to this application."
        ) from None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
