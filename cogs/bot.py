"""Start lmd-bot on the configured engines: ``python bot.py [--sync-global]`` or ``lmd-bot run``.

Start-up: settings, logging, the database (migrated to the newest schema), the planner, the GPU
queue and its worker, the scene service, then the Discord client with its cogs and persistent
buttons. Logging in and connecting retry network failures with backoff. Slash commands are synced
to ``discord.dev_guild_id`` at start-up (instant) and globally only when asked (``--sync-global``
or ``discord.sync_global``: it takes up to an hour to show); with both, the dev server gets no
copies of its own (it would list every command twice). A refused sync stops the bot with one line
saying what to fix.

Shutdown (Ctrl+C, SIGTERM): let the plans under way finish (new requests are told the bot is
restarting), stop taking jobs, let the running render finish within
``queue.shutdown_grace_s`` (else it is requeued for the next start), deliver pending status
updates, close the planner's connections and the database, then disconnect.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from lmd_bot.config import Settings, load_settings, require_secret
from lmd_bot.errors import ConfigError, LmdError
from lmd_bot.logs import configure_logging

log = logging.getLogger("lmd_bot")

# On shutdown, seconds to let plans under way finish (planner calls take seconds; within Docker's
# default 10 s stop timeout).
REQUESTS_GRACE_S = 8.0


def build_bot(core, *, sync_global: bool = False):
    """The Discord client around a started-or-not core (tests build it with their own core)."""
    import discord
    from discord.ext import commands

    from cogs import EXTENSIONS, _startup
    from cogs._common import InFlight, on_app_command_error
    from cogs._notifier import DiscordNotifier
    from cogs._views import DYNAMIC_ITEMS

    class LmdBot(commands.Bot):
        def __init__(self) -> None:
            intents = discord.Intents.default()
            intents.message_content = core.settings.discord.message_content_intent
            super().__init__(
                command_prefix=(),  # no prefix commands: slash commands, buttons and the cogs' listeners
                intents=intents,
                help_command=None,
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, replied_user=False),
            )
            self.core = core
            self.scenes = core.scenes
            self.refines = core.refines
            self.candidates = core.candidates
            self.in_flight = InFlight()
            self._closed = False

        async def setup_hook(self) -> None:
            self.tree.error(on_app_command_error)
            for extension in EXTENSIONS:
                await self.load_extension(extension)
            self.add_dynamic_items(*DYNAMIC_ITEMS)
            self.scenes.attach(DiscordNotifier(self))
            await self.scenes.start()

        async def sync_commands(self) -> None:
            await _startup.sync_commands(
                self.tree,
                dev_guild_id=core.settings.discord.dev_guild_id,
                sync_global=sync_global or core.settings.discord.sync_global,
            )

        async def start(self, token: str, *, reconnect: bool = True) -> None:
            # discord.py's own start gives up on the first network error, and a failed first
            # connect trips over a bug of its own: retry those, and sync between login and connect.
            delays = _startup.backoff(core.settings.discord.connect_retries)
            await _startup.login(self, token, delays)
            await _startup.with_retries("syncing slash commands", self.sync_commands, delays)
            await _startup.connect(self, delays)

        async def on_message(self, message: discord.Message) -> None:
            """The cogs' listeners handle messages; ``commands.Bot`` would also look for prefix
            commands in each one (and log CommandNotFound for every "@lmd-bot move the cup")."""

        async def on_ready(self) -> None:
            log.info("logged in as %s (%s) in %d servers", self.user, self.user.id, len(self.guilds))

        async def close(self) -> None:
            if not self._closed:
                self._closed = True
                log.info("shutting down")
                await self.in_flight.drain(REQUESTS_GRACE_S)
                await self.core.close()
            await super().close()

    return LmdBot()


async def run(settings: Settings, token: str, *, sync_global: bool) -> None:
    import aiohttp
    import discord

    from lmd_bot.services import open_core

    core = await open_core(settings)
    bot = build_bot(core, sync_global=sync_global)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        raise ConfigError(
            "Discord rejected discord.token (LMD_DISCORD__TOKEN): reset it in the developer portal."
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise ConfigError(
            "The Message Content intent is off in the developer portal (Bot -> Privileged Gateway Intents): "
            "turn it on, or set LMD_DISCORD__MESSAGE_CONTENT_INTENT=false (users then mention the bot)."
        ) from None
    except (OSError, aiohttp.ClientError, discord.GatewayNotFound, discord.DiscordServerError) as exc:
        log.debug("Discord unreachable", exc_info=True)
        raise LmdError(f"cannot reach Discord ({exc}); check the network and try again.") from None
    finally:
        await bot.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot.py", description="Run the lmd-bot Discord bot.")
    parser.add_argument("--sync-global", action="store_true", help="sync slash commands to every server")
    args = parser.parse_args(argv)
    return start(sync_global=args.sync_global)


def start(*, sync_global: bool = False) -> int:
    """Run the bot until it is stopped; 2 (after one line on stderr) when it cannot start."""
    try:
        settings = load_settings()
        token = require_secret(
            settings.discord.token,
            "discord.token",
            "Create a bot in the Discord developer portal (Applications -> Bot -> Reset Token) "
            "and put the token in the environment or in a .env file.",
        )
    except ConfigError as exc:
        print(f"lmd-bot cannot start: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings, token, sync_global=sync_global))
    except LmdError as exc:
        print(f"lmd-bot cannot start: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
