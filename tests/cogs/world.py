"""The real bot (``bot.build_bot``: its cogs, persistent buttons, notifier and start-up) against
the fake Discord REST API, with gateway events made in-process.

What the bot sends goes through discord.py's real HTTP layer to
:class:`tests.fakes.fake_discord.FakeDiscordAPI`; what Discord would push over the gateway
(slash commands, button clicks, modal submits, messages, reactions, thread updates) is built
from JSON payloads and fed to the bot's real ``ConnectionState`` parsers, so discord.py's own
dispatch (the command tree, the dynamic-item store, listeners) runs as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import discord

from bot import build_bot
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.services import open_core
from lmd_bot.testing import ScriptedPlanner
from tests.cogs.conftest import eventually as _eventually
from tests.fakes.fake_discord import APP_ID, BOT_ID, TEXT, FakeDiscordAPI
from tests.services.conftest import make_settings

GUILD_ID = 100
OWNER, OTHER = 1, 2
PREVIEW = RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer")
_OPTION_TYPES = {str: 3, int: 4, bool: 5}


def user_json(user_id: int) -> dict[str, Any]:
    return {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0", "avatar": None}


class World:
    def __init__(self, api: FakeDiscordAPI, bot, core) -> None:
        self.api = api
        self.bot = bot
        self.core = core
        self.text_id = 0
        self._ids = itertools.count(500_000_000)
        api.on_gateway = self._gateway

    @property
    def state(self):
        return self.bot._connection

    @property
    def guild(self) -> discord.Guild:
        guild = self.bot.get_guild(GUILD_ID)
        assert guild is not None
        return guild

    def add_channel(self, name: str, *, type: int = TEXT, nsfw: bool = False) -> int:
        """A channel of the server, known to both the API and the bot's cache."""
        cid = self.api.add_channel(GUILD_ID, name, type=type, nsfw=nsfw)
        self.state.parse_channel_create(self.api.channels[cid])
        return cid

    def _gateway(self, event: str, data: dict[str, Any]) -> None:
        if event == "THREAD_CREATE":
            self.state.parse_thread_create(data)
        elif event == "THREAD_UPDATE":
            self.state.parse_thread_update(data)
        elif event == "CHANNEL_UPDATE":
            self.state.parse_channel_update(data)

    # --- what users do --------------------------------------------------------------------------

    def _member(self, user_id: int, *, admin: bool = False) -> dict[str, Any]:
        perms = discord.Permissions(manage_guild=admin, send_messages=True, view_channel=True)
        return {
            "user": user_json(user_id),
            "roles": [],
            "joined_at": "2026-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(perms.value),
        }

    def _interaction(
        self,
        kind: int,
        user_id: int,
        channel_id: int,
        data: dict[str, Any],
        *,
        admin: bool = False,
        app_permissions: discord.Permissions | None = None,
        message: dict[str, Any] | None = None,
    ) -> str:
        iid = next(self._ids)
        token = f"token-{iid}"
        channel = self.api.channels[channel_id]
        in_guild = "guild_id" in channel
        self.api.new_interaction(token, iid, kind, channel_id)
        perms = app_permissions if app_permissions is not None else discord.Permissions.all()
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(APP_ID),
            "type": kind,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": channel,
            "app_permissions": str(perms.value),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10 * 2**20,
            "context": 0 if in_guild else 1,
            "data": data,
        }
        if in_guild:
            payload.update(
                guild_id=str(GUILD_ID), guild_locale="en-US", member=self._member(user_id, admin=admin)
            )
        else:
            payload["user"] = user_json(user_id)
        if message is not None:
            payload["message"] = message
        self.state.parse_interaction_create(payload)
        return token

    def slash(
        self,
        name: str,
        user_id: int,
        channel_id: int,
        *,
        admin: bool = False,
        app_permissions=None,
        **options,
    ):
        """A slash command as Discord delivers it; returns the interaction's token."""
        opts = [
            {"name": k, "type": _OPTION_TYPES[type(v)], "value": v}
            for k, v in options.items()
            if v is not None
        ]
        data = {"id": str(next(self._ids)), "name": name, "type": 1, "options": opts}
        return self._interaction(2, user_id, channel_id, data, admin=admin, app_permissions=app_permissions)

    def click(self, custom_id: str, user_id: int, message_id: int) -> str:
        message = self.api.messages[message_id]
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interaction(3, user_id, int(message["channel_id"]), data, message=message)

    def submit(self, custom_id: str, user_id: int, channel_id: int, values: dict[str, str]) -> str:
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()
        ]
        data = {"custom_id": custom_id, "components": rows}
        return self._interaction(5, user_id, channel_id, data)

    def say(
        self,
        user_id: int,
        channel_id: int,
        content: str,
        *,
        mention_bot: bool = False,
        attachments: list[dict[str, Any]] | None = None,
    ) -> int:
        """A user's message (MESSAGE_CREATE); with ``mention_bot`` it starts with the bot's mention;
        ``attachments``: files from :meth:`FakeDiscordAPI.add_file`. In a channel of no server (a
        DM) it comes without a guild or member."""
        mid = next(self._ids)
        if mention_bot:
            content = f"<@{BOT_ID}> {content}".strip()
        data = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": user_json(user_id),
            "content": content,
            "timestamp": "2026-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self.api.bot_user] if mention_bot else [],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if "guild_id" in self.api.channels[channel_id]:
            member = {k: v for k, v in self._member(user_id).items() if k != "user"}
            data.update(guild_id=str(GUILD_ID), member=member)
        self.api.messages[mid] = {**data, "author": user_json(user_id)}
        self.state.parse_message_create(data)
        return mid

    def react(self, user_id: int, channel_id: int, message_id: int, emoji: str = "🔄") -> None:
        self.state.parse_message_reaction_add(
            {
                "user_id": str(user_id),
                "channel_id": str(channel_id),
                "message_id": str(message_id),
                "guild_id": str(GUILD_ID),
                "emoji": {"id": None, "name": emoji},
                "member": self._member(user_id),
                "type": 0,
                "burst": False,
                "burst_colors": [],
            }
        )

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait until discord.py has run every handler it dispatched (commands, components,
        listeners); deliveries from the queue are awaited with :func:`eventually`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        me = asyncio.current_task()
        while True:
            busy = [
                t
                for t in asyncio.all_tasks()
                if t is not me and not t.done() and t.get_name().startswith(("discord", "CommandTree"))
            ]
            if not busy:
                return
            if loop.time() > deadline:
                raise AssertionError(f"handlers still running: {busy}")
            await asyncio.sleep(0.01)

    # --- what the bot did -----------------------------------------------------------------------

    def original(self, token: str) -> dict[str, Any]:
        """The interaction's response message as it is now."""
        return self.api.messages[self.api.interactions[token]["original"]]

    def callback(self, token: str) -> dict[str, Any]:
        """The interaction callback Discord accepted from the bot (type and data)."""
        iid = self.api.interactions[token]["id"]
        sent = self.api.requests_to("POST", f"/interactions/{iid}/{token}/callback")
        [accepted] = [r for r in sent if r.status == 200]
        return accepted.json

    def followups(self, token: str) -> list[dict[str, Any]]:
        return [r.json for r in self.api.requests_to("POST", f"/webhooks/{APP_ID}/{token}")]


async def eventually(predicate, timeout: float = 30.0):
    """Poll ``predicate`` until it returns something truthy (deliveries from the queue)."""
    return await _eventually(predicate, timeout)


@contextlib.asynccontextmanager
async def discord_world(
    tmp_path, *, renderer: RendererSpec = PREVIEW, planner=None, api: FakeDiscordAPI | None = None, **sections
) -> AsyncIterator[World]:
    """A core, the real bot logged in to a fresh fake Discord (setup_hook ran: cogs, buttons,
    the notifier, command sync), a server with a text channel ``#art``; all closed after."""
    sections.setdefault("discord", {})
    sections["discord"] = {"status_edit_interval_s": 0.0, **sections["discord"]}
    settings = make_settings(tmp_path, **sections)
    seeds = iter(range(5000, 5100))
    async with contextlib.AsyncExitStack() as stack:
        api = api or await stack.enter_async_context(FakeDiscordAPI())
        stack.enter_context(api.pointed_at())
        api.add_guild(guild_id=GUILD_ID)
        core = await open_core(
            settings, planner=planner or ScriptedPlanner(), renderer=renderer, new_seed=lambda: next(seeds)
        )
        bot = build_bot(core)
        world = World(api, bot, core)
        stack.push_async_callback(bot.close)
        await bot.login("fake-token")
        world.state._add_guild_from_data(api.guilds[GUILD_ID])
        world.text_id = world.add_channel("art")
        yield world


# --- reading the results -------------------------------------------------------------------


def field(message, name: str) -> str | None:
    for embed in message["embeds"]:
        for f in embed.get("fields", []):
            if f["name"] == name:
                return f["value"]
    return None


def results_in(world: World, thread_id: int) -> list[dict]:
    return [m for m in world.api.messages_in(thread_id) if field(m, "Seed")]


def images(message) -> list[str]:
    """Every image URL the message's embeds show (image and thumbnail)."""
    return [e[kind]["url"] for e in message["embeds"] for kind in ("image", "thumbnail") if kind in e]


async def imagine(world: World, prompt: str = "a red apple, a blue cup", user: int = OWNER, **options):
    token = world.slash("imagine", user, world.text_id, prompt=prompt, **options)
    await world.settle()
    return token


async def first_result(world: World, prompt: str = "a red apple, a blue cup", **options):
    """``/imagine``, then its result once delivered in full (posted and recorded as the round's
    message, as the 🔄 on it needs)."""
    token = await imagine(world, prompt, **options)
    thread_id = int(world.original(token)["thread"]["id"])
    [result] = await eventually(lambda: results_in(world, thread_id))
    for _ in range(500):
        if await world.core.repo.message(int(result["id"])) is not None:
            break
        await asyncio.sleep(0.02)
    return token, thread_id, result
