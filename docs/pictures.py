"""Regenerate the README's pictures of what lmd-bot replies in Discord (``docs/images/bot-*.png``).

::

    .venv/bin/python docs/pictures.py

Discord cannot be reached from here, so the pictures are mock-ups, but nothing in them is typed
by hand: a scripted planner (standing in for the LLM) answers one prompt and one follow-up, the
real service layer runs the scene (SQLite database, queue, worker process with the PREVIEW
renderer: flat boxes, no diffusion model), the real builders in ``cogs/_format.py`` and
``cogs/_views.py`` turn its views into ``discord.Embed``s and buttons, and Pillow draws those in
Discord's dark theme. A caption on each picture says the images are previews, not renders.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # cogs/ is not an installed package

import discord  # noqa: E402

from cogs._format import (  # noqa: E402
    done_content,
    file,
    plan_embed,
    ready_content,
    status_content,
    thread_name,
)
from cogs._notifier import REROLL_EMOJI, result_message  # noqa: E402
from cogs._views import result_buttons, status_buttons  # noqa: E402
from cogs.imagine import SEEN_EMOJI  # noqa: E402
from lmd_bot.config import load_settings  # noqa: E402
from lmd_bot.jobs.preview import PreviewRenderer  # noqa: E402
from lmd_bot.jobs.renderers import RendererSpec  # noqa: E402
from lmd_bot.layout.schema import SceneLayout  # noqa: E402
from lmd_bot.overlay import FONT_DIR  # noqa: E402
from lmd_bot.services import Actor, PlanView, ResultView, StatusView, open_core  # noqa: E402
from lmd_bot.testing import RecordingNotifier, ScriptedPlanner, layout_of  # noqa: E402

OUT = ROOT / "docs" / "images"
PROMPT = "three red apples on a table left of a blue cup, no people"
FOLLOW_UP = "move the cup to the right and make the apples green"
USER = "alice"
CHANNEL = "scenes"
SEED = 1234567
THREAD_ID = 5001
ALICE = Actor(user_id=1, guild_id=100, channel_id=10)
ALICE_IN_THREAD = Actor(user_id=1, guild_id=100, channel_id=10, thread_id=THREAD_ID)

# --- the scene, through the real service layer ------------------------------------------------


def _planned() -> SceneLayout:
    """The layout a planner gives for PROMPT."""
    apple, cup = "a red apple", "a blue ceramic cup"
    objects = [
        {"id": 1, "caption": apple, "box": [56, 290, 90, 88]},
        {"id": 2, "caption": apple, "box": [150, 292, 88, 86]},
        {"id": 3, "caption": apple, "box": [104, 214, 86, 82]},
        {"id": 4, "caption": cup, "box": [276, 236, 104, 140]},
        {"id": 5, "caption": "a wooden table", "box": [16, 362, 480, 136]},
    ]
    return layout_of(objects, "A realistic photo of a sunny kitchen", "people")


def _follow_up(layout: SceneLayout) -> SceneLayout:
    """FOLLOW_UP applied to a layout, same ids: the cup moves right, the apples turn green."""
    data = layout.model_dump()
    for obj in data["objects"]:
        if "cup" in obj["caption"]:
            obj["box"][0] = 512 - 16 - obj["box"][2]
        obj["caption"] = obj["caption"].replace("red apple", "green apple")
    return SceneLayout.model_validate(data)


class PacedPreview:
    """The preview renderer, paced per step, so the status message has a step to show mid-render
    (the plain preview finishes before the first status edit)."""

    def __init__(self, step_s: float) -> None:
        self.inner, self.step_s = PreviewRenderer(), step_s

    def render(self, request, progress=None, should_cancel=None):
        def paced(report) -> None:
            if progress is not None:
                progress(report)
            time.sleep(self.step_s)

        return self.inner.render(request, paced, should_cancel)


def paced_preview(step_s: float) -> PacedPreview:
    """The worker process's renderer factory (a ``RendererSpec`` names it)."""
    return PacedPreview(step_s)


def _progress(recorder: RecordingNotifier, job_id: int) -> StatusView:
    """A status the message showed while rendering: the step nearest halfway."""
    shown = [v for v in recorder.for_job(job_id) if isinstance(v, StatusView)]
    running = [v for v in shown if v.state == "running" and v.step]
    return min(running, key=lambda v: abs(2 * v.step - v.total_steps)) if running else shown[-1]


@dataclass
class Message:
    """One Discord message as drawn; everything comes from the bot's own builders."""

    author: str
    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (emoji, label)
    reactions: list[str] = field(default_factory=list)
    command: str | None = None  # "used /imagine" header
    reply_to: tuple[str, str] | None = None  # (author, text)
    thread: tuple[str, int] | None = None  # a thread opened from this message: name, messages
    note: str | None = None  # a mock-up annotation under the message (not Discord UI)


def _buttons(view: discord.ui.View) -> list[tuple[str, str]]:
    return [(str(item.emoji or ""), item.label or "") for item in view.children]


def _files(*files: discord.File) -> dict[str, bytes]:
    return {f.filename: f.fp.read() for f in files}


async def _rendered(recorder: RecordingNotifier, plan: PlanView) -> list[Message]:
    job = plan.job
    result = await recorder.result_of(job.id, timeout=120)
    if not isinstance(result, ResultView):
        raise RuntimeError(f"the render did not finish: {result}")
    status = _progress(recorder, job.id)
    embeds, files = await result_message(result, None)
    return [
        Message(
            "lmd-bot",
            content=status_content(status),
            buttons=_buttons(status_buttons(job.id)),
            # The note's font has no emoji: quote the status line without its ✅.
            note=f"then shrinks to “{done_content(result).removeprefix('✅ ')}”",
        ),
        Message(
            "lmd-bot",
            # Discord shows the owner's mention as their name, highlighted: the new message pings them.
            content=ready_content(result).replace(f"<@{result.scene.owner_id}>", f"@{USER}"),
            embeds=embeds,
            files=_files(*files),
            buttons=_buttons(result_buttons(result.round.id)),
            reactions=[REROLL_EMOJI],  # the bot adds it: react to reroll
        ),
    ]


async def capture(tmp: Path) -> tuple[list[Message], list[Message]]:
    """Run the two rounds; the messages of the /imagine reply, and of the follow-up."""
    settings = load_settings(
        db={"url": f"sqlite+aiosqlite:///{tmp}/bot.sqlite3"},
        storage={"image_dir": str(tmp / "images")},
        discord={"status_edit_interval_s": 0.0},
    )
    renderer = RendererSpec(factory="docs.pictures:paced_preview", kwargs={"step_s": 0.02})
    planner = ScriptedPlanner(plans={PROMPT: _planned()}, revisions={FOLLOW_UP: _follow_up})
    core = await open_core(settings, planner=planner, renderer=renderer, new_seed=lambda: SEED)
    recorder = RecordingNotifier()
    core.scenes.attach(recorder)
    await core.scenes.start()
    try:
        plan = await core.scenes.imagine(ALICE, PROMPT, recorder)
        imagine = Message(
            "lmd-bot",
            content=f"**{discord.utils.escape_markdown(plan.scene.prompt)}**",
            embeds=[plan_embed(plan)],
            files=_files(file(plan.overlay_png, "plan.png")),
            command="/imagine",
            thread=(thread_name(plan.scene.prompt), 1),  # its status message, which becomes the result
        )
        first = await _rendered(recorder, plan)
        revised = await core.scenes.instruct(ALICE_IN_THREAD, plan.scene.id, FOLLOW_UP, recorder)
        reply = Message(
            "lmd-bot",
            embeds=[plan_embed(revised)],
            files=_files(file(revised.overlay_png, "plan.png")),
            reply_to=(USER, FOLLOW_UP),
        )
        second = await _rendered(recorder, revised)
    finally:
        await core.close()
    instruction = Message(USER, content=FOLLOW_UP, reactions=[SEEN_EMOJI])  # the bot's "seen"
    return [imagine, *first], [instruction, reply, *second]


# --- drawing: Discord's dark theme -------------------------------------------------------------

BG = (49, 51, 56)
EMBED_BG = (43, 45, 49)
CODE_BG = (30, 31, 34)
DIVIDER = (31, 32, 35)
TEXT = (219, 222, 225)
WHITE = (242, 243, 245)
MUTED = (148, 155, 164)
NOTE = (240, 178, 50)  # mock-up annotations: a colour Discord does not use for text
BUTTON = (78, 80, 88)
BLURPLE = (88, 101, 242)
AVATARS = {"lmd-bot": (124, 92, 255), USER: (35, 165, 90)}
PANE_W = 500
TEXT_X = 72  # messages start right of the avatar
IMAGE_MAX = 300

# Emoji the bundled fonts lack, drawn as a symbol they have, in the emoji's usual colour.
EMOJI = {
    "🔄": ("⟳", (88, 166, 255)),
    "🔁": ("⟳", (88, 166, 255)),
    "↩": ("↩", (88, 166, 255)),
    "✏": ("✏", (250, 200, 70)),
    "🗺": ("▦", (90, 190, 120)),
    "🎨": ("✱", (235, 120, 200)),
    "⏳": ("◷", (250, 190, 70)),
    "♻": ("♻", (90, 190, 120)),
    "❌": ("✖", (237, 66, 69)),
    "⚠": ("⚠", (250, 200, 70)),
    "👀": ("◉", (235, 235, 235)),
}
SYSTEM_FONTS = Path("/usr/share/fonts/truetype/dejavu")


@cache
def font(size: int, style: str = "") -> ImageFont.FreeTypeFont:
    """DejaVu from the package; italic and monospace from the system's DejaVu where installed."""
    name = {"b": "DejaVuSans-Bold.ttf", "i": "DejaVuSans-Oblique.ttf", "code": "DejaVuSansMono.ttf"}
    path = FONT_DIR / name.get(style, "DejaVuSans.ttf")
    if not path.exists():
        path = SYSTEM_FONTS / path.name
    return ImageFont.truetype(str(path if path.exists() else FONT_DIR / "DejaVuSans.ttf"), size)


def font_for(text: str, size: int, style: str = "") -> ImageFont.FreeTypeFont:
    if any(ord(ch) > 0x2FFF and ch not in EMOJI for ch in text):  # CJK and the like
        return _cjk_font(size)
    return font(size, "" if style in ("emoji", "time") else style)


@cache
def _cjk_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / "wqy-microhei.ttc"), size)


# The markdown the bot's messages use: bold, italic, inline code, relative timestamps.
MARKUP = re.compile(r"\*\*(.+?)\*\*|\*(.+?)\*|`([^`]+)`|<t:(\d+):R>")


def _relative(ts: int) -> str:
    minutes = round((time.time() - ts) / 60)
    return "a few seconds ago" if minutes < 1 else f"{minutes} minute{'s' if minutes > 1 else ''} ago"


def _pieces(line: str) -> list[tuple[str, str]]:
    """A line of Discord markdown as (text, style) pieces that wrap as units."""
    runs, pos = [], 0
    for m in MARKUP.finditer(line):
        runs.append((line[pos : m.start()], ""))
        bold, italic, code, ts = m.groups()
        if code is not None:
            runs.append((code, "code"))
        elif ts is not None:
            runs.append((_relative(int(ts)), "time"))
        else:
            runs.append((bold if bold is not None else italic, "b" if bold is not None else "i"))
        pos = m.end()
    runs.append((line[pos:], ""))
    pieces = []
    for text, style in runs:
        if style in ("code", "time"):
            pieces.append((text, style))
            continue
        text = re.sub(r"\\(\W)", r"\1", text.replace("\ufe0f", ""))  # undo escape_markdown
        for word in re.findall(r"\S+\s*|\s+", text):
            for part in re.split(f"([{''.join(EMOJI)}])", word):
                if part:
                    pieces.append((part, "emoji" if part in EMOJI else style))
    return pieces


def _width(text: str, size: int, style: str) -> float:
    if style == "emoji":
        return font(size).getlength(EMOJI[text][0]) + 2
    pad = 6 if style == "code" else 0
    return font_for(text, size, style).getlength(text) + pad


def rich(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, width: int, size=15, colour=TEXT) -> int:
    """Draw wrapped Discord markdown; returns the y below it."""
    line_h = round(size * 1.4)
    for line in text.split("\n"):
        cx = 0.0
        for piece, style in _pieces(line):
            w = _width(piece if style == "code" else piece.rstrip(), size, style)
            if cx + w > width and cx > 0:
                cx, y = 0.0, y + line_h
                if piece.isspace():
                    continue
            px, mid = x + cx, y + line_h / 2
            if style == "emoji":
                glyph, tint = EMOJI[piece]
                draw.text((px, mid), glyph, font=font(size), fill=tint, anchor="lm")
            elif style == "code":
                draw.rounded_rectangle([px, y + 1, px + w, y + line_h - 1], 3, fill=CODE_BG)
                draw.text((px + 3, mid), piece, font=font(size - 1, "code"), fill=TEXT, anchor="lm")
            else:
                ink = WHITE if style == "b" else colour
                draw.text((px, mid), piece, font=font_for(piece, size, style), fill=ink, anchor="lm")
            cx += _width(piece, size, style)
        y += line_h
    return y


def fit(text: str, f: ImageFont.FreeTypeFont, width: float) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    while f.getlength(text) > width:
        text = text[:-2] + "…"
    return text


def avatar(img: Image.Image, x: int, y: int, name: str, size: int = 40) -> None:
    draw = ImageDraw.Draw(img)
    draw.ellipse([x, y, x + size, y + size], fill=AVATARS.get(name, BLURPLE))
    draw.text(
        (x + size / 2, y + size / 2), name[0].upper(), font=font(size // 2, "b"), fill=WHITE, anchor="mm"
    )


def pasted_image(img: Image.Image, x: int, y: int, png: bytes, max_w: int) -> int:
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    scale = min(1.0, max_w / picture.width)
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.LANCZOS)
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, *picture.size], 6, fill=255)
    img.paste(picture, (x, y), mask)
    return y + picture.height


def _field_rows(fields: list) -> list[list]:
    rows: list[list] = []
    for f in fields:
        if f.inline and rows and rows[-1][0].inline and len(rows[-1]) < 3:
            rows[-1].append(f)
        else:
            rows.append([f])
    return rows


def embed(img: Image.Image, x: int, y: int, e: discord.Embed, files: dict[str, bytes], width: int) -> int:
    """Draw an embed like Discord: accent bar, title, description, fields, image, footer."""
    card = Image.new("RGB", (width, 2000), EMBED_BG)
    draw = ImageDraw.Draw(card)
    left, inner = 16, width - 32
    cy = 10
    if e.title:
        cy = rich(draw, left, cy, f"**{e.title}**", inner, size=16) + 4
    if e.description:
        cy = rich(draw, left, cy, e.description, inner, size=14) + 4
    for row in _field_rows(e.fields):  # inline fields sit up to three in a row, a third wide each
        col = inner // 3 if row[0].inline else inner
        cy = max(
            rich(
                draw,
                left + i * col,
                rich(draw, left + i * col, cy + 4, f"**{f.name}**", col - 8, 14),
                f.value,
                col - 8,
                14,
            )
            for i, f in enumerate(row)
        )
    if e.image and e.image.url:
        cy = pasted_image(
            card, left, cy + 10, files[e.image.url.removeprefix("attachment://")], min(inner, IMAGE_MAX)
        )
    if e.footer and e.footer.text:
        cy = rich(draw, left, cy + 6, e.footer.text, inner, size=12, colour=MUTED)
    card = card.crop((0, 0, width, cy + 14))
    mask = Image.new("L", card.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, *card.size], 5, fill=255)
    img.paste(card, (x, y), mask)
    accent = e.colour.to_rgb() if e.colour else MUTED
    ImageDraw.Draw(img).rounded_rectangle([x, y, x + 4, y + card.height], 2, fill=accent)
    return y + card.height


def button(draw: ImageDraw.ImageDraw, x: int, y: int, text: str) -> int:
    """A grey (secondary) button with an emoji and a label; returns its right edge."""
    w = sum(_width(piece, 14, style) for piece, style in _pieces(text)) + 32
    draw.rounded_rectangle([x, y, x + w, y + 32], 4, fill=BUTTON)
    rich(draw, x + 16, y + 6, text, 10_000, size=14, colour=WHITE)
    return x + w


def message(img: Image.Image, y: int, m: Message, stamp: str) -> int:
    draw = ImageDraw.Draw(img)
    width = PANE_W - TEXT_X - 16
    if m.reply_to or m.command:
        # The curved line from the avatar up to the replied-to message or command.
        draw.line([(36, y + 9), (36, y + 5), (TEXT_X - 12, y + 5)], fill=(78, 80, 88), width=2)
        who, what = m.reply_to or (USER, f"used {m.command}")
        avatar(img, TEXT_X - 8, y - 3, who, 16)
        draw.text((TEXT_X + 12, y + 5), f"@{who}", font=font(13, "b"), fill=MUTED, anchor="lm")
        tail = f" {what}" if m.command else f"  {what}"
        draw.text(
            (TEXT_X + 14 + font(13, "b").getlength(f"@{who}"), y + 5),
            tail,
            font=font(13),
            fill=MUTED,
            anchor="lm",
        )
        y += 20
    avatar(img, 16, y + 2, m.author)
    name_w = font(15, "b").getlength(m.author)
    draw.text((TEXT_X, y), m.author, font=font(15, "b"), fill=WHITE)
    after = TEXT_X + name_w + 6
    if m.author == "lmd-bot":
        draw.rounded_rectangle([after, y + 2, after + 30, y + 17], 3, fill=BLURPLE)
        draw.text((after + 15, y + 10), "APP", font=font(10, "b"), fill=WHITE, anchor="mm")
        after += 36
    draw.text((after, y + 4), stamp, font=font(12), fill=MUTED)
    y += 24
    if m.content:
        y = rich(draw, TEXT_X, y, m.content, width) + 2
    for e in m.embeds:
        y = embed(img, TEXT_X, y + 4, e, m.files, min(width, 420)) + 2
    if m.buttons:
        x, y = TEXT_X, y + 8
        for emoji, label in m.buttons:
            x = button(draw, x, y, f"{emoji} {label}") + 8
        y += 32
    if m.reactions:
        y += 6
        for emoji in m.reactions:  # the bot's own, one each: not the reader's, so not highlighted
            draw.rounded_rectangle([TEXT_X, y, TEXT_X + 50, y + 26], 8, fill=EMBED_BG)
            rich(draw, TEXT_X + 8, y + 3, f"{emoji} 1", 100, size=14, colour=WHITE)
        y += 26
    if m.thread:
        y += 6
        draw.line(
            [(TEXT_X - 20, y - 30), (TEXT_X - 20, y + 18), (TEXT_X - 6, y + 18)], fill=(78, 80, 88), width=2
        )
        box = [TEXT_X, y, TEXT_X + width - 20, y + 40]
        draw.rounded_rectangle(box, 5, fill=EMBED_BG)
        draw.text(
            (TEXT_X + 10, y + 12),
            fit(m.thread[0], font(13, "b"), width - 140),
            font=font(13, "b"),
            fill=WHITE,
        )
        count = f"{m.thread[1]} Message{'s' if m.thread[1] != 1 else ''} ›"
        draw.text((box[2] - 10, y + 20), count, font=font(12), fill=(0, 168, 252), anchor="rm")
        y += 40
    if m.note:
        y = rich(draw, TEXT_X, y + 6, m.note, width, size=12, colour=NOTE)
    return y + 18


def pane(title: str | None, messages: list[Message], stamp: str, *, thread: bool) -> Image.Image:
    """A channel (or a thread: its # has a speech bubble) with its messages; no title: the
    messages continue the pane beside it."""
    img = Image.new("RGB", (PANE_W, 3000), BG)
    draw = ImageDraw.Draw(img)
    draw.line([(0, 47), (PANE_W, 47)], fill=DIVIDER, width=2)
    if title is not None:
        draw.text((16, 24), "#", font=font(20), fill=MUTED, anchor="lm")
        if thread:
            draw.rounded_rectangle([25, 8, 40, 20], 4, fill=MUTED, outline=BG, width=2)
            draw.polygon([(29, 19), (29, 24), (34, 19)], fill=MUTED)
        draw.text(
            (48, 24), fit(title, font(15, "b"), PANE_W - 64), font=font(15, "b"), fill=WHITE, anchor="lm"
        )
    y = 64
    for m in messages:
        y = message(img, y, m, stamp)
    return img.crop((0, 0, PANE_W, y))


def picture(left: Image.Image, right: Image.Image, caption: tuple[str, ...]) -> Image.Image:
    """Two panes side by side (a channel and its thread, as Discord's desktop app shows them),
    over a caption that says what is real."""
    caption_h = 12 + 20 * len(caption)
    h = max(left.height, right.height)
    out = Image.new("RGB", (2 * PANE_W + 2, h + caption_h), BG)
    out.paste(left, (0, 0))
    out.paste(right, (PANE_W + 2, 0))
    draw = ImageDraw.Draw(out)
    draw.rectangle([PANE_W, 0, PANE_W + 1, h], fill=DIVIDER)
    draw.rectangle([0, h, out.width, out.height], fill=(30, 31, 34))
    for i, line in enumerate(caption):
        draw.text((12, h + 8 + 20 * i), line, font=font(13), fill=NOTE)
    return out


CAPTION = (
    "Mock-up of Discord, drawn from lmd-bot's own messages (embeds, buttons) for a scripted planner.",
    "Images: the preview renderer (the planned boxes, coloured by object id), not a Stable Diffusion render.",
)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reply, followup = asyncio.run(capture(Path(tmp)))
    stamp = time.strftime("Today at %H:%M")
    imagine, status, result = reply
    thread = thread_name(PROMPT)
    OUT.mkdir(parents=True, exist_ok=True)
    picture(
        pane(CHANNEL, [imagine], stamp, thread=False),
        pane(thread, [status, result], stamp, thread=True),
        CAPTION,
    ).save(OUT / "bot-reply.png", optimize=True)
    user, plan, status, result = followup
    picture(
        pane(thread, [user, plan], stamp, thread=True),
        pane(None, [status, result], stamp, thread=True),
        CAPTION,
    ).save(OUT / "bot-followup.png", optimize=True)
    print(f"wrote {OUT / 'bot-reply.png'} and {OUT / 'bot-followup.png'}")  # noqa: T201


if __name__ == "__main__":
    main()
