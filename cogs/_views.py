"""Buttons that survive restarts: each is a ``DynamicItem`` whose custom id carries the round or
job it acts on (``lmd:<action>:<id>``); the database holds the rest. And the Edit and Edit-layout
boxes (modals), whose submits are answered from their custom ids in the same way."""

from __future__ import annotations

import re

import discord
from discord import ui

from cogs._common import (
    actor_from_interaction,
    candidates_of,
    in_flight_of,
    item_error,
    refines_of,
    reply,
    scenes_of,
)
from lmd_bot.errors import LmdError
from lmd_bot.planner.manual import EDIT_BOX_CHARS
from lmd_bot.services import PlanView, ResultView, UndoView

LAYOUT_CHARS = 2000  # a message, the code fence included


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
        from cogs._presenters import ThreadPresenter

        await interaction.response.defer(ephemeral=True, thinking=True)
        scenes = scenes_of(interaction)
        round_ = await scenes.round_record(self.target_id)
        presenter = ThreadPresenter(interaction.channel, interaction=interaction)
        outcome = await scenes.undo(
            actor_from_interaction(interaction), round_.scene_id, presenter, from_round_id=round_.id
        )
        await reply(interaction, f"Back to round {outcome.round.number}.")


class EditButton(_RoundButton, template=r"lmd:edit:(?P<id>\d+)"):
    action, label, emoji = "edit", "Edit", "✏️"

    async def act(self, interaction: discord.Interaction) -> None:
        round_ = await scenes_of(interaction).check_editor(
            actor_from_interaction(interaction), self.target_id
        )
        await interaction.response.send_modal(EditModal(round_.id, round_.number))


class LayoutButton(_RoundButton, template=r"lmd:layout:(?P<id>\d+)"):
    action, label, emoji = "layout", "Layout", "🗺️"

    async def act(self, interaction: discord.Interaction) -> None:
        shown = await scenes_of(interaction).layout_view(actor_from_interaction(interaction), self.target_id)
        extra = (
            {"view": ui.View(timeout=None).add_item(EditLayoutButton(shown.round_id))}
            if shown.editable
            else {}
        )
        from cogs._format import code_block, file

        block = code_block(shown.json_text, "json", LAYOUT_CHARS)
        if block is not None:
            await interaction.response.send_message(block, ephemeral=True, **extra)
        else:  # too long for a message, or its captions would break out of a code block
            await interaction.response.send_message(
                "The layout as JSON:",
                file=file(shown.json_text.encode(), "layout.json"),
                ephemeral=True,
                **extra,
            )


class EditLayoutButton(_RoundButton, template=r"lmd:editlayout:(?P<id>\d+)"):
    """Under the 🗺️ Layout message, for editors: the layout in a box to change directly."""

    action, label, emoji = "editlayout", "Edit layout", "📝"

    async def act(self, interaction: discord.Interaction) -> None:
        scenes = scenes_of(interaction)
        shown = await scenes.layout_view(actor_from_interaction(interaction), self.target_id)
        if not shown.editable:
            await scenes.check_editor(actor_from_interaction(interaction), self.target_id)  # says why
        if shown.edit_text is None:
            await reply(
                interaction,
                f"This layout is too long for the edit box (it holds {EDIT_BOX_CHARS:,} characters): "
                "save the file 🗺️ Layout gives, edit it, and post it in the thread.",
            )
            return
        await interaction.response.send_modal(
            EditLayoutModal(shown.round_id, shown.round_number, shown.edit_text)
        )


class RefineButton(_RoundButton, template=r"lmd:refine:(?P<id>\d+)"):
    """On a result whose server refines on request: SDXL-refine that job's image (the id is the
    job's). A second press queues nothing."""

    action, label, emoji = "refine", "Refine", "✨"

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job, queued = await refines_of(interaction).refine(
            actor_from_interaction(interaction), self.target_id
        )
        if queued:
            said = "Refining this image; the refined one will be posted in the thread."
        elif job.status.active:
            said = "This image is being refined already; the refined one will be posted in the thread."
        else:
            said = "This image was refined already: the refined one is in the thread."
        await reply(interaction, said)


class CancelButton(_RoundButton, template=r"lmd:cancel:(?P<id>\d+)"):
    action, label, emoji = "cancel", "Cancel", "❌"

    async def act(self, interaction: discord.Interaction) -> None:
        # Acknowledged first: the cancel writes to the database (and may wait on it), and Discord
        # gives an interaction 3 seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        said = await scenes_of(interaction).cancel(actor_from_interaction(interaction), self.target_id)
        await reply(interaction, said)


class PickButton(ui.DynamicItem[ui.Button], template=r"lmd:pick:(?P<job>\d+):(?P<number>\d+)"):
    """Under a grid of candidates: continue the scene from candidate ``number`` of job ``job``."""

    def __init__(self, job_id: int, number: int) -> None:
        self.job_id, self.number = job_id, number
        super().__init__(
            ui.Button(
                label=f"Pick {number}",
                style=discord.ButtonStyle.primary,
                custom_id=f"lmd:pick:{job_id}:{number}",
                row=1,
            )
        )

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            picked = await candidates_of(interaction).pick(
                actor_from_interaction(interaction), self.job_id, self.number
            )
            await reply(
                interaction,
                f"Candidate {self.number} it is: round {picked.round.number}, seed `{picked.job.seed}`. "
                "Tell me what to change next.",
            )
        except Exception as exc:  # every failure gets a reply; item_error logs the unexpected ones
            await item_error(interaction, exc)


class RetryButton(_RoundButton, template=r"lmd:retry:(?P<id>\d+)"):
    action, label, emoji = "retry", "Retry", "🔁"

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job, queued = await scenes_of(interaction).retry(actor_from_interaction(interaction), self.target_id)
        if queued:
            said = f"Queued again (seed `{job.seed}`)."
        elif job.status.active:
            said = f"This is queued again already (seed `{job.seed}`); the status is in the thread."
        else:
            said = "This was rendered again already: the result is in the thread."
        await reply(interaction, said)


DYNAMIC_ITEMS = (
    RerollButton,
    UndoButton,
    EditButton,
    LayoutButton,
    EditLayoutButton,
    RefineButton,
    CancelButton,
    RetryButton,
    PickButton,
)


def result_buttons(
    round_id: int, refine_job_id: int | None = None, *, grid: tuple[int, int] | None = None
) -> ui.View:
    """A result's buttons; ``refine_job_id``: offer ✨ Refine for that job's image; ``grid``: (job
    id, candidates) of a grid, which adds Pick 1, 2, …"""
    view = ui.View(timeout=None)
    for cls in (RerollButton, UndoButton, EditButton, LayoutButton):
        view.add_item(cls(round_id))
    if refine_job_id is not None:
        view.add_item(RefineButton(refine_job_id))
    if grid is not None:
        job_id, count = grid
        for number in range(1, count + 1):
            view.add_item(PickButton(job_id, number))
    return view


def buttons_for(result: ResultView) -> ui.View:
    """The buttons under a result: a grid's carry the picks (and no ✨ Refine: a picked candidate
    is refined on its own)."""
    if result.round.candidates > 1:
        return result_buttons(result.round.id, grid=(result.job.id, result.round.candidates))
    return result_buttons(result.round.id, result.job.id if result.refinable else None)


def status_buttons(job_id: int) -> ui.View:
    return ui.View(timeout=None).add_item(CancelButton(job_id))


def failure_buttons(job_id: int, round_id: int, retryable: bool, refine_of: int | None = None) -> ui.View:
    """A failed job's buttons; a failed ✨ refinement is tried again with ✨ on its image."""
    view = ui.View(timeout=None)
    if retryable:
        view.add_item(RetryButton(job_id) if refine_of is None else RefineButton(refine_of))
    view.add_item(EditButton(round_id))
    view.add_item(LayoutButton(round_id))
    return view


class EditModal(ui.Modal):
    """ "Describe the change": the instruction goes to the planner, branching from the round."""

    def __init__(self, round_id: int, round_number: int) -> None:
        super().__init__(title=f"Edit round {round_number}", custom_id=f"lmd:instruct:{round_id}")
        self.round_id = round_id
        self.instruction = ui.TextInput(
            label="What should change?",
            style=discord.TextStyle.paragraph,
            placeholder="move the cup to the right and make the apples green",
            max_length=1500,
            custom_id="instruction",
        )
        self.add_item(self.instruction)
        _unstored(self)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await submit_instruction(interaction, self.round_id, self.instruction.value)


class EditLayoutModal(ui.Modal):
    """The layout itself, as JSON or LMD text: read like a planner answer, no planner call."""

    def __init__(self, round_id: int, round_number: int, text: str) -> None:
        super().__init__(
            title=f"Edit the layout of round {round_number}", custom_id=f"lmd:layoutform:{round_id}"
        )
        self.round_id = round_id
        self.layout = ui.TextInput(
            label="Layout (JSON or LMD text; boxes x, y, w, h)",
            style=discord.TextStyle.paragraph,
            default=text,
            max_length=EDIT_BOX_CHARS,
            custom_id="layout",
        )
        self.add_item(self.layout)
        _unstored(self)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await submit_layout(interaction, self.round_id, self.layout.value)


def _unstored(modal: ui.Modal) -> None:
    """Keep ``modal`` out of discord.py's store: its submit is answered from the custom id
    (:func:`submit_form`). A stored modal is forgotten after a timeout or a restart, and a box
    sent later got no answer at all; an unstored one that is never sent costs nothing."""
    modal.stop()


async def submit_instruction(interaction: discord.Interaction, round_id: int, text: str) -> None:
    from cogs._presenters import ThreadPresenter

    await interaction.response.defer(ephemeral=True, thinking=True)
    scenes = scenes_of(interaction)
    round_ = await scenes.round_record(round_id)
    presenter = ThreadPresenter(interaction.channel, interaction=interaction)
    try:
        outcome = await scenes.instruct(
            actor_from_interaction(interaction), round_.scene_id, text, presenter, base_round_id=round_.id
        )
    except LmdError as exc:
        # A modal's text is gone once it closes: quote it back with why it was refused.
        await _handed_back(interaction, exc.user_message, text, "instruction.txt")
        return
    # A reply in words, or why the plan will not render, was the presenter's answer already.
    if isinstance(outcome, UndoView) or (isinstance(outcome, PlanView) and outcome.job is not None):
        await reply(interaction, "Done: see the thread.")


async def submit_layout(interaction: discord.Interaction, round_id: int, text: str) -> None:
    from cogs._presenters import ThreadPresenter

    await interaction.response.defer(ephemeral=True, thinking=True)
    presenter = ThreadPresenter(interaction.channel, interaction=interaction)
    try:
        outcome = await scenes_of(interaction).edit_layout(
            actor_from_interaction(interaction), round_id, text, presenter
        )
    except LmdError as exc:
        # A modal's text is gone once it closes: hand it back with why it was refused (a layout
        # to fix, a banned word, the job cap, the rate limit).
        from cogs._format import file

        await interaction.followup.send(
            f"{exc.user_message}\nYour text is attached, to paste into Edit layout again.",
            file=file(text.encode(), "layout.txt"),
            ephemeral=True,
        )
        return
    if outcome.job is not None:  # otherwise the presenter said why it will not render
        await reply(interaction, "Done: see the thread.")


async def _handed_back(interaction: discord.Interaction, said: str, text: str, name: str) -> None:
    """``said``, and the text of the box the user sent: quoted, or attached if too long to quote."""
    from cogs._format import CONTENT_CHARS, file

    if not text.strip():  # nothing to hand back
        await reply(interaction, said)
        return
    quoted = "\n".join(f"> {line}" for line in text.splitlines())
    message = f"{said}\nYour text, to try again:\n{quoted}"
    if len(message) <= CONTENT_CHARS:
        await reply(interaction, message)
        return
    await interaction.followup.send(
        f"{said}\nYour text is attached, to try again.", file=file(text.encode(), name), ephemeral=True
    )


FORMS = {
    re.compile(r"lmd:instruct:(?P<id>\d+)"): ("instruction", submit_instruction),
    re.compile(r"lmd:layoutform:(?P<id>\d+)"): ("layout", submit_layout),
}


def _form_values(components: list[dict]) -> dict[str, str]:
    """A submitted modal's text inputs by custom id (in action rows, or in labels)."""
    values: dict[str, str] = {}
    for component in components:
        if "value" in component and "custom_id" in component:
            values[component["custom_id"]] = component["value"]
        inner = list(component.get("components", []))
        if "component" in component:
            inner.append(component["component"])
        values.update(_form_values(inner))
    return values


async def submit_form(interaction: discord.Interaction) -> None:
    """A submitted Edit or Edit-layout box, however long ago it was opened, even across a
    restart: the round is in its custom id, the text in its inputs."""
    data = interaction.data or {}
    for template, (name, submit) in FORMS.items():
        match = template.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            continue
        try:
            async with in_flight_of(interaction).answering():
                await submit(
                    interaction, int(match["id"]), _form_values(data.get("components", [])).get(name, "")
                )
        except Exception as exc:  # every failure gets a reply; item_error logs the unexpected ones
            await item_error(interaction, exc)
        return
