"""Scenes: ``/imagine``, instructions in scene threads, 🔄 reactions, ``/share``, and thread
deletion or archiving. Everything else is the service layer's."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from cogs._common import (
    NO_PINGS,
    THREAD_CLOSED,
    actor_from_interaction,
    actor_from_message,
    in_flight_of,
    message_error,
    missing_permissions,
    permission_message,
    reply,
    reply_to_message,
    strip_mention,
)
from cogs._format import HELP_TEXT, NO_SCENE_HERE
from cogs._notifier import reopening
from cogs._presenters import CommandPresenter, ThreadPresenter
from cogs._views import submit_form
from lmd_bot.errors import LmdError
from lmd_bot.layout.canvas import Aspect
from lmd_bot.rendering import MAX_CANDIDATES, RenderMode
from lmd_bot.scenes.models import SceneRecord
from lmd_bot.services import Actor, AttachedFile, DestinationGoneError, SceneService

log = logging.getLogger(__name__)

REROLL_EMOJI = "🔄"
SEEN_EMOJI = "👀"
LAYOUT_FILE_SUFFIXES = (".json", ".txt", ".lmd")
MODES = [
    app_commands.Choice(name="lmd+ (best: LMD on GLIGEN)", value=RenderMode.LMD_PLUS.value),
    app_commands.Choice(name="lmd (LMD on Stable Diffusion)", value=RenderMode.LMD.value),
    app_commands.Choice(name="fast (one guided pass, drafts)", value=RenderMode.FAST.value),
    app_commands.Choice(name="sd (plain Stable Diffusion, no layout)", value=RenderMode.SD.value),
]
ASPECTS = [
    app_commands.Choice(name=f"{aspect.value} {label}", value=aspect.value)
    for aspect, label in (
        (Aspect.SQUARE, "square"),
        (Aspect.LANDSCAPE, "landscape"),
        (Aspect.PORTRAIT, "portrait"),
        (Aspect.WIDE, "wide"),
        (Aspect.TALL, "tall"),
        (Aspect.PHOTO, "photo"),
        (Aspect.PHOTO_PORTRAIT, "photo, portrait"),
    )
]


def no_thread_here(channel: object) -> str | None:
    """Why a scene cannot start in ``channel`` (each scene lives in a thread opened from its plan,
    which only text and announcement channels allow), or None when it can."""
    if isinstance(channel, discord.TextChannel):  # announcement channels included
        return None
    if isinstance(channel, discord.Thread):
        return (
            "Use `/imagine` in a text channel: I open a thread for each scene. "
            "In here, tell me what to change."
        )
    if isinstance(channel, discord.VoiceChannel | discord.StageChannel):
        where = "a voice channel's chat"
    elif isinstance(channel, discord.ForumChannel):
        where = "a forum"
    elif isinstance(channel, discord.DMChannel | discord.GroupChannel) or channel is None:
        return "I draw in servers: use `/imagine` in a text channel of a server I'm in."
    else:
        where = "this kind of channel"
    return f"I can't open a thread in {where}: use `/imagine` in a text channel."


def layout_attachment(message: discord.Message) -> discord.Attachment | None:
    """A layout file attached to a message (``.json``, or LMD text in ``.txt``/``.lmd``)."""
    for attachment in message.attachments:
        if attachment.filename.lower().endswith(LAYOUT_FILE_SUFFIXES):
            return attachment
    return None


class ImagineCog(commands.Cog):
    def __init__(
        self, bot: commands.Bot, scenes: SceneService, *, archive_minutes: int, content_intent: bool
    ):
        self.bot = bot
        self.scenes = scenes
        self.archive_minutes = archive_minutes
        self.content_intent = content_intent

    # --- /imagine ------------------------------------------------------------------------------

    @app_commands.command(name="imagine", description="Plan a scene with an LLM, then draw it")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="what to draw: objects, where they are, style",
        mode="how to draw it (default: the server's)",
        seed="a number that fixes the randomness (default: random)",
        steps="denoising steps (default: the server's)",
        aspect="the picture's shape (default: square)",
        candidates="draw 2 to 4 seeds in one grid and pick one (default: the server's)",
    )
    @app_commands.choices(mode=MODES, aspect=ASPECTS)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1500],
        mode: app_commands.Choice[str] | None = None,
        seed: app_commands.Range[int, 0, 2**32 - 1] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        candidates: app_commands.Range[int, 1, MAX_CANDIDATES] | None = None,
    ) -> None:
        refusal = no_thread_here(interaction.channel)
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        missing = missing_permissions(interaction.app_permissions)
        if missing:
            await interaction.response.send_message(permission_message(missing), ephemeral=True)
            return
        actor = actor_from_interaction(interaction)
        await self.scenes.check_imagine(actor, prompt)  # refusals are ephemeral: nothing is public yet
        async with in_flight_of(interaction).answering():
            await interaction.response.defer(thinking=True)
            presenter = CommandPresenter(interaction, archive_minutes=self.archive_minutes)
            try:
                await self.scenes.imagine(
                    actor,
                    prompt,
                    presenter,
                    mode=RenderMode(mode.value) if mode else None,
                    seed=seed,
                    steps=steps,
                    aspect=Aspect(aspect.value) if aspect else None,
                    candidates=candidates,
                )
            except LmdError as exc:  # refused before the plan was shown: the "thinking" reply says why
                log.info("imagine refused: %s", exc)
                # ... in place of the plan, if it was shown but could not open its thread
                await interaction.edit_original_response(content=exc.user_message, embed=None, attachments=[])

    # --- instructions in a scene thread ---------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        if message.guild is None:  # a direct message is always for the bot: say where it draws
            await reply_to_message(message, no_thread_here(message.channel))
            return
        me = self.bot.user
        mentioned = me is not None and me in message.mentions
        text = strip_mention(message.content, me.id if me else 0) if mentioned or self.content_intent else ""
        layout_file = layout_attachment(message) if mentioned or self.content_intent else None
        if mentioned and not text and layout_file is None:  # "@lmd-bot" alone: explain the bot
            await reply_to_message(message, HELP_TEXT)
            return
        if not (text or layout_file):
            return
        try:
            addressed = await self._editor_in_scene(message, mentioned=mentioned)
        except Exception as exc:
            if mentioned:  # for the bot: it answers; message_error logs the unexpected ones
                await message_error(message, exc)
            else:  # maybe chat in some thread, not for the bot: the operator hears of it, not the people
                log.error("reading a message in %s failed", message.channel.id, exc_info=exc)
            return
        if addressed is None:
            return
        scene, actor = addressed
        try:
            async with self.bot.in_flight.answering(), message.channel.typing():  # type: ignore[attr-defined]
                await self._react(message, SEEN_EMOJI)
                presenter = ThreadPresenter(message.channel, reply_to=message)
                if layout_file is not None:  # a layout file wins over the words beside it
                    attached = AttachedFile(
                        name=layout_file.filename, size=layout_file.size, read=_downloader(layout_file)
                    )
                    await self.scenes.edit_layout_file(actor, scene.id, attached, presenter)
                else:
                    await self.scenes.instruct(actor, scene.id, text, presenter)
        except Exception as exc:  # every failure gets an answer; message_error logs the unexpected ones
            await message_error(message, exc)

    async def _editor_in_scene(
        self, message: discord.Message, *, mentioned: bool
    ) -> tuple[SceneRecord, Actor] | None:
        """The scene and the editor, when ``message`` is an editor's in a scene's thread (then it
        is for the bot); None otherwise, once those who addressed the bot were told why not."""
        in_thread = isinstance(message.channel, discord.Thread)
        scene = await self.scenes.scene_for_thread(message.channel.id) if in_thread else None
        if scene is None:
            if mentioned:  # addressed where no scene is: say how one starts
                await reply_to_message(message, NO_SCENE_HERE)
            return None
        actor = actor_from_message(message)
        if not await self.scenes.may_edit(actor, scene):
            if mentioned:
                await reply_to_message(
                    message,
                    f"Only <@{scene.owner_id}> edits this scene (they can `/share` it).",
                    silent=True,
                    delete_after=20,
                )
            return None  # unless addressed, people chatting in the thread: not for the bot
        return scene, actor

    @staticmethod
    async def _react(message: discord.Message, emoji: str) -> None:
        try:
            await message.add_reaction(emoji)
        except discord.HTTPException:
            log.info("cannot react in %s", message.channel.id)

    # --- ✏️ Edit and 📝 Edit-layout boxes, however long they stayed open ------------------------

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            await submit_form(interaction)

    # --- 🔄 on any result, even old ones, even after a restart ----------------------------------

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        me = self.bot.user
        if payload.guild_id is None or (me is not None and payload.user_id == me.id):
            return
        if str(payload.emoji) != REROLL_EMOJI:
            return
        member = payload.member
        actor = Actor(
            user_id=payload.user_id,
            guild_id=payload.guild_id,
            channel_id=payload.channel_id,
            thread_id=payload.channel_id,
            is_admin=bool(member and member.guild_permissions.manage_guild),
        )
        try:
            scene = await self.scenes.scene_of_message(payload.message_id)
            if scene is None:
                return  # not a message of a scene
            if scene.thread_id != payload.channel_id and await self._gone(scene.thread_id):
                # The plan, left in the channel: its scene's results would go nowhere.
                raise LmdError(f"scene {scene.id}: thread gone", user_message=THREAD_CLOSED)
            job = await self.scenes.reroll_message(actor, payload.message_id)
        except LmdError as exc:
            channel = await self._channel(payload.channel_id)
            said = f"<@{payload.user_id}> {exc.user_message}"
            try:  # in the thread, reopened if archived (as the notifier's posts are)
                await reopening(
                    channel,
                    lambda: channel.send(
                        said,
                        allowed_mentions=discord.AllowedMentions(users=True),
                        silent=True,
                        delete_after=20,
                    ),
                )
            except (discord.HTTPException, DestinationGoneError):
                log.info("cannot say why a 🔄 was refused in %s", payload.channel_id)
        else:
            if job is None:
                return  # not a message of a scene
            channel = await self._channel(payload.channel_id)
        # Take the user's reaction away so the same 🔄 can be used again.
        try:
            await channel.get_partial_message(payload.message_id).remove_reaction(
                payload.emoji, discord.Object(payload.user_id)
            )
        except discord.HTTPException:
            log.info("cannot remove reactions in %s (Manage Messages)", payload.channel_id)

    async def _channel(self, channel_id: int):
        return self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)

    async def _gone(self, thread_id: int | None) -> bool:
        """Whether a scene's thread was deleted, locked by a moderator, or lost to the bot."""
        try:
            thread = await self._channel(thread_id) if thread_id is not None else None
        except (discord.NotFound, discord.Forbidden):
            return True
        return thread is None or bool(getattr(thread, "locked", False))

    # --- /share ---------------------------------------------------------------------------------

    @app_commands.command(
        name="share", description="Let everyone in this scene's thread edit it (or only you)"
    )
    @app_commands.guild_only()
    @app_commands.describe(everyone="true: anyone may edit; false: only you")
    async def share(self, interaction: discord.Interaction, everyone: bool = True) -> None:
        # Acknowledged privately before any database work (Discord's 3 seconds); a refusal stays
        # private, the change is announced in the thread.
        await interaction.response.defer(ephemeral=True, thinking=True)
        scene = await self.scenes.scene_for_thread(interaction.channel_id or 0)
        if scene is None or interaction.channel is None:
            await reply(interaction, "Use `/share` inside a scene's thread.")
            return
        await self.scenes.share(actor_from_interaction(interaction), scene.id, everyone)
        who = "Everyone here can now edit this scene" if everyone else "Only its owner can edit it now"
        thread = interaction.channel
        announcement = f"{who} (`/share` by <@{interaction.user.id}>)."
        await reopening(thread, lambda: thread.send(announcement, allowed_mentions=NO_PINGS))
        await reply(interaction, "Done.")

    # --- the thread goes away -------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self.scenes.scene_closed(payload.thread_id)

    @commands.Cog.listener()
    async def on_raw_thread_update(self, payload: discord.RawThreadUpdateEvent) -> None:
        # Locked: closed by a moderator, and the bot may not reopen it. A thread that is only
        # archived (after inactivity, or by its owner) is reopened when a result arrives.
        meta = payload.data.get("thread_metadata", {})
        if meta.get("archived") and meta.get("locked"):
            await self.scenes.scene_closed(payload.thread_id)


async def setup(bot: commands.Bot) -> None:
    settings = bot.scenes.settings  # type: ignore[attr-defined]
    await bot.add_cog(
        ImagineCog(
            bot,
            bot.scenes,  # type: ignore[attr-defined]
            archive_minutes=settings.discord.thread_auto_archive_minutes,
            content_intent=settings.discord.message_content_intent,
        )
    )


def _downloader(attachment: discord.Attachment):
    """``attachment.read``, with Discord's file servers failing said as such: the user can post
    the file again (it was "Something went wrong on my side")."""

    async def read() -> bytes:
        try:
            return await attachment.read()
        except discord.HTTPException as exc:
            log.warning("downloading the attachment %s failed: %s", attachment.id, exc)
            again = "I couldn't download that file from Discord just now; post it again in a moment."
            raise LmdError(f"attachment download failed: {exc}", user_message=again) from exc

    return read
