"""The queue's keys and the Lua scripts that change several of them at once.

Under the prefix ``P`` (``queue.redis_prefix``):

- ``P:jobs``: a stream of the jobs handed to workers and not finished yet (fields ``job``,
  ``spec``), read through the consumer group ``workers``. An entry is pending for the worker that
  read it until that worker finishes it (acknowledged and deleted) or another worker claims it
  after its lease ran out (XAUTOCLAIM). The pair (entry id, delivery count) is the attempt's
  **fencing token**: it changes on every claim, and only its holder may publish.
- ``P:events``: a stream of job events (field ``e``: the event as JSON), read by the bot through
  the consumer group ``bot``; the bot deletes what it has handled, and the stream is capped.
- ``P:workers``: a sorted set of live workers, scored by when their registration runs out.
- ``P:cancel:<job>``: set when the owner cancels a job a worker is running.
- ``P:epoch``: a random value the bot writes; its absence means Redis lost its data.
- ``P:bot`` and ``P:worker:<name>``: holds, each a random token of the one bot serving the prefix
  and of the one worker by that name, with an expiry renewed on every heartbeat: a second bot or
  a second worker of the same name is refused, and a crashed one's hold runs out by itself.

Each script runs atomically, so a worker that lost its lease can never publish past the one that
claimed the job after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORKERS_GROUP = "workers"
BOT_GROUP = "bot"

# The Redis server's clock, in milliseconds (scripts may read it since Redis 5's effects replication).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Whether ``consumer`` holds the attempt (entry id, delivery count) of the jobs stream.
_OWNS = """
local function owns(jobs, id, consumer, count)
  if redis.call('EXISTS', jobs) == 0 then return false end
  local r = redis.pcall('XPENDING', jobs, 'workers', id, id, 1)
  if type(r) ~= 'table' or r.err or #r == 0 then return false end
  return r[1][2] == consumer and tostring(r[1][4]) == count
end
"""

# The entry id of ``job`` in the jobs stream (it holds a handful of entries: one per worker).
_FIND = """
local function find(jobs, job)
  if redis.call('EXISTS', jobs) == 0 then return nil end
  for _, e in ipairs(redis.call('XRANGE', jobs, '-', '+')) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'job' and f[i + 1] == job then return e[1] end
    end
  end
  return nil
end
"""

# Bot: hand a job to the workers if one is free. ARGV: epoch, job id, spec JSON.
# Returns -1 (Redis lost its data: the epoch is not ours), -2 (no live worker at all), 0 (every
# worker busy), or the entry id (also when the job is already there: a retried call must not add
# it twice).
DISPATCH = (
    _NOW
    + _FIND
    + """
local p = KEYS[1]
local jobs = p..':jobs'
if redis.call('GET', p..':epoch') ~= ARGV[1] then return -1 end
local existing = find(jobs, ARGV[2])
if existing then return existing end
redis.call('ZREMRANGEBYSCORE', p..':workers', '-inf', now)
local busy = 0
if redis.call('EXISTS', jobs) == 1 then
  busy = redis.call('XLEN', jobs)
else
  redis.call('XGROUP', 'CREATE', jobs, 'workers', '0', 'MKSTREAM')
end
local live = redis.call('ZCARD', p..':workers')
if live == 0 then return -2 end
if live <= busy then return 0 end
redis.call('DEL', p..':cancel:'..ARGV[2])
return redis.call('XADD', jobs, '*', 'job', ARGV[2], 'spec', ARGV[3])
"""
)

# Bot: cancel a job handed to the workers. ARGV: job id. A job no worker has read yet is taken
# back; a running one gets its cancel flag.
CANCEL = (
    _FIND
    + """
local p = KEYS[1]
local jobs = p..':jobs'
local id = find(jobs, ARGV[1])
if not id then return 'unknown' end
local r = redis.pcall('XPENDING', jobs, 'workers', id, id, 1)
if type(r) ~= 'table' or r.err or #r == 0 then
  redis.call('XDEL', jobs, id)
  return 'removed'
end
redis.call('SET', p..':cancel:'..ARGV[1], '1', 'EX', 86400)
return 'stopping'
"""
)

# Worker: take over the job of a worker whose lease ran out. ARGV: consumer, lease (ms).
# Returns nil or {entry id, fields, delivery count}.
CLAIM = """
local p = KEYS[1]
local jobs = p..':jobs'
if redis.call('EXISTS', jobs) == 0 then return nil end
local r = redis.pcall('XAUTOCLAIM', jobs, 'workers', ARGV[1], ARGV[2], '0-0', 'COUNT', 1)
if type(r) ~= 'table' or r.err or #r[2] == 0 then return nil end
local id, fields = r[2][1][1], r[2][1][2]
local pending = redis.call('XPENDING', jobs, 'workers', id, id, 1)
return {id, fields, pending[1][4]}
"""

# Worker: say it is alive (every heartbeat) and renew the lease of the attempt it runs.
# ARGV: consumer, registration ttl (ms), entry id ('' when idle), delivery count.
# Returns 1, or 0 when the attempt is no longer this worker's.
BEAT = (
    _NOW
    + _OWNS
    + """
local p = KEYS[1]
redis.call('ZADD', p..':workers', now + tonumber(ARGV[2]), ARGV[1])
if ARGV[3] == '' then return 1 end
local jobs = p..':jobs'
if not owns(jobs, ARGV[3], ARGV[1], ARGV[4]) then return 0 end
redis.call('XCLAIM', jobs, 'workers', ARGV[1], 0, ARGV[3], 'JUSTID')
return 1
"""
)

# Worker: publish an event of the attempt it holds; a final one also ends the attempt.
# ARGV: consumer, entry id, delivery count, event JSON, final (1/0), job id, events cap.
# Returns 1, or 0 when the attempt is no longer this worker's (the event is dropped).
PUBLISH = (
    _OWNS
    + """
local p = KEYS[1]
local jobs = p..':jobs'
if not owns(jobs, ARGV[2], ARGV[1], ARGV[3]) then return 0 end
redis.call('XADD', p..':events', 'MAXLEN', '~', ARGV[7], '*', 'e', ARGV[4])
if ARGV[5] == '1' then
  redis.call('XACK', jobs, 'workers', ARGV[2])
  redis.call('XDEL', jobs, ARGV[2])
  redis.call('DEL', p..':cancel:'..ARGV[6])
end
return 1
"""
)

# Worker: give a job back unfinished (the worker is stopping): a fresh entry any worker can read.
# ARGV: consumer, entry id, delivery count, job id, spec JSON, events cap.
RELEASE = (
    _OWNS
    + """
local p = KEYS[1]
local jobs = p..':jobs'
if not owns(jobs, ARGV[2], ARGV[1], ARGV[3]) then return 0 end
redis.call('XACK', jobs, 'workers', ARGV[2])
redis.call('XDEL', jobs, ARGV[2])
redis.call('XADD', jobs, '*', 'job', ARGV[4], 'spec', ARGV[5])
redis.call('XADD', p..':events', 'MAXLEN', '~', ARGV[6], '*', 'released', ARGV[4])
return 1
"""
)


# Bot or worker: take or renew a hold. KEYS[1]: the hold; ARGV: token, expiry (ms).
# Returns 1, or 0 when another token holds it.
HOLD = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Bot or worker, stopping: let go of its hold (and only its own). KEYS[1]: the hold; ARGV: token.
LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts registered on one client (redis-py reloads them after a Redis restart)."""

    dispatch: Any
    cancel: Any
    claim: Any
    beat: Any
    publish: Any
    release: Any
    hold: Any
    let_go: Any

    @classmethod
    def on(cls, client: Any) -> Scripts:
        return cls(
            dispatch=client.register_script(DISPATCH),
            cancel=client.register_script(CANCEL),
            claim=client.register_script(CLAIM),
            beat=client.register_script(BEAT),
            publish=client.register_script(PUBLISH),
            release=client.register_script(RELEASE),
            hold=client.register_script(HOLD),
            let_go=client.register_script(LET_GO),
        )


@dataclass(frozen=True)
class Keys:
    prefix: str

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def bot(self) -> str:
        return f"{self.prefix}:bot"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def cancel(self, job_id: int) -> str:
        return f"{self.prefix}:cancel:{job_id}"
