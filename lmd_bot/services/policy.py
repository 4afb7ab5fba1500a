"""Server policy: what a server's admins chose over the bot's defaults, and the checks that follow
from it (where the bot works, who edits, how many images one person may queue, what happens to a
flagged image). No use case and no queue here: the scene service and the render tracker ask.
"""

from __future__ import annotations

import logging

from lmd_bot.config import Settings
from lmd_bot.db.repository import Repository
from lmd_bot.guard import Guard
from lmd_bot.jobs.models import CapReachedError
from lmd_bot.layout.schema import clean_text
from lmd_bot.rendering import MAX_CANDIDATES, Refine, RenderMode
from lmd_bot.scenes.models import EditorsPolicy, JobRecord, SafetyPolicy, SceneRecord, ServerSettings
from lmd_bot.services.errors import (
    CandidateCountError,
    EmptyTextError,
    NotAdminError,
    RefineOffError,
    TextTooLongError,
)
from lmd_bot.services.views import Actor, SettingsChange, SettingsView

log = logging.getLogger(__name__)

_FIELDS = {"mode", "steps", "editors", "safety", "per_user_cap", "refine", "candidates"}


def check_candidates(count: int) -> None:
    if not 1 <= count <= MAX_CANDIDATES:
        raise CandidateCountError(count)


class ServerPolicy:
    def __init__(self, *, settings: Settings, repo: Repository, guard: Guard) -> None:
        self.settings = settings
        self.guard = guard
        self._repo = repo
        # Settings change only through update(): the cache is never stale in this process.
        self._cache: dict[int, ServerSettings] = {}

    async def server(self, guild_id: int | None) -> ServerSettings | None:
        if guild_id is None:
            return None
        if guild_id not in self._cache:
            self._cache[guild_id] = await self._repo.server_settings(guild_id)
        return self._cache[guild_id]

    # --- what a scene starts with --------------------------------------------------------------

    def mode(self, server: ServerSettings | None, asked: RenderMode | None = None) -> RenderMode:
        return asked or (server.mode if server else None) or RenderMode(self.settings.diffusion.mode)

    def steps(self, server: ServerSettings | None, asked: int | None = None) -> int:
        return asked or (server.steps if server else None) or self.settings.diffusion.steps

    def candidates(self, server: ServerSettings | None, asked: int | None = None) -> int:
        """Seeds a new scene's renders show: asked, the server's choice, else one image."""
        count = asked if asked is not None else (server.candidates if server else None) or 1
        check_candidates(count)
        return count

    def cap(self, server: ServerSettings | None) -> int:
        return (server.per_user_cap if server else None) or self.settings.queue.per_user_cap

    def refine(self, server: ServerSettings | None) -> Refine:
        """The server's choice over the bot's; always off where the bot loads no refiner."""
        bot = self.settings.diffusion.refine
        if bot is Refine.OFF:
            return Refine.OFF
        return (server.refine if server else None) or bot

    async def offers_refine(self, guild_id: int | None, job: JobRecord) -> bool:
        """Whether ``job``'s result gets a ✨ Refine button: its server refines on request, and
        its image is not refined already."""
        return not job.refine and self.refine(await self.server(guild_id)) is Refine.BUTTON

    # --- checks --------------------------------------------------------------------------------

    def user_text(self, text: str, what: str) -> str:
        """The text cleaned up; refused when empty or longer than ``layout.max_user_text_chars``."""
        cleaned = clean_text(text)
        if not cleaned:
            raise EmptyTextError(what)
        limit = self.settings.layout.max_user_text_chars
        if len(cleaned) > limit:
            raise TextTooLongError(len(cleaned), limit, what)
        return cleaned

    async def check_place(self, actor: Actor) -> ServerSettings | None:
        server = await self.server(actor.guild_id)
        self.guard.check_place(guild_id=actor.guild_id, channel_id=actor.channel_id, server=server)
        return server

    def check_cap(self, user_id: int, server: ServerSettings | None, active: int) -> None:
        """Refuse early (before asking the planner) when the user's ``active`` jobs (those the
        render tracker follows: no database read) use up their queue share; the job's own
        transaction counts them in the database and refuses too."""
        if active >= self.cap(server):
            raise CapReachedError(user_id, active)

    async def may_edit(self, actor: Actor, scene: SceneRecord) -> bool:
        if actor.user_id == scene.owner_id or actor.is_admin or scene.allow_everyone:
            return True
        return self.editors(await self.server(scene.guild_id)) == "everyone"

    def editors(self, server: ServerSettings | None) -> EditorsPolicy:
        return self.guard.editors(server)

    async def safety(self, guild_id: int | None, *, nsfw_channel: bool) -> SafetyPolicy:
        return self.guard.safety(await self.server(guild_id), nsfw_channel=nsfw_channel)

    # --- /settings -----------------------------------------------------------------------------

    async def view(self, guild_id: int) -> SettingsView:
        stored = await self.server(guild_id) or ServerSettings()
        return SettingsView(
            stored=stored,
            mode=self.mode(stored).value,
            steps=self.steps(stored),
            editors=self.editors(stored),
            safety=stored.safety or self.settings.guard.safety_policy,
            allowed_channel_ids=stored.allowed_channel_ids or list(self.settings.discord.allowed_channel_ids),
            per_user_cap=self.cap(stored),
            refine=self.refine(stored),
            candidates=self.candidates(stored),
        )

    async def update(self, actor: Actor, change: SettingsChange) -> SettingsView:
        """Admins only: apply ``change`` to the server's stored settings."""
        if not actor.is_admin or actor.guild_id is None:
            raise NotAdminError("not an admin")
        if change.refine not in (None, Refine.OFF) and self.settings.diffusion.refine is Refine.OFF:
            raise RefineOffError("refinement asked of a bot without a refiner")
        if change.candidates is not None:
            check_candidates(change.candidates)
        current = (
            ServerSettings() if change.reset else (await self.server(actor.guild_id) or ServerSettings())
        )
        fields = {
            name: value for name, value in change.model_dump(include=_FIELDS).items() if value is not None
        }
        channels = list(current.allowed_channel_ids)
        if change.allow_channel_id is not None and change.allow_channel_id not in channels:
            channels.append(change.allow_channel_id)
        if change.disallow_channel_id is not None and change.disallow_channel_id in channels:
            channels.remove(change.disallow_channel_id)
        updated = ServerSettings.model_validate(
            {**current.model_dump(), **fields, "allowed_channel_ids": channels}
        )
        if updated != await self.server(actor.guild_id) or change.reset:
            await self._repo.save_server_settings(actor.guild_id, updated, by=actor.user_id)
            self._cache[actor.guild_id] = updated
            log.info("server %s settings changed by %s: %s", actor.guild_id, actor.user_id, updated)
        return await self.view(actor.guild_id)
