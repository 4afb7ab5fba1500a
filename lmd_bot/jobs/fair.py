"""Round-robin across users: each user's jobs wait in their own line, and the lines take turns.

A user who queues five jobs does not hold up a user who queues one after them: the second user's
job runs after at most one of the first user's (counting the one running). Turns go to the user
served least recently, so a user whose job just started waits behind one who joins after it,
whether or not the first user's line was empty in between (when the worker took their first job
at once, their next jobs start a new line, which must not jump ahead of a newcomer).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from lmd_bot.jobs.models import QueuedJob


class FairQueue:
    def __init__(self) -> None:
        # Users in turn order; each maps to their waiting jobs, oldest first.
        self._lines: OrderedDict[int, deque[QueuedJob]] = OrderedDict()
        # The turn order's key per waiting user: when they were last served (pops counted), or
        # for a user who joins, just before the latest pop (behind everyone but its user).
        self._turn: dict[int, float] = {}
        self._pops = 0
        self._last_served: int | None = None  # the user the latest pop served

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def __contains__(self, job_id: object) -> bool:
        return any(job.job_id == job_id for line in self._lines.values() for job in line)

    def push(self, job: QueuedJob) -> None:
        # A user already waiting keeps their turn; one joining goes behind every waiting user but
        # the one served last (who may be the joiner themselves).
        line = self._lines.get(job.user_id)
        if line is not None:
            line.append(job)
            return
        turn = self._pops if job.user_id == self._last_served else self._pops - 0.5
        self._turn[job.user_id] = turn
        self._lines[job.user_id] = deque([job])
        behind = [user for user in self._lines if self._turn[user] > turn]
        for user in behind:  # keep the order sorted by turn
            self._lines.move_to_end(user)

    def push_front(self, job: QueuedJob) -> None:
        """Put a job back first in line: it already waited its turn once (its worker was lost)."""
        line = self._lines.pop(job.user_id, deque())
        line.appendleft(job)
        self._lines[job.user_id] = line
        self._lines.move_to_end(job.user_id, last=False)
        self._turn[job.user_id] = min(self._turn.values(), default=0.0) - 1

    def peek(self) -> QueuedJob | None:
        """The job :meth:`pop` would hand out next, left in place."""
        if not self._lines:
            return None
        return next(iter(self._lines.values()))[0]

    def pop(self) -> QueuedJob | None:
        if not self._lines:
            return None
        user, line = next(iter(self._lines.items()))
        job = line.popleft()
        del self._lines[user]
        self._pops += 1
        self._last_served = user
        if line:
            self._lines[user] = line  # back of the turn order
            self._turn[user] = self._pops
        else:
            del self._turn[user]
        return job

    def remove(self, job_id: int) -> QueuedJob | None:
        for user, line in self._lines.items():
            for job in line:
                if job.job_id == job_id:
                    line.remove(job)
                    if not line:
                        del self._lines[user]
                        del self._turn[user]
                    return job
        return None

    def order(self) -> list[QueuedJob]:
        """Every waiting job in the order :meth:`pop` would hand them out."""
        lines = [deque(line) for line in self._lines.values()]
        out: list[QueuedJob] = []
        while lines:
            remaining = []
            for line in lines:
                out.append(line.popleft())
                if line:
                    remaining.append(line)
            lines = remaining
        return out

    def count_for(self, user_id: int) -> int:
        return len(self._lines.get(user_id, ()))
