"""``/queue``, ``/info`` and ``/settings``."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from cogs._common import actor_from_interaction
from cogs._format import info_embed, queue_embed, settings_embed
from cogs.imagine import MODES
from lmd_bot.rendering import MAX_CANDIDATES, Refine, RenderMode
from lmd_bot.services import SceneService, SettingsChange


class AdminCog(commands.Cog):
    def __init__(self, scenes: SceneService) -> None:
        self.scenes = scenes

    @app_commands.command(name="queue", description="What is rendering and who is waiting")
    async def queue(self, interaction: discord.Interaction) -> None:
        view = await self.scenes.queue_view(actor_from_interaction(interaction))
        await interaction.response.send_message(embed=queue_embed(view), ephemeral=True)

    @app_commands.command(name="info", description="Your recent images: seeds, rounds, status")
    async def info(self, interaction: discord.Interaction) -> None:
        jobs = await self.scenes.info(actor_from_interaction(interaction))
        await interaction.response.send_message(embed=info_embed(jobs), ephemeral=True)

    @app_commands.command(name="settings", description="Server defaults for lmd-bot (admins)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(
        mode="default drawing mode",
        steps="default denoising steps",
        editors="who may edit a scene: its owner or everyone",
        safety="what to do with images the safety checker flags",
        per_user_cap="most images one person may have queued",
        refine="SDXL refinement: off, on every image, or a ✨ Refine button on results",
        candidates="seeds a new scene shows as one grid to pick from (1: one image)",
        allow_channel="add a channel where /imagine works (none listed: everywhere)",
        disallow_channel="remove a channel from that list",
        reset="forget this server's settings and use the bot's defaults",
    )
    @app_commands.choices(
        mode=MODES,
        editors=[app_commands.Choice(name=v, value=v) for v in ("owner", "everyone")],
        safety=[app_commands.Choice(name=v, value=v) for v in ("spoiler", "withhold", "off")],
        refine=[app_commands.Choice(name=v.value, value=v.value) for v in Refine],
    )
    async def settings(
        self,
        interaction: discord.Interaction,
        mode: app_commands.Choice[str] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        editors: app_commands.Choice[str] | None = None,
        safety: app_commands.Choice[str] | None = None,
        per_user_cap: app_commands.Range[int, 1, 50] | None = None,
        refine: app_commands.Choice[str] | None = None,
        candidates: app_commands.Range[int, 1, MAX_CANDIDATES] | None = None,
        allow_channel: discord.TextChannel | None = None,
        disallow_channel: discord.TextChannel | None = None,
        reset: bool = False,
    ) -> None:
        change = SettingsChange(
            mode=RenderMode(mode.value) if mode else None,
            steps=steps,
            editors=editors.value if editors else None,
            safety=safety.value if safety else None,
            per_user_cap=per_user_cap,
            refine=Refine(refine.value) if refine else None,
            candidates=candidates,
            allow_channel_id=allow_channel.id if allow_channel else None,
            disallow_channel_id=disallow_channel.id if disallow_channel else None,
            reset=reset,
        )
        # Acknowledged first: a change is written to the database (which may be slow), and Discord
        # gives an interaction 3 seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        if change == SettingsChange():  # nothing asked: show the settings (to anyone)
            view = await self.scenes.server_settings(interaction.guild_id or 0)
        else:
            view = await self.scenes.update_server_settings(actor_from_interaction(interaction), change)
        await interaction.followup.send(embed=settings_embed(view), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(AdminCog(bot.scenes))  # type: ignore[attr-defined]
