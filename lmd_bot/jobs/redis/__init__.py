"""The scale-out queue on Redis Streams: the bot hands jobs to ``lmd-bot worker`` hosts.

- :mod:`.queue`: the bot's side (fair line in memory, one job per free worker, events in);
- :mod:`.worker`: a worker host (reads or claims a job, renders it, publishes fenced events);
- :mod:`.scripts`: the keys and the Lua scripts that change several of them at once;
- :mod:`.link`: the connection that waits out Redis restarts.
"""

from lmd_bot.jobs.redis.link import QueueUnavailableError
from lmd_bot.jobs.redis.queue import RedisJobQueue
from lmd_bot.jobs.redis.worker import RedisWorker

__all__ = ["QueueUnavailableError", "RedisJobQueue", "RedisWorker"]
