"""A bot core that queues two jobs, says so, and waits to be killed (run as a subprocess by the
restart test: ``python -m tests.services.crashing_bot TMP_PATH``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from lmd_bot.services import StatusView
from tests.jobs.renderers import spec
from tests.services.conftest import ALICE, BOB, running_core


async def main(tmp_path: Path) -> None:
    async with running_core(tmp_path, renderer=spec("gated", folder=str(tmp_path / "gate"))) as (app, notes):
        ids = []
        for actor, seed in ((ALICE, 1), (BOB, 2)):
            plan = await app.scenes.imagine(actor, "a red apple", notes, seed=seed)
            ids.append(plan.job.id)
        await notes.wait_for(lambda u: isinstance(u, StatusView) and u.state == "running")
        print(*ids, flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
