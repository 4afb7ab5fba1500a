"""Subcommands of the ``lmd-bot`` CLI; see :mod:`lmd_bot.cli`."""
