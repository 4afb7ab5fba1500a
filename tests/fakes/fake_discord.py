"""A fake of Discord's REST API on 127.0.0.1, for the real discord.py HTTP layer to talk to.

discord.py sends every REST call (bot calls, interaction callbacks, webhooks) to
``discord.http.Route.BASE``; :meth:`FakeDiscordAPI.pointed_at` points it here and puts it back::

    async with FakeDiscordAPI() as api, api.pointed_at():
        guild = api.add_guild()
        text = api.add_channel(guild, "art")
        await bot.login("token")              # GET /users/@me, the app info, setup_hook's syncs
        ...
        [post] = api.requests_to("POST", f"/channels/{text}/messages")
        post.json["content"], post.files[0].filename, post.json["allowed_mentions"]

It keeps what Discord keeps (guilds, channels and threads, messages with their attachments and
reactions, synced commands) and answers as Discord does: message JSON as Discord returns it,
threads opened from messages (the thread's id is the message's), the interaction callback with
``with_response``, and its errors (``{"code": ..., "message": ...}`` with the HTTP status):

- a write in an archived thread (send, edit, react): 400, code 50083; unarchiving a locked
  thread (``PATCH /channels/{id}``): 403, code 50013;
- an unknown channel or message: 404, codes 10003 / 10008;
- a thread from a message outside a text or news channel: 400, code 50024;
- a reply to a message that was deleted (:meth:`FakeDiscordAPI.delete_message`): 400, code 50035
  (``message_reference``: unknown message), unless the reply's reference has
  ``fail_if_not_exists: false``: then it is posted as a plain message;
- an interaction answered (its callback) later than :attr:`FakeDiscordAPI.interaction_window_s`
  after it was made (:meth:`FakeDiscordAPI.new_interaction`): 404, code 10062, as Discord's
  3 seconds (the user saw "This interaction failed"); follow-ups stay possible after a callback;
  the first follow-up after a deferred "thinking…" answer becomes that message (public or private
  as the deferral said, pinging nobody), later ones are messages of their own;
- scripted failures: :meth:`FakeDiscordAPI.fail` (any status and code, e.g. 403/50001 for a
  command sync) and :meth:`FakeDiscordAPI.rate_limit` (429 with ``retry_after``, which
  discord.py waits out and retries);
- permissions an admin takes from the bot in a channel (:meth:`FakeDiscordAPI.deny`): an upload
  without Attach Files, or an embed without Embed Links, there or in its threads: 403, 50013.

Files users attach (:meth:`FakeDiscordAPI.add_file`) are served as the CDN serves them, at the
attachment's ``url`` (a file gone from the CDN: 404).

Every request is recorded (:attr:`FakeDiscordAPI.requests`): method, path (below ``/api/v10``),
query, JSON body (``payload_json`` of a multipart upload) and uploaded files. Threads created or
changed here are reported to :attr:`FakeDiscordAPI.on_gateway` as the gateway would
(``THREAD_CREATE``, ``THREAD_UPDATE``, ``CHANNEL_UPDATE``), so a test can feed them to the bot's state.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import discord.http
from aiohttp import web

API = "/api/v10"
BOT_ID = 4242
APP_ID = 4343
ARCHIVED = 50083
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
WRONG_CHANNEL_TYPE = 50024
INVALID_FORM_BODY = 50035
EPHEMERAL = 1 << 6

TEXT, DM, VOICE, NEWS, STAGE, FORUM = 0, 1, 2, 5, 13, 15
THREAD_TYPES = (10, 11, 12)


@dataclass
class Upload:
    """A file of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Request:
    """One request as Discord would receive it."""

    method: str
    path: str  # below /api/v10, e.g. /channels/10/messages
    query: dict[str, str]
    json: Any
    files: list[Upload] = field(default_factory=list)
    status: int = 0  # what the fake answered


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakeDiscordAPI:
    """The fake (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> commands
        self.interactions: dict[str, dict[str, Any]] = {}  # token -> {"id", "channel_id", "original"}
        self.files: dict[int, bytes] = {}  # attachment id -> what the CDN serves
        # Seconds an interaction may wait for its callback (Discord: 3); None: no limit, so the
        # tests' handlers are not timed on a busy machine unless a test asks.
        self.interaction_window_s: float | None = None
        self.on_gateway: Callable[[str, dict[str, Any]], None] | None = None
        self.base_url = ""
        self._failures: list[_Failure] = []
        self._denied: dict[int, discord.Permissions] = {}  # channel id -> what the bot may not do
        self._ids = itertools.count(900_000_000)
        self._runner: web.AppRunner | None = None
        self.bot_user = {
            "id": str(BOT_ID),
            "username": "lmd-bot",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
        }

    # --- the world ------------------------------------------------------------------------------

    def new_id(self) -> int:
        return next(self._ids)

    def add_guild(self, *, guild_id: int | None = None, everyone: discord.Permissions | None = None) -> int:
        """A server where ``@everyone`` has a member's usual permissions (``everyone``) and the bot
        its own role with every permission."""
        gid = guild_id or self.new_id()
        member = discord.Permissions.text() | discord.Permissions(
            view_channel=True, create_public_threads=True
        )
        member.update(manage_messages=False, manage_threads=False, mention_everyone=False)
        # The bot's role: every permission but Administrator, which would override channel denials.
        bot = discord.Permissions.all()
        bot.administrator = False
        everyone = everyone if everyone is not None else member
        roles = [(gid, "@everyone", everyone, False), (gid + 1, "lmd-bot", bot, True)]
        self.guilds[gid] = {
            "id": str(gid),
            "name": "Test server",
            "owner_id": "1",
            "roles": [
                {
                    "id": str(rid),
                    "name": name,
                    "permissions": str(perms.value),
                    "position": 1 if managed else 0,
                    "color": 0,
                    "hoist": False,
                    "managed": managed,
                    "mentionable": False,
                    "flags": 0,
                }
                for rid, name, perms, managed in roles
            ],
            "emojis": [],
            "stickers": [],
            "features": [],
            "premium_tier": 0,
            "member_count": 2,
            "channels": [],
            "threads": [],
            "members": [
                {
                    "user": self.bot_user,
                    "roles": [str(gid + 1)],
                    "joined_at": _now(),
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                }
            ],
        }
        return gid

    def add_channel(
        self, guild_id: int | None, name: str = "art", *, type: int = TEXT, nsfw: bool = False
    ) -> int:
        cid = self.new_id()
        data: dict[str, Any] = {"id": str(cid), "type": type, "name": name, "nsfw": nsfw}
        if guild_id is not None:
            data.update(
                guild_id=str(guild_id),
                position=len(self.guilds[guild_id]["channels"]),
                permission_overwrites=[],
                parent_id=None,
                rate_limit_per_user=0,
                last_message_id=None,
            )
            if type in (VOICE, STAGE):
                data.update(bitrate=64000, user_limit=0, rtc_region=None)
            if type == FORUM:
                data.update(available_tags=[], default_reaction_emoji=None, flags=0)
            self.guilds[guild_id]["channels"].append(data)
        else:
            data["recipients"] = [{"id": "1", "username": "user1", "discriminator": "0", "avatar": None}]
        self.channels[cid] = data
        return cid

    def archive(self, thread_id: int, *, locked: bool = False, tell_gateway: bool = True) -> None:
        """Archive a thread (as Discord does after inactivity, or a moderator); the gateway hears
        of it unless ``tell_gateway`` is false (the bot was offline, or missed the event)."""
        meta = self.channels[thread_id]["thread_metadata"]
        meta.update(archived=True, locked=locked, archive_timestamp=_now())
        if tell_gateway:
            self._emit("THREAD_UPDATE", self.channels[thread_id])

    def deny(self, channel_id: int, **permissions: bool) -> None:
        """An admin takes ``permissions`` (e.g. ``attach_files=True``) from the bot in a channel:
        a deny overwrite on the bot's role, which the gateway reports (``CHANNEL_UPDATE``), and
        Discord then refuses what needs them there and in the channel's threads (403, 50013)."""
        channel = self.channels[channel_id]
        denied = discord.Permissions(**permissions)
        role = int(channel["guild_id"]) + 1
        channel["permission_overwrites"] = [
            {"id": str(role), "type": 0, "allow": "0", "deny": str(denied.value)}
        ]
        self._denied[channel_id] = denied
        self._emit("CHANNEL_UPDATE", channel)

    def _permitted(self, r: Request) -> None:
        """Refuse a write the bot's permissions in its channel (a thread: its parent's) forbid."""
        match = re.fullmatch(r"/channels/(\d+)(?:/.*)?", r.path)
        if match is None or r.method not in ("POST", "PATCH"):
            return
        channel = self.channels.get(int(match[1]), {})
        denied = self._denied.get(int(channel.get("parent_id") or match[1]))
        if denied is None:
            return
        body = r.json if isinstance(r.json, dict) else {}
        if (denied.attach_files and r.files) or (denied.embed_links and body.get("embeds")):
            raise DiscordError(403, MISSING_PERMISSIONS, "Missing Permissions")

    def add_file(self, filename: str, data: bytes) -> dict[str, Any]:
        """A file a user attaches to a message: its attachment JSON, its bytes on the CDN."""
        aid = self.new_id()
        self.files[aid] = data
        return {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": f"{self.base_url}/cdn/{aid}/{filename}",
            "proxy_url": f"{self.base_url}/cdn/{aid}/{filename}",
        }

    def new_interaction(self, token: str, interaction_id: int, kind: int, channel_id: int) -> None:
        """An interaction Discord delivers now: its callback is due within the window."""
        self.interactions[token] = {
            "id": interaction_id,
            "type": kind,
            "channel_id": channel_id,
            "made": time.monotonic(),
        }

    def delete_message(self, message_id: int) -> None:
        """A message deleted by its author (or a moderator)."""
        self.messages.pop(message_id)

    def delete_channel(self, channel_id: int) -> None:
        self.channels.pop(channel_id)

    def messages_in(self, channel_id: int) -> list[dict[str, Any]]:
        """The channel's messages as they are now (edits applied, deletions gone), oldest first."""
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id]

    def threads(self) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["type"] in THREAD_TYPES]

    # --- scripting ------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        code: int,
        message: str,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``times`` requests whose method matches and whose path matches the regex
        ``path`` (in full) get this error."""
        body = {"code": code, "message": message}
        self._failures.append(_Failure(method, re.compile(path), status, body, headers or {}, times))

    def rate_limit(self, method: str, path: str, retry_after: float, *, times: int = 1) -> None:
        """429s as Discord sends them (through its proxy: a ``Via`` header, JSON body)."""
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        self._failures.append(
            _Failure(method, re.compile(path), 429, body, {"Via": "1.1 google", "Retry-After": "1"}, times)
        )

    # --- inspection -----------------------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[Request]:
        """Recorded requests with this method whose path matches the regex ``path`` in full."""
        pattern = re.compile(path)
        return [r for r in self.requests if r.method == method and pattern.fullmatch(r.path)]

    # --- serving --------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", API + "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{API}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @contextlib.contextmanager
    def pointed_at(self) -> Iterator[None]:
        """discord.py's REST calls go here inside the block; the real base is restored after."""
        old = discord.http.Route.BASE
        discord.http.Route.BASE = self.base_url
        try:
            yield
        finally:
            discord.http.Route.BASE = old

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await self._read(request)
        record = Request(request.method, path, dict(request.query), body, files)
        self.requests.append(record)
        for failure in self._failures:
            if failure.times > 0 and failure.method == request.method and failure.path.fullmatch(path):
                failure.times -= 1
                record.status = failure.status
                return _json(failure.body, failure.status, failure.headers)
        if match := re.fullmatch(r"/cdn/(\d+)/[^/]+", path):
            data = self.files.get(int(match[1]))
            record.status = 200 if data is not None else 404
            return web.Response(body=data, status=200) if data is not None else web.Response(status=404)
        try:
            self._permitted(record)
            status, payload = self._route(record)
        except DiscordError as exc:
            record.status = exc.status
            body = {"code": exc.code, "message": exc.message}
            return _json(body | ({"errors": exc.errors} if exc.errors else {}), exc.status)
        record.status = status
        if payload is None:
            return web.Response(status=204)
        return _json(payload, status)

    @staticmethod
    async def _read(request: web.Request) -> tuple[Any, list[Upload]]:
        if request.content_type.startswith("multipart/"):
            body: Any = None
            files: list[Upload] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(data)
                else:
                    files.append(
                        Upload(
                            part.name or "",  # type: ignore[union-attr]
                            part.filename or "",  # type: ignore[union-attr]
                            part.headers.get("Content-Type", ""),  # type: ignore[union-attr]
                            bytes(data),
                        )
                    )
            return body, files
        text = await request.text()
        return (json.loads(text) if text else None), []

    # --- the API --------------------------------------------------------------------------------

    def _route(self, r: Request) -> tuple[int, Any]:
        m, p = r.method, r.path
        if (m, p) == ("GET", "/users/@me"):
            return 200, self.bot_user
        if (m, p) == ("GET", "/oauth2/applications/@me"):
            return 200, self._app_info()

        if match := re.fullmatch(r"/applications/\d+(?:/guilds/(\d+))?/commands", p):
            return self._commands(m, match[1], r.json)
        if match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p):
            return self._callback(match[2], r)
        if match := re.fullmatch(r"/webhooks/\d+/([^/]+)(?:/messages/(@original|\d+))?", p):
            return self._webhook(m, match[1], match[2], r)
        if match := re.fullmatch(r"/channels/(\d+)", p):
            return self._channel(m, int(match[1]), r.json)
        if match := re.fullmatch(r"/channels/(\d+)/typing", p):
            self._writable(int(match[1]))
            return 204, None
        if (match := re.fullmatch(r"/channels/(\d+)/messages", p)) and m == "POST":
            return 200, self._new_message(int(match[1]), r)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p):
            return self._message(m, int(match[1]), int(match[2]), r)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", p):
            return 201, self._thread_from(int(match[1]), int(match[2]), r.json)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/([^/]+)", p):
            return self._reaction(m, int(match[1]), int(match[2]), match[3], match[4])
        raise DiscordError(404, 0, f"fake Discord: no route for {m} {p}")

    def _app_info(self) -> dict[str, Any]:
        return {
            "id": str(APP_ID),
            "name": "lmd-bot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": {"id": "1", "username": "owner", "discriminator": "0", "avatar": None},
            "verify_key": "0" * 64,
            "flags": 1 << 19,  # GATEWAY_MESSAGE_CONTENT
        }

    def _commands(self, method: str, guild: str | None, body: Any) -> tuple[int, Any]:
        key = int(guild) if guild else None
        if method == "PUT":
            self.commands[key] = [
                {**c, "id": str(self.new_id()), "application_id": str(APP_ID), "version": "1"}
                | ({"guild_id": guild} if guild else {})
                for c in body
            ]
        return 200, self.commands.get(key, [])

    # channels

    def _get_channel(self, cid: int) -> dict[str, Any]:
        try:
            return self.channels[cid]
        except KeyError:
            raise DiscordError(404, UNKNOWN_CHANNEL, "Unknown Channel") from None

    def _writable(self, cid: int) -> dict[str, Any]:
        channel = self._get_channel(cid)
        if channel.get("thread_metadata", {}).get("archived"):
            raise DiscordError(400, ARCHIVED, "Thread is archived")
        return channel

    def _channel(self, method: str, cid: int, body: Any) -> tuple[int, Any]:
        channel = self._get_channel(cid)
        if method == "PATCH":
            meta = channel.get("thread_metadata")
            if meta is not None and body.get("archived") is False and meta["archived"]:
                if meta["locked"]:
                    raise DiscordError(403, MISSING_PERMISSIONS, "Missing Permissions")
                meta["archived"] = False
                self._emit("THREAD_UPDATE", channel)
            for key in ("name", "locked"):
                if key in body and meta is not None:
                    (meta if key == "locked" else channel)[key] = body[key]
        return 200, channel

    def _thread_from(self, cid: int, mid: int, body: Any) -> dict[str, Any]:
        parent = self._writable(cid)
        message = self._get_message(cid, mid)
        if parent["type"] not in (TEXT, NEWS):
            raise DiscordError(400, WRONG_CHANNEL_TYPE, "Cannot execute action on this channel type")
        thread = {
            "id": str(mid),
            "type": 11,
            "guild_id": parent["guild_id"],
            "parent_id": str(cid),
            "owner_id": str(BOT_ID),
            "name": body["name"],
            "nsfw": parent.get("nsfw", False),
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "locked": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": _now(),
            },
        }
        self.channels[mid] = thread
        message["thread"] = thread
        self._emit("THREAD_CREATE", {**thread, "newly_created": True})
        return thread

    # messages

    def _get_message(self, cid: int, mid: int) -> dict[str, Any]:
        self._get_channel(cid)
        message = self.messages.get(mid)
        if message is None or int(message["channel_id"]) != cid:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return message

    def _new_message(self, cid: int, r: Request, *, flags: int = 0, response: bool = False) -> dict[str, Any]:
        """A message the bot posts in ``cid``; an interaction's ``response`` may go anywhere the
        interaction came from."""
        channel = self.channels.get(cid, {"id": str(cid)})
        if not response:
            self._writable(cid)
            if channel.get("type") == FORUM:
                raise DiscordError(400, 50008, "Cannot send messages in a non-text channel")
        body = r.json or {}
        mid = self.new_id()
        message: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(cid),
            "author": self.bot_user,
            "content": "",
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "reactions": [],
            "pinned": False,
            "type": 0,
            "flags": (body.get("flags") or 0) | flags,
        }
        if "guild_id" in channel:
            message["guild_id"] = channel["guild_id"]
        reference = body.get("message_reference")
        if reference and not self._referable(reference):
            if reference.get("fail_if_not_exists", True):
                raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body", _UNKNOWN_REPLY)
            reference = None  # posted as a plain message, as Discord does when told not to fail
        if reference:
            message["message_reference"] = reference
            message["type"] = 19
        self._apply(message, r)
        self.messages[mid] = message
        return message

    def _referable(self, reference: dict[str, Any]) -> bool:
        """Whether a reply's message still exists (a user may delete theirs before the answer)."""
        message = self.messages.get(int(reference.get("message_id") or 0))
        return message is not None and message["channel_id"] == str(reference.get("channel_id"))

    def _apply(self, message: dict[str, Any], r: Request) -> None:
        """An edit or a new message's body: content, embeds, components, attachments, and who it
        mentions (what ``allowed_mentions`` lets ping)."""
        body = r.json or {}
        _check_limits(body)
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        if "attachments" in body:
            kept = {a["id"]: a for a in message["attachments"]}
            uploads = {f.field: f for f in r.files}
            attachments = []
            for a in body["attachments"] or []:
                upload = uploads.get(f"files[{a['id']}]")
                if upload is not None:
                    aid = str(self.new_id())
                    attachments.append(
                        {
                            "id": aid,
                            "filename": a.get("filename") or upload.filename,
                            "size": len(upload.data),
                            "url": f"https://cdn.discordapp.test/{aid}/{upload.filename}",
                            "proxy_url": f"https://media.discordapp.test/{aid}/{upload.filename}",
                            "content_type": upload.content_type,
                        }
                    )
                elif str(a["id"]) in kept:
                    attachments.append(kept[str(a["id"])])
            message["attachments"] = attachments
        elif r.files and not message["attachments"]:
            message["attachments"] = [
                {
                    "id": str(self.new_id()),
                    "filename": f.filename,
                    "size": len(f.data),
                    "url": "",
                    "proxy_url": "",
                }
                for f in r.files
            ]
        if "content" in body or "allowed_mentions" in body:
            message["mentions"] = [
                {"id": str(uid), "username": f"user{uid}", "discriminator": "0", "avatar": None}
                for uid in _pinged_users(message["content"] or "", body.get("allowed_mentions"))
            ]
        message["allowed_mentions"] = body.get("allowed_mentions", message.get("allowed_mentions"))

    def _message(self, method: str, cid: int, mid: int, r: Request) -> tuple[int, Any]:
        message = self._get_message(cid, mid)
        if method == "GET":
            return 200, message
        self._writable(cid)
        if method == "PATCH":
            self._apply(message, r)
            message["edited_timestamp"] = _now()
            return 200, message
        if method == "DELETE":
            del self.messages[mid]
            return 204, None
        raise DiscordError(405, 0, "405: Method Not Allowed")

    def _reaction(self, method: str, cid: int, mid: int, emoji: str, user: str) -> tuple[int, Any]:
        message = self._get_message(cid, mid)
        self._writable(cid)
        from urllib.parse import unquote

        name = unquote(emoji)
        uid = BOT_ID if user == "@me" else int(user)
        reactions = message.setdefault("reacted_by", {}).setdefault(name, [])
        if method == "PUT" and uid not in reactions:
            reactions.append(uid)
        elif method == "DELETE" and uid in reactions:
            reactions.remove(uid)
        return 204, None

    # interactions

    def _callback(self, token: str, r: Request) -> tuple[int, Any]:
        interaction = self.interactions.get(token)
        if interaction is None:
            raise DiscordError(404, 10062, "Unknown interaction")
        if interaction.get("answered"):
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        window = self.interaction_window_s
        if window is not None and time.monotonic() - interaction["made"] > window:
            raise DiscordError(404, 10062, "Unknown interaction")  # too late: it failed for the user
        interaction["answered"] = True
        kind = r.json["type"]
        data = r.json.get("data") or {}
        flags = data.get("flags") or 0
        result: dict[str, Any] = {
            "interaction": {"id": str(interaction["id"]), "type": interaction["type"]},
            "resource": {"type": kind},
        }
        if kind in (4, 5):  # a message, or "thinking…" that becomes one
            inner = Request(r.method, r.path, r.query, data, r.files)
            loading = 128 if kind == 5 else 0
            message = self._new_message(
                interaction["channel_id"], inner, flags=flags | loading, response=True
            )
            message["interaction_token"] = token
            interaction["original"] = int(message["id"])
            result["interaction"].update(
                response_message_id=message["id"],
                response_message_loading=kind == 5,
                response_message_ephemeral=bool(flags & EPHEMERAL),
            )
            result["resource"]["message"] = message
        elif kind == 9:
            interaction["modal"] = data
        return 200, result

    def _webhook(self, method: str, token: str, which: str | None, r: Request) -> tuple[int, Any]:
        interaction = self.interactions.get(token)
        if interaction is None:
            raise DiscordError(404, 10015, "Unknown Webhook")
        if which is None:  # a follow-up message
            thinking = self.messages.get(interaction.get("original") or 0)
            if thinking is not None and thinking["flags"] & 128:
                # The first follow-up after "thinking…" (a deferred answer) becomes that message:
                # public or private as the deferral said, whatever the follow-up asks, and as an
                # edit it notifies nobody it names.
                body = {**(r.json or {}), "allowed_mentions": {"parse": []}}
                self._apply(thinking, Request(r.method, r.path, r.query, body, r.files))
                thinking["flags"] &= ~128
                return 200, thinking
            return 200, self._new_message(interaction["channel_id"], r, response=True)
        mid = interaction.get("original") if which == "@original" else int(which)
        message = self.messages.get(mid or 0)
        if message is None:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        if method == "PATCH":
            self._apply(message, r)
            message["flags"] &= ~128
            message["edited_timestamp"] = _now()
            return 200, message
        if method == "DELETE":
            del self.messages[mid]
            return 204, None
        return 200, message

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        if self.on_gateway is not None:
            self.on_gateway(event, json.loads(json.dumps(data)))


# Discord's answer to a reply whose message is gone (unless the reply says not to fail).
_UNKNOWN_REPLY = {
    "message_reference": {
        "_errors": [{"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]
    }
}

# Discord's message and embed limits; a body over one is refused with 400 / 50035.
_LIMITS = {"title": 256, "description": 4096, "field name": 256, "field value": 1024, "footer": 2048}


def _check_limits(body: dict[str, Any]) -> None:
    problems = []
    if len(body.get("content") or "") > 2000:
        problems.append("content: must be 2000 or fewer in length")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        problems.append("embeds: must be 10 or fewer in length")
    for i, embed in enumerate(embeds):
        sizes = {
            "title": len(embed.get("title") or ""),
            "description": len(embed.get("description") or ""),
            "footer": len((embed.get("footer") or {}).get("text") or ""),
        }
        for name, size in sizes.items():
            if size > _LIMITS[name]:
                problems.append(f"embeds.{i}.{name}: must be {_LIMITS[name]} or fewer in length")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            problems.append(f"embeds.{i}.fields: must be 25 or fewer in length")
        for j, f in enumerate(fields):
            if len(f["name"]) > _LIMITS["field name"] or not f["name"]:
                problems.append(f"embeds.{i}.fields.{j}.name: must be 1 to 256 in length")
            if len(f["value"]) > _LIMITS["field value"] or not f["value"]:
                problems.append(f"embeds.{i}.fields.{j}.value: must be 1 to 1024 in length")
        total = sum(sizes.values()) + sum(len(f["name"]) + len(f["value"]) for f in fields)
        if total > 6000:
            problems.append(f"embeds.{i}: embed size exceeds maximum size of 6000")
    if problems:
        raise DiscordError(400, 50035, "Invalid Form Body: " + "; ".join(problems))


def _json(payload: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when the content type is exactly application/json.
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


_MENTION = re.compile(r"<@!?(\d+)>")


def _pinged_users(content: str, allowed: dict[str, Any] | None) -> list[int]:
    """Who a message pings, as Discord decides it: the user mentions in its text that
    ``allowed_mentions`` permits (no ``allowed_mentions``: all of them)."""
    found = [int(m) for m in _MENTION.findall(content)]
    if allowed is None:
        return found
    if "users" in (allowed.get("parse") or []):
        return found
    permitted = {int(u) for u in allowed.get("users") or []}
    return [u for u in found if u in permitted]
