"""discord.py-shaped mocks: interactions, threads, messages and a bot, recording what the cogs
send. Mocks are ``spec``'d on the real discord classes, so a cog touching an attribute Discord
objects lack fails the test, and ``isinstance`` checks in the cogs pass."""

from __future__ import annotations

import itertools
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord

BOT_ID = 4242
_ids = itertools.count(700_000)


def http_error(cls: type[discord.HTTPException], status: int, text: str) -> discord.HTTPException:
    return cls(MagicMock(status=status, reason=text), text)


@dataclass
class Sent:
    """One message the bot posted, with its edits applied."""

    id: int
    channel_id: int
    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)
    reactions: list[str] = field(default_factory=list)
    removed_reactions: list[tuple[str, int]] = field(default_factory=list)
    edits: int = 0
    kwargs: dict[str, Any] = field(default_factory=dict)
    thread: Any = None

    def apply(self, fields: dict[str, Any]) -> None:
        self.kwargs.update(fields)
        if "content" in fields:
            self.content = fields["content"]
        if "embed" in fields:
            self.embeds = [fields["embed"]] if fields["embed"] else []
        if "embeds" in fields:
            self.embeds = list(fields["embeds"])
        for key in ("file", "files", "attachments"):
            if key in fields:
                value = fields[key]
                items = [value] if isinstance(value, discord.File) else list(value or [])
                self.files = [f.filename for f in items]
        if "view" in fields:
            view = fields["view"]
            self.custom_ids = [item.custom_id for item in view.children] if view else []

    def field(self, name: str) -> str | None:
        for embed in self.embeds:
            for f in embed.fields:
                if f.name == name:
                    return f.value
        return None


class FakeDiscord:
    """Channels, threads and messages; ``bot`` is a mock client whose ``scenes`` is the service."""

    def __init__(self, scenes) -> None:
        self.messages: dict[int, Sent] = {}
        self.channels: dict[int, MagicMock] = {}
        self.bot = MagicMock()
        self.bot.scenes = scenes
        self.bot.user = MagicMock(spec=discord.ClientUser)
        self.bot.user.id = BOT_ID
        self.bot.get_channel = MagicMock(side_effect=lambda cid: self.channels.get(cid))
        self.bot.fetch_channel = AsyncMock(side_effect=self._fetch)
        self.guild = MagicMock(spec=discord.Guild)
        self.guild.id = 100
        self.guild.filesize_limit = 10 * 2**20
        self.text = self.text_channel(10)

    async def _fetch(self, cid: int):
        if cid in self.channels:
            return self.channels[cid]
        raise http_error(discord.NotFound, 404, "Unknown Channel")

    def _messageable(self, channel: MagicMock) -> None:
        async def send(content=None, **fields):
            sent = Sent(id=next(_ids), channel_id=channel.id)
            sent.apply({"content": content, **fields})
            self.messages[sent.id] = sent
            return self.message_mock(sent, channel)

        channel.send = AsyncMock(side_effect=send)
        channel.get_partial_message = MagicMock(side_effect=lambda mid: self.partial(channel, mid))

        @asynccontextmanager
        async def typing():
            yield

        channel.typing = MagicMock(side_effect=typing)

    def text_channel(self, cid: int) -> MagicMock:
        channel = MagicMock(spec=discord.TextChannel)
        channel.id = cid
        channel.guild = self.guild
        channel.is_nsfw = MagicMock(return_value=False)
        self._messageable(channel)
        self.channels[cid] = channel
        return channel

    def thread(self, tid: int, parent: MagicMock | None = None) -> MagicMock:
        thread = MagicMock(spec=discord.Thread)
        thread.id = tid
        thread.parent = parent or self.text
        thread.parent_id = thread.parent.id
        thread.guild = self.guild
        thread.archived = False
        thread.locked = False
        thread.mention = f"<#{tid}>"
        thread.is_nsfw = MagicMock(return_value=False)
        self._messageable(thread)
        self.channels[tid] = thread
        return thread

    def partial(self, channel: MagicMock, mid: int) -> MagicMock:
        partial = MagicMock(spec=discord.PartialMessage)
        partial.id = mid

        async def edit(**fields):
            if mid not in self.messages:
                raise http_error(discord.NotFound, 404, "Unknown Message")
            sent = self.messages[mid]
            sent.apply(fields)
            sent.edits += 1
            return self.message_mock(sent, channel)

        async def add_reaction(emoji):
            self.messages[mid].reactions.append(str(emoji))

        async def remove_reaction(emoji, member):
            self.messages[mid].removed_reactions.append((str(emoji), member.id))

        partial.edit = AsyncMock(side_effect=edit)
        partial.add_reaction = AsyncMock(side_effect=add_reaction)
        partial.remove_reaction = AsyncMock(side_effect=remove_reaction)
        return partial

    def message_mock(self, sent: Sent, channel: MagicMock) -> MagicMock:
        message = MagicMock(spec=discord.Message)
        message.id = sent.id
        message.channel = channel

        async def create_thread(*, name, auto_archive_duration=None, **_):
            thread = self.thread(next(_ids), parent=channel)
            thread.name = name
            sent.thread = thread
            return thread

        async def add_reaction(emoji):
            sent.reactions.append(str(emoji))

        message.create_thread = AsyncMock(side_effect=create_thread)
        message.add_reaction = AsyncMock(side_effect=add_reaction)
        return message

    # --- what users do ---------------------------------------------------------------------------

    def member(self, user_id: int, *, admin: bool = False) -> MagicMock:
        member = MagicMock(spec=discord.Member)
        member.id = user_id
        member.bot = False
        member.guild_permissions = discord.Permissions(manage_guild=admin)
        member.mention = f"<@{user_id}>"
        return member

    def interaction(
        self,
        user_id: int,
        channel: MagicMock | None = None,
        *,
        admin: bool = False,
        app_permissions: discord.Permissions | None = None,
    ) -> MagicMock:
        channel = channel or self.text
        inter = MagicMock(spec=discord.Interaction)
        inter.user = self.member(user_id, admin=admin)
        inter.guild_id = self.guild.id
        inter.guild = self.guild
        inter.channel = channel
        inter.channel_id = channel.id
        inter.client = self.bot
        inter.permissions = discord.Permissions(manage_guild=admin)
        inter.app_permissions = app_permissions if app_permissions is not None else discord.Permissions.all()
        inter.command = None
        done = {"value": False}
        response = MagicMock(spec=discord.InteractionResponse)
        response.is_done = MagicMock(side_effect=lambda: done["value"])

        def answering(name):
            async def answer(*args, **kwargs):
                done["value"] = True

            return AsyncMock(side_effect=answer, name=name)

        for name in ("defer", "send_message", "send_modal"):
            setattr(response, name, answering(name))
        inter.response = response
        inter.followup = MagicMock(spec=discord.Webhook)
        inter.followup.send = AsyncMock()
        original = Sent(id=next(_ids), channel_id=channel.id)
        self.messages[original.id] = original
        self.original = original

        async def edit_original_response(**fields):
            original.apply(fields)
            original.edits += 1
            return self.message_mock(original, channel)

        inter.edit_original_response = AsyncMock(side_effect=edit_original_response)
        return inter

    def message(
        self, user_id: int, channel: MagicMock, content: str, *, mentions_bot: bool = False
    ) -> MagicMock:
        sent = Sent(id=next(_ids), channel_id=channel.id, content=content)
        self.messages[sent.id] = sent
        message = self.message_mock(sent, channel)
        message.author = self.member(user_id)
        message.guild = self.guild
        message.content = content
        message.mentions = [self.bot.user] if mentions_bot else []

        async def add_reaction(emoji):
            sent.reactions.append(str(emoji))

        async def reply(content=None, **fields):
            return await channel.send(content, **fields)

        message.add_reaction = AsyncMock(side_effect=add_reaction)
        message.reply = AsyncMock(side_effect=reply)
        return message

    def in_channel(self, channel_id: int) -> list[Sent]:
        return [m for m in self.messages.values() if m.channel_id == channel_id]


def reaction(fake: FakeDiscord, message_id: int, channel_id: int, user_id: int, emoji: str = "🔄"):
    """A RawReactionActionEvent as the gateway would deliver it (built by discord.py itself)."""
    data = {
        "message_id": str(message_id),
        "channel_id": str(channel_id),
        "user_id": str(user_id),
        "guild_id": str(fake.guild.id),
        "type": 0,
        "burst": False,
    }
    event = discord.RawReactionActionEvent(data, discord.PartialEmoji(name=emoji), "REACTION_ADD")
    event.member = fake.member(user_id)
    return event
