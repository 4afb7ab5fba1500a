"""The Discord side of the service's notifier: status messages edited in place, results,
failures. Works from ids alone (the thread id in the scene, the message id in the job), so it
keeps working for jobs that outlived a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import discord

from cogs._common import SCENE_PERMISSIONS, missing_permissions, permission_message
from cogs._format import (
    done_content,
    failed_content,
    failure_content,
    file,
    image_name,
    ready_content,
    result_embeds,
    status_content,
)
from cogs._views import buttons_for, failure_buttons, status_buttons
from lmd_bot.services import DestinationGoneError, FailureView, ResultView, StatusView
from lmd_bot.services.images import fit_for_upload

log = logging.getLogger(__name__)

REROLL_EMOJI = "🔄"
ARCHIVED_THREAD = 50083  # Discord's error code for a write in an archived thread
UNKNOWN_MESSAGE = 10008
T = TypeVar("T")
# What a result's image and embeds need, besides posting at all.
SHOWING_RESULTS = {attr: SCENE_PERMISSIONS[attr] for attr in ("attach_files", "embed_links")}


async def result_files(view: ResultView, limit: int | None) -> list[discord.File]:
    """The image and its overlay, each fitted under the server's upload limit (half each): PNG,
    or WebP when the PNG is too big."""
    if view.withheld or view.image_png is None:
        return []
    budget = (limit or discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES) // 2
    files = []
    for kind, data in (("image", view.image_png), ("overlay", view.overlay_png)):
        if data is None:
            continue
        fitted, ext = await asyncio.to_thread(fit_for_upload, data, budget)
        files.append(file(fitted, image_name(view, kind, ext), spoiler=view.spoiler))
    return files


async def result_message(
    view: ResultView, limit: int | None
) -> tuple[list[discord.Embed], list[discord.File]]:
    """A result's embeds and files; the embeds show the files under the names they went out with."""
    files = await result_files(view, limit)
    return result_embeds(view, [f.filename for f in files]), files


async def reopening(thread, call: Callable[[], Awaitable[T]], files: Sequence[discord.File] = ()) -> T:
    """Run ``call`` (a write in ``thread``); an archived thread, which refuses edits, reactions and
    posts, is reopened and the call made again (with its ``files`` rewound: the refused upload read
    them to their end). DestinationGoneError when it is locked (only moderators reopen those) or
    cannot be reopened."""
    try:
        return await call()
    except discord.HTTPException as exc:
        if exc.code != ARCHIVED_THREAD:
            raise
    if getattr(thread, "locked", False):
        raise DestinationGoneError(f"thread {thread.id} is archived and locked")
    try:
        await thread.edit(archived=False)
    except (discord.Forbidden, discord.NotFound) as exc:
        # Locked meanwhile (only moderators may reopen it), or deleted.
        raise DestinationGoneError(f"thread {thread.id} is archived and cannot be reopened") from exc
    log.info("reopened the archived thread %s to write in it", thread.id)
    rewind(files)
    return await call()


def rewind(files: Sequence[discord.File]) -> None:
    """Files read by a request Discord refused, ready to be sent again from their start."""
    for f in files:
        f.reset()


def pinging(user_id: int) -> discord.AllowedMentions:
    """Mentions that notify ``user_id`` and nobody else."""
    return discord.AllowedMentions(
        users=[discord.Object(user_id)], everyone=False, roles=False, replied_user=False
    )


class DiscordNotifier:
    def __init__(self, bot: discord.Client) -> None:
        self.bot = bot
        self._warned: set[int] = set()  # channels already told about a missing permission

    async def _thread(self, thread_id: int | None):
        if thread_id is None:
            raise DestinationGoneError("scene has no thread")
        channel = self.bot.get_channel(thread_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(thread_id)
            except (discord.NotFound, discord.Forbidden) as exc:
                raise DestinationGoneError(thread_id) from exc
        return channel

    async def _in_thread(
        self, thread, call: Callable[[], Awaitable[T]], files: Sequence[discord.File] = ()
    ) -> T:
        """Run ``call`` (a request in ``thread``, uploading ``files``) as Discord allows
        (:func:`reopening`); a deleted thread or one the bot lost is gone; a refusal tells the
        channel's admins."""
        try:
            return await reopening(thread, call, files)
        except discord.NotFound as exc:
            raise DestinationGoneError(thread.id) from exc
        except discord.Forbidden:
            await self._warn_missing_permissions(thread)
            raise

    async def _post(self, thread, message_id: int | None, **fields) -> int:
        """Edit ``message_id`` in ``thread``, or post a new message if there is none (or it was
        deleted); returns the message's id."""
        files = [f for f in fields.get("attachments", ()) if isinstance(f, discord.File)]
        if message_id is not None:
            try:
                edited = await self._in_thread(
                    thread, lambda: thread.get_partial_message(message_id).edit(**fields), files
                )
                return edited.id
            except DestinationGoneError as exc:
                if not _unknown_message(exc.__cause__):
                    raise
            rewind(files)
        if "attachments" in fields:
            fields["files"] = fields.pop("attachments")
        sent = await self._in_thread(thread, lambda: thread.send(**fields), files)
        return sent.id

    async def _warn_missing_permissions(self, thread) -> None:
        parent = getattr(thread, "parent", None)
        if parent is None or parent.id in self._warned:
            return
        self._warned.add(parent.id)
        me = parent.guild.me
        missing = missing_permissions(thread.permissions_for(me)) or ["Send Messages in Threads"]
        try:
            await parent.send(permission_message(missing, f"{thread.mention}"))
        except discord.HTTPException:
            log.warning("cannot post in %s or its channel: missing %s", thread.id, missing)

    async def show_status(self, view: StatusView) -> int | None:
        thread = await self._thread(view.scene.thread_id)
        # Every edit says what the message holds now: an old preview must not linger.
        fields: dict = {
            "content": status_content(view),
            "view": None if view.state == "cancelled" else status_buttons(view.job.id),
        }
        if view.preview_png and view.state != "cancelled":
            try:
                return await self._post(
                    thread,
                    view.job.status_message_id,
                    **fields,
                    embeds=[discord.Embed().set_thumbnail(url="attachment://preview.png")],
                    attachments=[file(view.preview_png, "preview.png")],
                )
            except discord.Forbidden:  # Attach Files or Embed Links taken away: the status in words
                log.info("job %s: status without its preview in %s", view.job.id, thread.id)
        return await self._post(thread, view.job.status_message_id, **fields, embeds=[], attachments=[])

    async def show_result(self, view: ResultView) -> int | None:
        """The result as a new message that pings who asked for it (an edit notifies nobody, and in
        a busy thread it would sit above newer messages); the status message shrinks to a line."""
        thread = await self._thread(view.scene.thread_id)
        limit = thread.guild.filesize_limit if getattr(thread, "guild", None) else None
        embeds, files = await result_message(view, limit)
        try:
            sent = await self._in_thread(
                thread,
                lambda: thread.send(
                    content=ready_content(view),
                    embeds=embeds,
                    files=files,
                    view=buttons_for(view),
                    allowed_mentions=pinging(view.job.user_id),
                ),
                files,
            )
        except discord.Forbidden:
            # Attach Files or Embed Links taken away since the scene began: the result in words,
            # with its buttons, so who asked hears of it and knows what to ask for.
            said = f"{ready_content(view)}\n{self._cannot_show(thread, view)}"
            sent = await self._in_thread(
                thread,
                lambda: thread.send(
                    content=said, view=buttons_for(view), allowed_mentions=pinging(view.job.user_id)
                ),
            )
        try:
            await self._in_thread(thread, lambda: sent.add_reaction(REROLL_EMOJI))
        except (discord.HTTPException, DestinationGoneError):
            log.info("could not add the reroll reaction in %s", thread.id)
        await self._shrink_status(thread, view.job.id, view.job.status_message_id, done_content(view))
        return sent.id

    @staticmethod
    def _cannot_show(thread, view: ResultView) -> str:
        """Why a result came without its image: the permissions the bot lacks in ``thread``."""
        try:
            lacking = missing_permissions(thread.permissions_for(thread.guild.me), SHOWING_RESULTS)
        except (AttributeError, discord.ClientException):  # the channel is not in the cache
            lacking = []
        names = ", ".join(f"**{name}**" for name in lacking) or "the permissions to post images"
        return (
            f"⚠️ I may not post its image here: a server admin needs to give me {names} in this "
            f"channel (seed `{view.job.seed}`)."
        )

    async def _shrink_status(self, thread, job_id: int, message_id: int | None, line: str) -> None:
        """The job's status message, once its end is posted below it: one line, no buttons."""
        if message_id is None:
            return
        status = thread.get_partial_message(message_id)
        try:
            await self._in_thread(
                thread, lambda: status.edit(content=line, embeds=[], attachments=[], view=None)
            )
        except (discord.HTTPException, DestinationGoneError):
            log.info("could not shrink the status message of job %s", job_id)

    async def show_failure(self, view: FailureView) -> int | None:
        """A new message that pings who asked for the render with what failed and what to do (an
        edit of the status message would notify nobody); the status message shrinks to a line."""
        thread = await self._thread(view.scene.thread_id)
        sent = await self._in_thread(
            thread,
            lambda: thread.send(
                content=failure_content(view),
                view=failure_buttons(view.job.id, view.job.round_id, view.retryable, view.job.refine_of),
                allowed_mentions=pinging(view.job.user_id),
            ),
        )
        await self._shrink_status(thread, view.job.id, view.job.status_message_id, failed_content(view))
        return sent.id


def _unknown_message(exc: BaseException | None) -> bool:
    """A deleted message (post a new one), as opposed to a deleted thread (gone)."""
    return isinstance(exc, discord.NotFound) and exc.code == UNKNOWN_MESSAGE
