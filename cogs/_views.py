"""Buttons that survive restarts: each is a ``DynamicItem`` whose custom id carries the round or
job it acts on (``lmd:<action>:<id>``); the database holds the rest. And the Edit modal."""

from __future__ import annotations

import re

import discord
from discord import ui

from cogs._common import actor_from_interaction, item_error, reply, scenes_of
from lmd_bot.services import PlanView, ReplyView, UndoView

LAYOUT_CHARS = 1900  # what fits a message with its code fence


class _RoundButton(ui.DynamicItem[ui.Button], template=r"lmd:_:(?P<id>\d+)"):
    """Base of the buttons (never registered itself); subclasses set the template, label and action."""

    action = ""
    label = ""
    emoji = ""

    def __init__(self, target_id: int) -> None:
        self.target_id = target_id
        super().__init__(
            ui.Button(
                label=self.label,
                emoji=self.emoji,
                style=discord.ButtonStyle.secondary,
                custom_id=f"lmd:{self.action}:{target_id}",
            )
        )

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: re.Match[str], /):
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self.act(interaction)
        except Exception as exc:  # every failure gets a reply; item_error logs the unexpected ones
            await item_error(interaction, exc)

    async def act(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError


class RerollButton(_RoundButton, template=r"lmd:reroll:(?P<id>\d+)"):
    action, label, emoji = "reroll", "Reroll", "🔄"

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await scenes_of(interaction).reroll(actor_from_interaction(interaction), self.target_id)
        await reply(interaction, f"Rerolling with seed `{job.seed}`; the status is in the thread.")


class UndoButton(_RoundButton, template=r"lmd:undo:(?P<id>\d+)"):
    action, label, emoji = "undo", "Undo", "↩️"

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        scenes = scenes_of(interaction)
        round_ = await scenes.round_record(self.target_id)
        outcome = await scenes.undo(
            actor_from_interaction(interaction), round_.scene_id, from_round_id=round_.id
        )
        await present(interaction.client, interaction.channel, actor_from_interaction(interaction), outcome)
        await reply(interaction, f"Back to round {outcome.round.number}.")


class EditButton(_RoundButton, template=r"lmd:edit:(?P<id>\d+)"):
    action, label, emoji = "edit", "Edit", "✏️"

    async def act(self, interaction: discord.Interaction) -> None:
        scenes = scenes_of(interaction)
        round_ = await scenes.round_record(self.target_id)
        scene = await scenes.repo.scene(round_.scene_id)
        if not await scenes.may_edit(actor_from_interaction(interaction), scene):
            from lmd_bot.services.errors import NotOwnerError

            raise NotOwnerError("not an editor")
        await interaction.response.send_modal(EditModal(round_.id, round_.number))


class LayoutButton(_RoundButton, template=r"lmd:layout:(?P<id>\d+)"):
    action, label, emoji = "layout", "Layout", "🗺️"

    async def act(self, interaction: discord.Interaction) -> None:
        text = await scenes_of(interaction).layout_json(self.target_id)
        if len(text) <= LAYOUT_CHARS:
            await interaction.response.send_message(f"```json\n{text}\n```", ephemeral=True)
        else:
            from cogs._format import file

            await interaction.response.send_message(
                "The layout as JSON:", file=file(text.encode(), "layout.json"), ephemeral=True
            )


class CancelButton(_RoundButton, template=r"lmd:cancel:(?P<id>\d+)"):
    action, label, emoji = "cancel", "Cancel", "❌"

    async def act(self, interaction: discord.Interaction) -> None:
        said = await scenes_of(interaction).cancel(actor_from_interaction(interaction), self.target_id)
        await interaction.response.send_message(said, ephemeral=True)


class RetryButton(_RoundButton, template=r"lmd:retry:(?P<id>\d+)"):
    action, label, emoji = "retry", "Retry", "🔁"

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await scenes_of(interaction).retry(actor_from_interaction(interaction), self.target_id)
        await reply(interaction, f"Queued again (seed `{job.seed}`).")


DYNAMIC_ITEMS = (RerollButton, UndoButton, EditButton, LayoutButton, CancelButton, RetryButton)


def result_buttons(round_id: int) -> ui.View:
    view = ui.View(timeout=None)
    for cls in (RerollButton, UndoButton, EditButton, LayoutButton):
        view.add_item(cls(round_id))
    return view


def status_buttons(job_id: int) -> ui.View:
    return ui.View(timeout=None).add_item(CancelButton(job_id))


def failure_buttons(job_id: int, round_id: int, retryable: bool) -> ui.View:
    view = ui.View(timeout=None)
    if retryable:
        view.add_item(RetryButton(job_id))
    view.add_item(EditButton(round_id))
    view.add_item(LayoutButton(round_id))
    return view


class EditModal(ui.Modal):
    """ "Describe the change": the instruction goes to the planner, branching from the round."""

    def __init__(self, round_id: int, round_number: int) -> None:
        super().__init__(title=f"Edit round {round_number}", timeout=None)
        self.round_id = round_id
        self.instruction = ui.TextInput(
            label="What should change?",
            style=discord.TextStyle.paragraph,
            placeholder="move the cup to the right and make the apples green",
            max_length=1500,
        )
        self.add_item(self.instruction)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        scenes = scenes_of(interaction)
        actor = actor_from_interaction(interaction)
        round_ = await scenes.round_record(self.round_id)
        outcome = await scenes.instruct(
            actor, round_.scene_id, self.instruction.value, base_round_id=round_.id
        )
        await present(interaction.client, interaction.channel, actor, outcome)
        await reply(
            interaction, "Done: see the thread." if not isinstance(outcome, ReplyView) else outcome.text
        )

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await item_error(interaction, error)


async def present(client, channel, actor, outcome, *, reply_to: discord.Message | None = None) -> None:
    """Show a planner outcome in the scene's thread: a revised plan (then queue its render), a
    reply, or the round an undo went back to."""
    from cogs._format import file, plan_embed, result_embeds

    scenes = client.scenes
    if isinstance(outcome, ReplyView):
        if reply_to is not None:
            await reply_to.reply(outcome.text, mention_author=False)
        return
    if isinstance(outcome, PlanView):
        kwargs = {"embed": plan_embed(outcome), "file": file(outcome.overlay_png, "plan.png")}
        message = await (
            reply_to.reply(mention_author=False, **kwargs) if reply_to else channel.send(**kwargs)
        )
        await scenes.start_render(actor, outcome.round.id, plan_message_id=message.id)
        return
    if isinstance(outcome, UndoView):
        from lmd_bot.scenes.models import MessageKind

        title = f"Back to round {outcome.round.number}"
        if outcome.result is not None:
            from cogs._notifier import result_files

            files = await result_files(outcome.result, getattr(channel.guild, "filesize_limit", None))
            message = await channel.send(
                content=title,
                embeds=result_embeds(outcome.result),
                files=files,
                view=result_buttons(outcome.round.id),
            )
            await scenes.note_shown(message.id, outcome.round, outcome.result.job.id, MessageKind.RESULT)
        else:
            message = await channel.send(
                content=f"{title} (not rendered yet: press Reroll to render it).",
                embed=plan_embed(outcome, title=f"Plan · round {outcome.round.number}"),
                file=file(outcome.overlay_png, "plan.png"),
                view=result_buttons(outcome.round.id),
            )
            await scenes.note_shown(message.id, outcome.round, None, MessageKind.PLAN)
