"""Discord adapters: thin cogs that turn interactions, messages and reactions into calls to
:mod:`lmd_bot.services`, and service views into messages. Modules starting with ``_`` are helpers,
not extensions."""

EXTENSIONS = ("cogs.imagine", "cogs.admin")
