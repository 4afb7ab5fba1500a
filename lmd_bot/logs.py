"""How lmd-bot's processes log: one line per record on stderr, in one format, for our modules and
the libraries under them. The CLI, the bot and the GPU worker process each call
:func:`configure_logging` at start."""

from __future__ import annotations

import logging

# Bookkeeping at INFO that tells an operator nothing, nine lines at every start: alembic names its
# plugins, its dialect and its DDL mode. The migrations it runs stay in the log.
_CHATTY_LINES = {
    "alembic.runtime.plugins": ("setup plugin ",),
    "alembic.runtime.migration": ("Context impl ", "Will assume "),
}


class _DropChatter(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(self.prefixes)


def configure_logging(level: str, *, process: str = "") -> None:
    """Log records at ``level`` and above on stderr, each line with its time, level, ``process``
    (which of lmd-bot's processes wrote it, where several share a terminal) and logger; called
    again (the bot after the CLI), the later level wins. ``DEBUG`` keeps the libraries' chatter."""
    where = f"{process} " if process else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    for name, prefixes in _CHATTY_LINES.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropChatter)]:
            logger.removeFilter(old)
        if logging.getLogger().level > logging.DEBUG:
            logger.addFilter(_DropChatter(prefixes))
    # huggingface_hub writes through a stderr handler of its own and then passes every record on
    # to ours: each download retry was printed twice, once without a time.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.get_logger().handlers.clear()
