"""Entry point: start lmd-bot on the configured engines (``python bot.py``)."""

from __future__ import annotations

import logging
import sys

from lmd_bot.config import load_settings, require_secret
from lmd_bot.errors import ConfigError

log = logging.getLogger("lmd_bot")


def main() -> int:
    try:
        settings = load_settings()
        token = require_secret(
            settings.discord.token,
            "discord.token",
            "Create a bot in the Discord developer portal (Applications -> Bot -> Reset Token) "
            "and put the token in the environment or in a .env file.",
        )
    except ConfigError as exc:
        print(f"lmd-bot cannot start: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import discord

    client = discord.Client(intents=discord.Intents.default())
    client.run(token, log_handler=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
