"""Entry point: ``python bot.py [--sync-global]`` starts lmd-bot (as ``lmd-bot run`` does).

Start-up and shutdown are described in :mod:`cogs.bot`, which holds the Discord client.
"""

import sys

from cogs.bot import build_bot, main

__all__ = ["build_bot", "main"]

if __name__ == "__main__":
    sys.exit(main())
