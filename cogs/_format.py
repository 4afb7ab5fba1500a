"""How scenes look in Discord: embeds, status lines, files. Pure functions of service views."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence

import discord

from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import candidate_seeds
from lmd_bot.scenes.models import RoundKind
from lmd_bot.services import (
    FailureView,
    JobSummary,
    PlanView,
    QueueView,
    ReplyView,
    ResultView,
    SettingsView,
    StatusView,
    UndoView,
    Voice,
)

ACCENT = discord.Colour(0x7C5CFF)
THREAD_NAME_MAX = 100
CONTENT_CHARS = 2000  # Discord's limit on a message's text
FIELD_CHARS = 1024  # ... on an embed field's value
DESCRIPTION_CHARS = 4096  # ... on an embed's description
EMBED_CHARS = 6000  # ... on an embed's text in all: title, description, fields, footer
_DIGITS = "0123456789"

HELP_TEXT = (
    "**I draw scenes in two steps:** an LLM plans where each object goes, then Stable Diffusion "
    "follows that plan.\n"
    "• `/imagine prompt:` plans a scene, shows the plan, opens a thread and renders it "
    "(`aspect:` for another shape, or say *make it wide* in the thread; `candidates:` 2 to 4 "
    "draws that many seeds in one grid: **Pick** one to go on from it).\n"
    "• In the thread, tell me what to change (*move the cup to the right*, *make it night*, *add a "
    "cat*, *undo*); mention me if I can't read messages here. Questions get an answer, no render.\n"
    "• Buttons on a result: 🔄 Reroll (new seed) · ↩️ Undo · ✏️ Edit · 🗺️ Layout, and ✨ Refine "
    "where the server offers SDXL refinement; ❌ cancels a job.\n"
    "• 🗺️ Layout → 📝 Edit layout changes the boxes directly (JSON or LMD text), or post a layout "
    "file in the thread: no LLM involved.\n"
    "• React 🔄 to any result to render it again with a new seed.\n"
    "• `/queue` shows the queue, `/info` your jobs and seeds, `/share` lets everyone edit your "
    "scene, `/settings` is for admins."
)

# The bot addressed with words where no scene lives (a channel, a thread of no scene).
NO_SCENE_HERE = (
    "There's no scene here to change. Start one with `/imagine prompt: …` in a text channel: I "
    "open a thread for it, and in that thread you tell me what to change."
)


def _listed(items: list[str], limit: int, sep: str = ", ") -> str:
    """``items`` joined with ``sep``, cut to ``limit`` characters with "… and N more"."""
    text = sep.join(items)
    if len(text) <= limit:
        return text
    shown: list[str] = []
    for item in items:
        if len(sep.join([*shown, item])) + len(f"{sep}… and {len(items)} more") > limit:
            break
        shown.append(item)
    return sep.join([*shown, f"… and {len(items) - len(shown)} more"])


def as_written(text: str) -> str:
    """Words people or the planner wrote (a prompt, a caption), shown as they were written: their
    markdown is not rendered, so a caption's masked link cannot hide its target behind the bot's
    name, and ``**`` or ``__`` in it cannot restyle the bot's message."""
    return discord.utils.escape_markdown(text)


def reply_content(view: ReplyView) -> str:
    """A reply's text as the bot posts it: the planner's words as written (whatever markup a
    prompt-injected answer holds), the bot's own with their formatting. Posted pinging nobody
    (``NO_PINGS``) either way."""
    text = as_written(view.text) if view.by is Voice.PLANNER else view.text
    return cut(text, CONTENT_CHARS)


def code_block(text: str, language: str, limit: int) -> str | None:
    """``text`` in a code block within ``limit`` characters; None when it cannot be one: too long,
    or holding a fence of its own (a caption with ```), which would end the block early and have
    the rest rendered as the bot's markdown."""
    block = f"```{language}\n{text}\n```"
    return block if len(block) <= limit and "```" not in text else None


def cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, ending in "…" when cut; an escaped text keeps no
    lone backslash at the end (it would escape what follows)."""
    if len(text) <= limit:
        return text
    kept = text[: limit - 1]
    if (len(kept) - len(kept.rstrip("\\"))) % 2:
        kept = kept[:-1]
    return kept + "…"


def thread_name(prompt: str) -> str:
    return prompt if len(prompt) <= THREAD_NAME_MAX else prompt[: THREAD_NAME_MAX - 1].rstrip() + "…"


def _with_objects(embed: discord.Embed, layout: SceneLayout) -> discord.Embed:
    """``embed`` (its other parts set) with the layout's objects as its description, as many as
    Discord's limits leave room for, then "… and N more"."""
    lines = [f"`{o.id:>2}` {as_written(o.caption)}" for o in layout.objects]
    room = min(DESCRIPTION_CHARS, EMBED_CHARS - len(embed))
    embed.description = _listed(lines, room, "\n") or "*(no objects: background only)*"
    return embed


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{value / 60:.1f} min"


def file(data: bytes, name: str, *, spoiler: bool = False) -> discord.File:
    return discord.File(io.BytesIO(data), filename=name, spoiler=spoiler)


def plan_embed(plan: PlanView | UndoView, *, title: str | None = None) -> discord.Embed:
    layout, scene = plan.round.layout, plan.scene
    embed = discord.Embed(colour=ACCENT, title=title or f"Plan · round {plan.round.number}")
    facts = [f"Background: {as_written(layout.background)}"]
    if layout.negative:
        facts.append(f"Avoid: {as_written(layout.negative)}")
    n = len(layout.objects)
    facts += [f"{n} object{'s' if n != 1 else ''}", f"mode {scene.mode.value}", f"seed {plan.round.seed}"]
    if layout.width != layout.height:
        facts.append(f"canvas {layout.width}x{layout.height}")
    if plan.round.candidates > 1:
        facts.append(f"{plan.round.candidates} candidates")
    embed.add_field(name="Scene", value=cut(" · ".join(facts), FIELD_CHARS), inline=False)
    if isinstance(plan, PlanView) and plan.changes:
        embed.add_field(name="Changed", value=cut(as_written(plan.changes), FIELD_CHARS), inline=False)
    if isinstance(plan, PlanView) and plan.notes:  # a footer shows no markdown
        embed.set_footer(text="Adjusted: " + "; ".join(plan.notes)[:2000])
    if plan.overlay_png is not None:  # a new plan's picture follows its words
        embed.set_image(url="attachment://plan.png")
    return _with_objects(embed, layout)


def status_content(view: StatusView, now: float | None = None) -> str:
    round_ = f"Round {view.round_number}"
    if view.state == "queued":
        where = f"position {view.position} of {view.waiting}" if view.position else "waiting"
        eta = ""
        if view.eta_s is not None:
            ready = int((now or time.time()) + view.eta_s)
            eta = f" (about {_seconds(view.eta_s)}, <t:{ready}:R>)"
        why = f"\n⚠️ {view.note[0].upper()}{view.note[1:]}." if view.note else ""  # why it waits
        return f"⏳ {round_}: queued, {where}{eta}.{why}"
    if view.state == "running":
        icon, doing = ("✨", "refining") if view.job.refine_of is not None else ("🎨", "rendering")
        again = f"\n♻️ {view.note}" if view.note else ""  # why this is another try
        if view.step and view.total_steps:
            return f"{icon} {round_}: {doing}, step {view.step}/{view.total_steps}.{again}"
        return f"{icon} {round_}: {doing}…{again}"
    if view.state == "retrying":
        return f"♻️ {round_}: {view.note}"
    return f"❌ {round_}: cancelled{f' ({view.note})' if view.note else ''}."


def result_embeds(view: ResultView, attached: Sequence[str] = ()) -> list[discord.Embed]:
    """The result's embeds. ``attached``: the names of the files sent with them (the image, then
    its overlay), which the embeds show, except spoilers: an embed never blurs its image, so a
    flagged image goes out only as a spoiler attachment and the embed stays text."""
    layout, job, count = view.round.layout, view.job, view.round.candidates
    title = f"Round {view.round.number}" + (" · refined ✨" if job.refine else "")
    if count > 1:
        title += f" · {count} candidates"
    elif view.round.kind is RoundKind.PICK:
        title += f" · {view.round.instruction}"  # "candidate 3 of round 1"
    title += " (shown again)" if view.reshown else ""
    main = discord.Embed(colour=ACCENT, title=title)
    if count > 1:
        seeds = candidate_seeds(job.seed, count)
        main.add_field(name="Seeds", value=" · ".join(f"{k}: `{s}`" for k, s in enumerate(seeds, 1)))
    else:
        main.add_field(name="Seed", value=f"`{job.seed}`")
    main.add_field(name="Mode", value=job.mode.value)
    main.add_field(name="Steps", value=str(job.steps))
    timing = []
    if view.render_s is not None:
        timing.append(f"render {_seconds(view.render_s)}")
    if view.total_s is not None:
        timing.append(f"total {_seconds(view.total_s)}")
    if job.finished_at is not None:
        timing.append(f"<t:{int(job.finished_at.timestamp())}:R>")
    if timing:
        main.add_field(name="Time", value=" · ".join(timing), inline=False)
    if view.check is not None:
        main.add_field(name="Self-check", value=cut(as_written(view.check.line()), FIELD_CHARS), inline=False)
    if warning := view.guidance_warning():
        main.add_field(name="⚠️ Guidance", value=warning[:1024], inline=False)
    if view.withheld:
        main.add_field(
            name="Withheld",
            value="The safety checker flagged this image, and this server withholds flagged images.",
            inline=False,
        )
    elif view.spoiler:
        main.add_field(
            name="Spoiler",
            value="The safety checker flagged this image: it and its layout are attached as spoilers.",
            inline=False,
        )
    _with_objects(main, layout)
    if view.withheld or view.spoiler or not attached:
        return [main]
    embeds = [main.set_image(url=f"attachment://{attached[0]}")]
    embeds += [discord.Embed(colour=ACCENT).set_image(url=f"attachment://{name}") for name in attached[1:]]
    return embeds


def image_name(view: ResultView, kind: str, ext: str = "png") -> str:
    """The upload's name (without the ``SPOILER_`` prefix, which discord.py adds to spoilers)."""
    refined = "-refined" if view.job.refine else ""
    return f"round{view.round.number}-seed{view.job.seed}{refined}-{kind}.{ext}"


def ready_content(view: ResultView) -> str:
    """The line above a result: it pings who asked for it (the result is a new message for this;
    in a shared scene that may be someone other than its owner)."""
    what = "was withheld" if view.withheld else "is ready"
    refined = " refined" if view.job.refine_of is not None else ""
    if view.round.candidates > 1:
        return f"<@{view.job.user_id}> round {view.round.number} {what}: pick a candidate to go on from."
    return f"<@{view.job.user_id}> round {view.round.number}{refined} {what}."


def done_content(view: ResultView) -> str:
    """What the status message shrinks to once the result is posted."""
    return f"✅ Round {view.round.number}: done, see below."


def failure_content(view: FailureView) -> str:
    """A failure's own message: it pings who asked for the render (a new message, as a result is)."""
    if not view.retryable:
        hint = ""
    elif view.job.refine_of is not None:
        hint = " Press **Refine** to try again."
    else:
        hint = " Press **Retry** to try again."
    return f"<@{view.job.user_id}> ⚠️ Round {view.round_number}: {view.message}{hint}"


def failed_content(view: FailureView) -> str:
    """What the status message shrinks to once the failure is posted."""
    return f"⚠️ Round {view.round_number}: failed, see below."


def queue_embed(view: QueueView) -> discord.Embed:
    embed = discord.Embed(colour=ACCENT, title="Queue")

    def line(e) -> str:
        what = (
            f"round {e.round_number}: {as_written(e.prompt[:60])}"
            if e.prompt
            else "a job from another server"
        )
        who = f"<@{e.user_id}>" if e.same_server else "someone"
        return f"{who} · {what} · {e.steps} steps, {e.mode}"

    # Whole lines only: a line cut short could end in an escaping backslash or half a mention.
    running = _listed([f"🎨 {line(e)}" for e in view.running], FIELD_CHARS, "\n") or "nothing"
    waiting = _listed([f"`{e.position:>2}` {line(e)}" for e in view.waiting], FIELD_CHARS, "\n")
    embed.add_field(name="Rendering", value=running, inline=False)
    embed.add_field(name=f"Waiting ({len(view.waiting)})", value=waiting or "nobody waiting", inline=False)
    if view.eta_per_job_s is not None:
        embed.set_footer(text=f"About {_seconds(view.eta_per_job_s)} per image lately.")
    return embed


def info_embed(jobs: list[JobSummary]) -> discord.Embed:
    embed = discord.Embed(colour=ACCENT, title="Your recent images")
    if not jobs:
        embed.description = "No jobs yet: try `/imagine`."
        return embed
    lines = []
    for s in jobs:
        where = f" in <#{s.thread_id}>" if s.thread_id else ""
        status = s.job.status.value + (f" (position {s.position})" if s.position else "")
        when = f"<t:{int(s.job.queued_at.timestamp())}:R>"
        prompt = as_written(s.prompt[:50])
        lines.append(f"**{prompt}** round {s.round_number}{where} · seed `{s.job.seed}` · {status} · {when}")
    embed.description = _listed(lines, DESCRIPTION_CHARS, "\n")
    return embed


def settings_embed(view: SettingsView) -> discord.Embed:
    embed = discord.Embed(colour=ACCENT, title="Server settings")
    stored = view.stored

    def mark(value: object) -> str:
        return "" if value is not None else " *(default)*"

    channels = _listed([f"<#{c}>" for c in view.allowed_channel_ids], FIELD_CHARS - 40) or "every channel"
    rows = [
        ("Mode", f"`{view.mode}`{mark(stored.mode)}", "how images are drawn (lmd+ best, fast for drafts)"),
        ("Steps", f"`{view.steps}`{mark(stored.steps)}", "denoising steps; fewer is faster and rougher"),
        (
            "Who edits",
            f"`{view.editors}`{mark(stored.editors)}",
            "scene owner only, or everyone in the thread",
        ),
        ("Safety", f"`{view.safety}`{mark(stored.safety)}", "flagged images: spoiler, withhold, or off"),
        ("Per-user cap", f"`{view.per_user_cap}`{mark(stored.per_user_cap)}", "images one person may queue"),
        ("Refine", f"`{view.refine.value}`{mark(stored.refine)}", "SDXL refinement: off, on, or a ✨ button"),
        (
            "Candidates",
            f"`{view.candidates}`{mark(stored.candidates)}",
            "seeds a new scene shows, as a grid to pick from",
        ),
        ("Channels", channels, "where /imagine works"),
    ]
    for name, value, meaning in rows:
        embed.add_field(name=name, value=f"{value}\n*{meaning}*", inline=True)
    return embed
