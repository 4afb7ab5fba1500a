"""Round-robin fairness of the in-memory queue."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lmd_bot.jobs.fair import FairQueue
from lmd_bot.jobs.models import QueuedJob


def _job(job_id: int, user: int) -> QueuedJob:
    return QueuedJob(job_id=job_id, user_id=user)


def test_users_take_turns_instead_of_first_come_first_served():
    q = FairQueue()
    for job_id, user in [(1, 10), (2, 10), (3, 10), (4, 20), (5, 30), (6, 20)]:
        q.push(_job(job_id, user))
    assert [j.job_id for j in q.order()] == [1, 4, 5, 2, 6, 3]
    assert [q.pop().job_id for _ in range(6)] == [1, 4, 5, 2, 6, 3]
    assert q.pop() is None and len(q) == 0


def test_a_newcomer_waits_at_most_one_turn_of_each_user():
    q = FairQueue()
    for job_id in range(1, 6):
        q.push(_job(job_id, 10))
    assert q.pop().job_id == 1  # user 10's first job is running: that was their turn
    q.push(_job(99, 20))
    assert [j.job_id for j in q.order()][:3] == [99, 2, 3]


def test_remove_frees_a_place_and_forgets_empty_lines():
    q = FairQueue()
    q.push(_job(1, 10))
    q.push(_job(2, 20))
    assert q.remove(1).job_id == 1 and q.remove(1) is None
    assert 2 in q and 1 not in q and q.count_for(10) == 0
    assert [j.job_id for j in q.order()] == [2]


@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), max_size=60))
def test_order_always_predicts_pop(ops):
    """Whatever was pushed and popped before, ``order()`` is exactly what pops hand out next."""
    q = FairQueue()
    next_id = 0
    for user, pop in ops:
        if pop:
            q.pop()
        else:
            next_id += 1
            q.push(_job(next_id, user))
    predicted = [j.job_id for j in q.order()]
    popped = []
    while (job := q.pop()) is not None:
        popped.append(job.job_id)
    assert popped == predicted


def test_a_user_whose_job_just_started_waits_behind_a_newcomer():
    """The worker took Alice's first job at once, so her next two start a new line; Bob, who
    queues after them, still goes next (this order depended on the worker's timing)."""
    q = FairQueue()
    q.push(_job(1, 10))
    assert q.pop().job_id == 1  # running
    q.push(_job(2, 10))
    q.push(_job(3, 10))
    q.push(_job(4, 20))
    assert [j.job_id for j in q.order()] == [4, 2, 3]
    q.push(_job(5, 30))  # a second newcomer queues behind the first, still ahead of Alice
    assert [q.pop().job_id for _ in range(4)] == [4, 5, 2, 3]
