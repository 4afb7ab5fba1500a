"""The database layer on SQLite and PostgreSQL: migrations, the repository's records and its
transactions."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import UTC, datetime

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from lmd_bot.db import Repository, open_database
from lmd_bot.db.engine import alembic_config
from lmd_bot.db.models import Base
from lmd_bot.db.records import NewJob
from lmd_bot.db.repository import CapReachedError, NotFoundError
from lmd_bot.errors import ConfigError, StorageError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode
from lmd_bot.scenes.models import JobStatus, MessageKind, RoundKind, ServerSettings
from tests.db.postgres import _free_port

LAYOUT = SceneLayout.model_validate(
    {"objects": [{"id": 1, "caption": "a red apple", "box": [40, 300, 90, 90]}], "background": "A table"}
)
BIG_ID = 1_234_567_890_123_456_789  # Discord snowflakes need 64-bit columns


@pytest.fixture
async def repo(db_url):
    db = open_database(db_url)
    await db.migrate()
    yield Repository(db)
    await db.close()


async def _scene(repo, owner=BIG_ID):
    return await repo.create_scene(
        owner_id=owner,
        guild_id=BIG_ID,
        channel_id=BIG_ID,
        prompt="a red apple",
        mode=RenderMode.LMD,
        steps=20,
        seed=2**32 - 1,
        nsfw=False,
        layout=LAYOUT,
        notes=["rescaled"],
    )


async def test_migrations_build_exactly_the_models_schema_and_run_twice(db_url):
    db = open_database(db_url)
    await db.migrate()
    await db.migrate()  # idempotent: already at head
    diff = await db.run(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    await db.close()
    assert diff == []


async def test_migrations_downgrade_to_nothing_and_back(sqlite_url):
    db = open_database(sqlite_url)
    await db.migrate()

    def down(connection):
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "base")

    await db.run(down)
    tables = await db.run(lambda c: c.dialect.get_table_names(c))
    assert set(tables) <= {"alembic_version"}
    await db.migrate()
    await db.close()


async def test_scene_with_first_round_and_records_round_trip(repo):
    scene, first = await _scene(repo)
    assert scene.head_round_id == first.id and scene.owner_id == BIG_ID and scene.seed == 2**32 - 1
    assert first.number == 1 and first.kind == RoundKind.PLAN and first.layout == LAYOUT
    assert first.notes == ["rescaled"] and first.created_at.tzinfo is not None
    job = NewJob(user_id=BIG_ID, guild_id=None, mode=RenderMode.SD, steps=5, cap=1)
    bound, round_, started = await repo.start_render(
        round_id=first.id, job=job, thread_id=BIG_ID + 1, plan_message_id=BIG_ID + 2
    )
    assert bound.thread_id == BIG_ID + 1 and round_ == first and started.seed == first.seed
    found = await repo.scene_by_thread(BIG_ID + 1)
    assert found.id == scene.id and found.plan_message_id == BIG_ID + 2
    assert (await repo.message(BIG_ID + 2)).round_id == first.id
    assert await repo.scene_by_thread(5) is None


async def test_starting_a_render_past_the_users_cap_writes_nothing(repo):
    scene, first = await _scene(repo)
    job = NewJob(user_id=7, guild_id=None, mode=RenderMode.SD, steps=5, cap=1)
    await repo.start_render(round_id=first.id, job=job)
    with pytest.raises(CapReachedError) as err:
        await repo.start_render(round_id=first.id, job=job, plan_message_id=BIG_ID)
    assert err.value.active == 1 and await repo.count_active_jobs(7) == 1
    assert await repo.message(BIG_ID) is None
    with pytest.raises(CapReachedError):
        await repo.add_round(
            scene_id=scene.id,
            parent_id=first.id,
            kind=RoundKind.REROLL,
            instruction="r",
            layout=LAYOUT,
            seed=3,
            job=job,
        )
    assert list(await repo.rounds(scene.id)) == [first.id]


async def test_rounds_number_in_order_and_move_the_head_with_their_job(repo):
    scene, first = await _scene(repo)
    job_fields = NewJob(user_id=BIG_ID, guild_id=None, mode=RenderMode.SD, steps=5, cap=1)
    moved, second, job = await repo.add_round(
        scene_id=scene.id,
        parent_id=first.id,
        kind=RoundKind.REROLL,
        instruction="reroll",
        layout=LAYOUT,
        seed=77,
        job=job_fields,
    )
    _, third, none = await repo.add_round(
        scene_id=scene.id, parent_id=first.id, kind=RoundKind.REVISE, instruction="x", layout=LAYOUT, seed=78
    )
    assert (second.number, third.number) == (2, 3) and none is None
    assert job.round_id == second.id and job.seed == 77 and job.status == JobStatus.QUEUED
    assert moved.head_round_id == second.id and moved.seed == 77
    after = await repo.scene(scene.id)
    assert after.head_round_id == third.id and after.seed == 78
    assert set(await repo.rounds(scene.id)) == {first.id, second.id, third.id}


async def test_a_round_under_a_foreign_parent_writes_nothing(repo):
    scene, first = await _scene(repo)
    _, other_first = await _scene(repo)
    with pytest.raises(NotFoundError):
        await repo.add_round(
            scene_id=scene.id,
            parent_id=other_first.id,
            kind=RoundKind.REVISE,
            instruction="x",
            layout=LAYOUT,
            seed=1,
            job=NewJob(user_id=1, guild_id=None, mode=RenderMode.LMD, steps=5, cap=1),
        )
    assert list(await repo.rounds(scene.id)) == [first.id]
    assert await repo.count_active_jobs(1) == 0
    assert (await repo.scene(scene.id)).head_round_id == first.id


async def test_job_lifecycle_counts_and_races(repo):
    scene, first = await _scene(repo)
    job = await repo.create_job(
        scene_id=scene.id, round_id=first.id, user_id=9, guild_id=None, mode=RenderMode.LMD, steps=5, seed=1
    )
    assert await repo.count_active_jobs(9) == 1
    assert [j.id for j in await repo.jobs_with_status(JobStatus.QUEUED)] == [job.id]
    cancelled = await repo.finish_job_if_active(job.id, JobStatus.CANCELLED, error="by owner")
    assert cancelled.status == JobStatus.CANCELLED and cancelled.finished_at is not None
    # A late "done" from the worker must not resurrect a cancelled job.
    assert await repo.finish_job_if_active(job.id, JobStatus.DONE) is None
    assert (await repo.job(job.id)).status == JobStatus.CANCELLED
    assert await repo.count_active_jobs(9) == 0
    assert [j.id for j in await repo.recent_jobs_of_user(9)] == [job.id]
    with pytest.raises(NotFoundError):
        await repo.job(12345)


async def test_message_links_and_server_settings(repo):
    scene, first = await _scene(repo)
    await repo.link_message(BIG_ID, scene_id=scene.id, round_id=first.id, job_id=None, kind=MessageKind.PLAN)
    await repo.link_message(
        BIG_ID, scene_id=scene.id, round_id=first.id, job_id=None, kind=MessageKind.RESULT
    )
    ref = await repo.message(BIG_ID)
    assert ref.round_id == first.id and ref.kind == MessageKind.RESULT
    assert await repo.message(1) is None
    assert await repo.server_settings(BIG_ID) == ServerSettings()
    chosen = ServerSettings(mode=RenderMode.SD, steps=9, editors="everyone", allowed_channel_ids=[BIG_ID])
    await repo.save_server_settings(BIG_ID, chosen, by=1)
    await repo.save_server_settings(BIG_ID, chosen.model_copy(update={"steps": 10}), by=2)
    assert (await repo.server_settings(BIG_ID)).steps == 10
    assert (await repo.server_settings(BIG_ID)).allowed_channel_ids == [BIG_ID]


def test_database_urls_need_an_async_driver_and_do_not_leak_passwords():
    with pytest.raises(ConfigError) as err:
        open_database("postgresql://user:hunter2@localhost/db")
    assert "asyncpg" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(ConfigError):
        open_database("sqlite:///x.db")
    with pytest.raises(ConfigError) as err:
        open_database("not a url at all :: hunter2")
    assert "hunter2" not in str(err.value)


async def test_a_refine_job_is_made_once_per_image_until_one_fails(repo):
    _, first = await _scene(repo)
    new = NewJob(user_id=BIG_ID, guild_id=BIG_ID, mode=RenderMode.LMD, steps=20, cap=5)
    _, _, source = await repo.start_render(round_id=first.id, job=new)
    refine = NewJob(user_id=BIG_ID, guild_id=BIG_ID, mode=RenderMode.LMD, steps=20, cap=5, refine=True)
    job, created = await repo.start_refine(source.id, refine)
    assert created and job.refine and job.refine_of == source.id
    assert (job.round_id, job.seed, job.status) == (first.id, source.seed, JobStatus.QUEUED)
    assert await repo.start_refine(source.id, refine) == (job, False)  # queued: the same job
    await repo.finish_job_if_active(job.id, JobStatus.DONE)
    assert (await repo.start_refine(source.id, refine))[0].id == job.id  # done: still the same
    await repo.update_job(job.id, status=JobStatus.FAILED)
    again, created = await repo.start_refine(source.id, refine)  # failed: pressed again, a new one
    assert created and again.id != job.id
    _, _, other = await repo.start_render(round_id=first.id, job=new)
    with pytest.raises(CapReachedError):  # the source, the refinement and the other are queued
        await repo.start_refine(other.id, dataclasses.replace(refine, cap=3))
    with pytest.raises(NotFoundError):
        await repo.start_refine(10**6, refine)


async def test_many_writes_at_once_all_land_in_order_of_their_round_numbers(repo):
    """Twenty rounds added to one scene at the same moment (the single writer on SQLite, row locks
    and our turn-taking on PostgreSQL): all stored, numbered 2..21 without a gap or a repeat."""
    scene, first = await _scene(repo)
    job = NewJob(user_id=5, guild_id=None, mode=RenderMode.LMD, steps=5, cap=100)
    added = await asyncio.gather(
        *(
            repo.add_round(
                scene_id=scene.id,
                parent_id=first.id,
                kind=RoundKind.REVISE,
                instruction=f"edit {n}",
                layout=LAYOUT,
                seed=n,
                job=job,
            )
            for n in range(20)
        )
    )
    assert sorted(r.number for _, r, _ in added) == list(range(2, 22))
    assert await repo.count_active_jobs(5) == 20


async def test_a_sqlite_file_locked_by_another_process_is_waited_for_off_the_event_loop(tmp_path):
    """Another connection holds the write lock for a moment: the write waits for it in a thread
    (counted in ``waits``) and lands, while the event loop keeps running meanwhile."""
    path = tmp_path / "test.sqlite3"
    db = open_database(f"sqlite+aiosqlite:///{path}", busy_timeout_s=10)
    await db.migrate()
    repo = Repository(db)
    scene, _ = await _scene(repo)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    write = asyncio.create_task(repo.set_allow_everyone(scene.id, True))
    await asyncio.sleep(0.3)
    assert not write.done() and ticks >= 5  # the write waits, the loop does not
    other.execute("COMMIT")
    other.close()
    await write
    ticker.cancel()
    assert (await repo.scene(scene.id)).allow_everyone and db.waits == 1
    await db.close()


async def test_a_scenes_tree_reads_rounds_as_stored_even_after_they_were_seen(db_url):
    """Rounds seen before are not parsed again, but a round the database holds differently (its
    id reused by a row written elsewhere) is read as stored, and new rounds appear."""
    db = open_database(db_url)
    await db.migrate()
    repo, other = Repository(db), Repository(db)  # another writer the first one does not hear of
    scene, first = await _scene(repo)
    _, tree = await repo.scene_tree(scene.id)
    assert tree == {first.id: first}
    _, second, _ = await other.add_round(
        scene_id=scene.id, parent_id=first.id, kind=RoundKind.REVISE, instruction="a", layout=LAYOUT, seed=5
    )
    scene, tree = await repo.scene_tree(scene.id)
    assert tree == {first.id: first, second.id: second} and scene.head_round_id == second.id
    moved = LAYOUT.model_copy(update={"background": "A beach"})

    def rewrite(connection):
        connection.execute(
            text("UPDATE rounds SET layout = :layout, created_at = :at WHERE id = :id"),
            {"layout": moved.model_dump_json(), "at": datetime(2030, 1, 1, tzinfo=UTC), "id": second.id},
        )

    await db.run(rewrite)
    _, tree = await repo.scene_tree(scene.id)
    assert tree[second.id].layout.background == "A beach" and tree[first.id] == first
    await db.close()


async def test_a_postgresql_server_that_cannot_serve_now_is_a_storage_error(postgres_root, postgres_url):
    """Down, out of connections, or a standby after a failover (read-only): the user used to get a
    generic failure, and a finished render's result was dropped instead of being retried and
    recorded later (what the tracker does on a StorageError). Nothing is half-written."""
    plain = postgres_root.replace("postgresql+asyncpg://", "postgresql://")
    name = postgres_url.rsplit("/", 1)[1]
    db = open_database(postgres_url)
    await db.migrate()
    repo = Repository(db)
    admin = await asyncpg.connect(f"{plain}/postgres")
    try:
        await repo.save_server_settings(BIG_ID, ServerSettings(steps=5), by=1)
        # A standby: every new session is read-only.
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        with pytest.raises(StorageError):
            await repo.save_server_settings(BIG_ID, ServerSettings(steps=9), by=1)
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        assert (await repo.server_settings(BIG_ID)).steps == 5
        # Out of connections: the bot's role may open none.
        await admin.execute("CREATE ROLE lmd_capped LOGIN CONNECTION LIMIT 0")
        capped = open_database(postgres_url.replace("postgres@", "lmd_capped@"))
        try:
            with pytest.raises(StorageError):
                await Repository(capped).server_settings(BIG_ID)
        finally:
            await capped.close()
            await admin.execute("DROP ROLE lmd_capped")
    finally:
        await admin.close()
        await db.close()
    # Down: nothing listens on its port.
    gone = open_database(f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/{name}")
    try:
        with pytest.raises(StorageError):
            await Repository(gone).server_settings(BIG_ID)
    finally:
        await gone.close()
