"""How a use case's answers reach the person who asked in Discord: the service's
:class:`~lmd_bot.services.notifier.Presenter`, one per request."""

from __future__ import annotations

import discord

from cogs._common import NO_PINGS, missing_permissions, permission_message, reply, reply_to_message
from cogs._format import as_written, cut, file, plan_embed, reply_content, thread_name
from cogs._notifier import reopening, result_message
from cogs._views import buttons_for, result_buttons
from lmd_bot.errors import LmdError
from lmd_bot.services import PlanShown, PlanView, ReplyView, UndoView

MAX_ACTIVE_THREADS = 160006  # Discord's error code: the server's active threads are at the maximum


class NoThreadError(LmdError):
    """Discord would not open the scene's thread from its plan: no scene without one."""

    def __init__(self, exc: discord.HTTPException, permissions: discord.Permissions) -> None:
        if isinstance(exc, discord.Forbidden):
            said = permission_message(missing_permissions(permissions))
        elif exc.code == MAX_ACTIVE_THREADS:
            said = (
                "This server has as many open threads as Discord allows, so I can't open one for "
                "this scene. Archive a few threads, then try again."
            )
        else:
            said = "Discord wouldn't let me open a thread for this scene just now; try again in a moment."
        super().__init__(f"thread refused: {exc}", user_message=said)


class CommandPresenter:
    """``/imagine``: the deferred reply becomes the plan, and the scene's thread opens from it."""

    def __init__(self, interaction: discord.Interaction, *, archive_minutes: int) -> None:
        self.interaction = interaction
        self.archive_minutes = archive_minutes
        self.thread: discord.Thread | None = None

    async def show_plan(self, view: PlanView) -> PlanShown:
        message = await self.interaction.edit_original_response(
            content=f"**{cut(as_written(view.scene.prompt), 1800)}**",
            embed=plan_embed(view),
            allowed_mentions=NO_PINGS,  # the prompt echoed: "<@id>" in it pings nobody
        )
        try:
            self.thread = await message.create_thread(
                name=thread_name(view.scene.prompt), auto_archive_duration=self.archive_minutes
            )
        except discord.HTTPException as exc:  # the command's answer says why, in place of the plan
            raise NoThreadError(exc, self.interaction.app_permissions) from exc
        return PlanShown(message_id=message.id, thread_id=self.thread.id)

    async def show_plan_picture(self, view: PlanView, shown: PlanShown) -> None:
        await self.interaction.edit_original_response(
            embed=plan_embed(view),
            attachments=[file(view.overlay_png, "plan.png")],
            allowed_mentions=NO_PINGS,  # the prompt shown above: still pinging nobody
        )

    async def show_reply(self, view: ReplyView) -> None:
        said = reply_content(view)
        if self.thread is not None:  # the plan is shown: the reply goes under it, in the thread
            await self.thread.send(said, allowed_mentions=NO_PINGS)
        else:
            await self.interaction.edit_original_response(content=said, allowed_mentions=NO_PINGS)

    async def show_undo(self, view: UndoView) -> int | None:
        return await show_undo(self.interaction.channel, view)


class ThreadPresenter:
    """In a scene's thread: a reply to the user's message, or (a button, the Edit box) a new
    message with private answers to the interaction. A button or a box may come from a thread
    Discord archived meanwhile (after a day without messages): it is reopened to answer there."""

    def __init__(
        self,
        channel,
        *,
        reply_to: discord.Message | None = None,
        interaction: discord.Interaction | None = None,
    ) -> None:
        self.channel = channel
        self.reply_to = reply_to
        self.interaction = interaction

    async def show_plan(self, view: PlanView) -> PlanShown:
        if self.reply_to is not None:  # a plain message if the user deleted theirs meanwhile
            message = await reopening(
                self.channel, lambda: reply_to_message(self.reply_to, embed=plan_embed(view))
            )
        else:
            message = await reopening(self.channel, lambda: self.channel.send(embed=plan_embed(view)))
        return PlanShown(message_id=message.id)

    async def show_plan_picture(self, view: PlanView, shown: PlanShown) -> None:
        picture = file(view.overlay_png, "plan.png")
        await reopening(
            self.channel,
            lambda: self.channel.get_partial_message(shown.message_id).edit(
                embed=plan_embed(view), attachments=[picture]
            ),
            [picture],
        )

    async def show_reply(self, view: ReplyView) -> None:
        said = reply_content(view)
        if self.reply_to is not None:
            await reopening(
                self.channel,
                lambda: reply_to_message(self.reply_to, said),  # pinging nobody
            )
        elif self.interaction is not None:
            await reply(self.interaction, said)  # pinging nobody

    async def show_undo(self, view: UndoView) -> int | None:
        return await show_undo(self.channel, view)


async def show_undo(channel, view: UndoView) -> int:
    """The round an undo went back to: its result shown again, or its plan if never rendered
    (in the scene's thread, reopened if Discord archived it)."""
    title = f"Back to round {view.round.number}"
    if view.result is not None:
        embeds, files = await result_message(view.result, getattr(channel.guild, "filesize_limit", None))
        fields = {"content": title, "embeds": embeds, "view": buttons_for(view.result)}
    else:
        files = [file(view.overlay_png, "plan.png")]
        fields = {
            "content": f"{title} (not rendered yet: press Reroll to render it).",
            "embed": plan_embed(view, title=f"Plan · round {view.round.number}"),
            "view": result_buttons(view.round.id),
        }
    message = await reopening(channel, lambda: channel.send(**fields, files=files), files)
    return message.id
