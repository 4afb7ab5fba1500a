"""What every cog needs: who is acting, friendly error replies, and permission checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import discord
from discord import app_commands

from lmd_bot.errors import LmdError
from lmd_bot.services import Actor, CandidateService, DestinationGoneError, RefineService, SceneService

log = logging.getLogger(__name__)

GENERIC_ERROR = "Something went wrong on my side; it has been logged. Please try again."

# Words the bot did not write (the planner's, a user's prompt echoed) may hold "<@id>": they ping nobody.
NO_PINGS = discord.AllowedMentions.none()

# Permissions the bot needs in a channel to run a scene there, with the names Discord shows admins.
SCENE_PERMISSIONS = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "embed_links": "Embed Links",
    "attach_files": "Attach Files",
    "create_public_threads": "Create Public Threads",
    "send_messages_in_threads": "Send Messages in Threads",
    "add_reactions": "Add Reactions",
    "read_message_history": "Read Message History",
}


class RestartingError(LmdError):
    user_message = "I'm restarting right now; send that again in a minute."


class InFlight:
    """The requests the bot is answering that wait on the planner (an ``/imagine``, an instruction,
    an edit box: seconds each). A shutdown lets them finish before the core stops, so their plans
    are shown and their jobs stored (and rendered after the restart), and turns new ones away."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task] = set()
        self._closing = False

    @contextlib.asynccontextmanager
    async def answering(self) -> AsyncIterator[None]:
        """Around a request's work; RestartingError once the bot is shutting down."""
        if self._closing:
            raise RestartingError("shutting down")
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            yield
        finally:
            self._running.discard(task)

    async def drain(self, timeout_s: float) -> None:
        """Take no more requests; wait up to ``timeout_s`` for those under way."""
        self._closing = True
        running = self._running - {asyncio.current_task()}
        if running:
            log.info("finishing %d request(s) before shutting down", len(running))
            _, late = await asyncio.wait(running, timeout=timeout_s)
            if late:
                log.warning("%d request(s) still unanswered at shutdown", len(late))


def in_flight_of(interaction: discord.Interaction) -> InFlight:
    return interaction.client.in_flight  # type: ignore[attr-defined]


def scenes_of(interaction: discord.Interaction) -> SceneService:
    return interaction.client.scenes  # type: ignore[attr-defined]


def refines_of(interaction: discord.Interaction) -> RefineService:
    return interaction.client.refines  # type: ignore[attr-defined]


def candidates_of(interaction: discord.Interaction) -> CandidateService:
    return interaction.client.candidates  # type: ignore[attr-defined]


def _channel_ids(channel: object) -> tuple[int | None, int | None, bool]:
    """(text channel id, thread id, nsfw) of where something happened."""
    if isinstance(channel, discord.Thread):
        return channel.parent_id, channel.id, channel.is_nsfw()
    nsfw = channel.is_nsfw() if hasattr(channel, "is_nsfw") else False
    return getattr(channel, "id", None), None, bool(nsfw)


def actor_from_interaction(interaction: discord.Interaction) -> Actor:
    channel_id, thread_id, nsfw = _channel_ids(interaction.channel)
    perms = interaction.permissions
    return Actor(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=channel_id,
        thread_id=thread_id,
        is_admin=bool(perms and perms.manage_guild),
        nsfw=nsfw,
    )


def actor_from_message(message: discord.Message) -> Actor:
    channel_id, thread_id, nsfw = _channel_ids(message.channel)
    author = message.author
    admin = isinstance(author, discord.Member) and author.guild_permissions.manage_guild
    return Actor(
        user_id=author.id,
        guild_id=message.guild.id if message.guild else None,
        channel_id=channel_id,
        thread_id=thread_id,
        is_admin=bool(admin),
        nsfw=nsfw,
    )


def missing_permissions(perms: discord.Permissions, needed: dict[str, str] = SCENE_PERMISSIONS) -> list[str]:
    return [label for attr, label in needed.items() if not getattr(perms, attr)]


def permission_message(missing: list[str], where: str = "this channel") -> str:
    if not missing:
        # Discord refused although every permission we check is granted: a channel override, a
        # thread the bot was never added to, or the bot left the server's view of it.
        return (
            f"I can't work in {where}: Discord refused me access there. A server admin should check "
            "that I can see this channel and its threads."
        )
    names = ", ".join(f"**{name}**" for name in missing)
    return f"I can't work in {where} yet: a server admin needs to give me {names} here."


_MENTION = re.compile(r"<@!?(\d+)>")


def strip_mention(text: str, bot_id: int) -> str:
    return _MENTION.sub(lambda m: "" if int(m[1]) == bot_id else m[0], text).strip()


async def reply(interaction: discord.Interaction, text: str, *, ephemeral: bool = True) -> None:
    """Answer an interaction whether or not it was answered (or deferred) already; the answer
    pings nobody (it may show words the bot did not write)."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral, allowed_mentions=NO_PINGS)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral, allowed_mentions=NO_PINGS)


async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """The tree's error handler: a short reply, details to the log."""
    original = getattr(error, "original", error)
    if isinstance(original, LmdError):
        log.info("command %s: %s", interaction.command and interaction.command.name, original)
        text = original.user_message
    elif isinstance(original, discord.Forbidden):
        text = (
            permission_message(missing_permissions(interaction.app_permissions))
            if interaction.guild
            else ("I'm not allowed to do that here.")
        )
    elif isinstance(error, app_commands.CheckFailure):
        text = "You can't use that command here."
    else:
        log.error("command %s failed", interaction.command and interaction.command.name, exc_info=original)
        text = GENERIC_ERROR
    await reply(interaction, text)


# A scene's thread a moderator locked (or deleted): nothing can be posted there.
THREAD_CLOSED = "This scene's thread is locked or gone, so I can't post there any more."


async def item_error(interaction: discord.Interaction, error: Exception) -> None:
    """Buttons and modals: the same policy as commands."""
    if isinstance(error, LmdError):
        log.info("component: %s", error)
        await reply(interaction, error.user_message)
    elif isinstance(error, DestinationGoneError):
        log.info("component in a closed thread: %s", error)
        await reply(interaction, THREAD_CLOSED)
    elif isinstance(error, discord.Forbidden):
        await reply(interaction, permission_message(missing_permissions(interaction.app_permissions)))
    else:
        log.error("component failed", exc_info=error)
        await reply(interaction, GENERIC_ERROR)


async def reply_to_message(message: discord.Message, content: str | None = None, **fields) -> discord.Message:
    """A reply to a user's message, pinging nobody unless ``allowed_mentions`` says otherwise. If
    the user deleted their message meanwhile (Discord refuses a reply to a deleted message), a
    plain message in its channel: the answer is still seen."""
    fields.setdefault("allowed_mentions", NO_PINGS)
    reference = message.to_reference(fail_if_not_exists=False)
    return await message.channel.send(content, reference=reference, mention_author=False, **fields)


async def message_error(message: discord.Message, error: Exception) -> None:
    """Messages to the bot (instructions, layout files): the same policy as commands and buttons,
    answered in a reply; the unexpected ones logged with their traceback."""
    if isinstance(error, LmdError):
        log.info("instruction refused: %s", error)
        text = error.user_message
    elif isinstance(error, DestinationGoneError):
        log.info("instruction in a closed thread: %s", error)
        return  # the thread is locked or gone: there is nowhere to answer
    elif isinstance(error, discord.Forbidden) and message.guild is not None:
        text = permission_message(missing_permissions(message.channel.permissions_for(message.guild.me)))
    else:
        log.error("instruction in %s failed", message.channel.id, exc_info=error)
        text = GENERIC_ERROR
    try:
        await reply_to_message(message, text)
    except discord.HTTPException:
        log.warning("cannot answer a message in %s", message.channel.id, exc_info=True)
