"""Fakes of the network services lmd-bot talks to, served by aiohttp on 127.0.0.1 for tests.

- :class:`tests.fakes.fake_anthropic.FakeAnthropic`: Anthropic's Messages API (``/v1/messages``);
- :class:`tests.fakes.fake_openai.FakeOpenAI`: OpenAI-compatible chat completions.

Both are a :class:`ScriptedServer`: an async context manager that starts the server on a free
port, answers each request with the next scripted :class:`Reply` (in order), and records what
it received (:attr:`ScriptedServer.received`). A request with nothing scripted gets a 418 whose
message says so, so a test that sends more requests than it expects fails loudly.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from aiohttp import web


@dataclass
class Received:
    """One request the fake received. ``headers`` have lower-case names; ``body`` is the parsed
    JSON (or the raw text when it is not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    """A scripted answer.

    ``behaviour``: ``answer`` sends ``status``, ``headers`` and ``body`` (JSON; a callable gets the
    :class:`Received` request and returns the body); ``hang`` never answers (until the server
    closes); ``stall`` sends the status line, headers and half a body, then goes silent.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    behaviour: Literal["answer", "hang", "stall"] = "answer"


class ScriptedServer:
    """Base of the fakes: ``async with Fake() as fake: ...`` serves ``fake.base_url``."""

    route: ClassVar[str]

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.received: list[Received] = []
        #: Answer every request that finds the script empty with this (e.g. a server that is always down).
        self.always: Reply | None = None
        self.base_url = ""
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- scripting -----------------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def push_hang(self) -> None:
        """The next request is accepted and never answered."""
        self.push(Reply(behaviour="hang"))

    def push_stall(self) -> None:
        """The next request gets headers and half a body, then silence."""
        self.push(Reply(behaviour="stall"))

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies received, in order."""
        return [r.body for r in self.received]

    # --- hooks for subclasses ------------------------------------------------------------------

    def check(self, request: Received) -> Reply | None:
        """A reply that rejects the request before the script is consulted (auth, bad input)."""
        return None

    def unscripted(self, request: Received) -> Reply:
        return Reply(418, {"error": {"type": "fake_error", "message": "fake server: nothing scripted"}})

    # --- serving -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", self.route, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # wakes hanging and stalled handlers so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        text = await request.text()
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        received = Received(
            request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body
        )
        self.received.append(received)
        reply = self.check(received)
        if reply is None:
            reply = self.script.popleft() if self.script else self.always or self.unscripted(received)
        if reply.behaviour == "hang":
            await self._closing.wait()
            return web.Response(status=503)
        if reply.behaviour == "stall":
            response = web.StreamResponse(
                status=200, headers={"content-type": "application/json", "content-length": "4096"}
            )
            await response.prepare(request)
            await response.write(b'{"id": "stalled", "content": [')
            await self._closing.wait()
            return response
        payload = reply.body(received) if callable(reply.body) else reply.body
        return web.json_response(payload, status=reply.status, headers=reply.headers)
