"""Guard rails: where the bot may work, how fast one user may go, and which words it refuses.

All checks are pure and in memory (no I/O), so adapters can run them before acknowledging an
interaction. Each failure is an :class:`~lmd_bot.errors.LmdError` with a short reply.
"""

from __future__ import annotations

import functools
import math
import re
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable

from confusable_homoglyphs.confusables import confusables_data

from lmd_bot.config import DiscordSettings, GuardSettings
from lmd_bot.errors import ConfigError, LmdError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.scenes.models import EditorsPolicy, SafetyPolicy, ServerSettings


class NotAllowedHereError(LmdError):
    user_message = "I'm not set up to work here; ask a server admin which channels I draw in."


class BannedContentError(LmdError):
    user_message = "That prompt isn't allowed here."


class RateLimitedError(LmdError):
    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(
            f"rate limited for {seconds} s",
            user_message=f"You're going a bit fast; try again in {seconds} s.",
        )


@functools.cache
def _lookalikes() -> dict[str, str]:
    """Each non-ASCII character that Unicode's confusables table (UTS #39, as shipped by the
    ``confusable-homoglyphs`` package) lists as a look-alike, mapped to one representative of its
    class: an ASCII letter where the class has one (Cyrillic ``е`` -> ``e``), else a fixed member.

    ASCII itself is left alone, and so are multi-character look-alikes: reading ``rn`` as ``m``
    would make a ban on "burn" refuse "bum".
    """
    parent: dict[str, str] = {}

    def root(ch: str) -> str:
        while parent.setdefault(ch, ch) != ch:
            parent[ch] = parent[parent[ch]]
            ch = parent[ch]
        return ch

    # The package lists each confusable pair in both directions; joining the pairs gives the
    # classes of characters that look the same.
    for char, glyphs in confusables_data.items():
        for glyph in glyphs:
            if len(char) == 1 and len(glyph["c"]) == 1:
                parent[root(char)] = root(glyph["c"])
    classes: dict[str, list[str]] = {}
    for ch in parent:
        classes.setdefault(root(ch), []).append(ch)

    def preference(ch: str) -> tuple[int, str]:
        if ch.isascii():
            return (0 if ch.islower() else 1 if ch.isupper() else 2, ch)
        return (3, ch)

    table = {}
    for members in classes.values():
        representative = min(members, key=preference)
        table.update((ch, representative) for ch in members if not ch.isascii() and ch != representative)
    return table


def _normalize(text: str) -> str:
    """The form words are matched in: NFKC (full-width and styled letters), no format characters
    (zero-width spaces and joiners, soft hyphens, word joiners), look-alike letters read as the
    letter they imitate, then casefolded (ß and friends)."""
    lookalikes = _lookalikes()
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if unicodedata.category(ch) == "Cf":
            continue
        # Both cases, a Latin letter preferred: Cyrillic І imitates I but its lower-case і
        # imitates i; Cyrillic Т imitates T, while its lower-case т only imitates Greek τ.
        found = [m for m in (lookalikes.get(ch.casefold()), lookalikes.get(ch)) if m]
        out.append(min(found, key=lambda m: not m.isascii()) if found else ch)
    return "".join(out).casefold()


class TextFilter:
    """Banned words (whole words, any case) and regular expressions (any case)."""

    def __init__(self, words: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        alternatives = [re.escape(_normalize(w.strip())) for w in words if w.strip()]
        self._words = re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)") if alternatives else None
        self._patterns = []
        for pattern in patterns:
            try:
                self._patterns.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(
                    f"guard.banned_patterns: {pattern!r} is not a valid regular expression: {exc}"
                ) from None

    def matches(self, text: str) -> bool:
        folded = _normalize(text)
        if self._words is not None and self._words.search(folded):
            return True
        return any(p.search(text) or p.search(folded) for p in self._patterns)

    def check(self, text: str, *, what: str = "prompt") -> None:
        if self.matches(text):
            raise BannedContentError(f"banned {what}", user_message=f"That {what} isn't allowed here.")

    def check_layout(self, layout: SceneLayout) -> None:
        """The planner's captions and background (not the negative prompt: it lists what to avoid)."""
        for text in (layout.background, *(o.caption for o in layout.objects)):
            if self.matches(text):
                raise BannedContentError(
                    "banned caption from the planner",
                    user_message="That prompt isn't allowed here (the planned scene contains a banned word).",
                )


class RateLimiter:
    """At most ``count`` actions per user in any ``window_s`` seconds (a sliding window)."""

    def __init__(self, count: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._count = count
        self._window = window_s
        self._clock = clock
        self._hits: dict[int, deque[float]] = {}

    def _recent(self, user_id: int) -> deque[float]:
        now = self._clock()
        hits = self._hits.setdefault(user_id, deque())
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if not hits:
            del self._hits[user_id]  # idle users cost no memory
            return deque()
        return hits

    def check(self, user_id: int) -> None:
        hits = self._recent(user_id)
        if len(hits) >= self._count:
            raise RateLimitedError(hits[0] + self._window - self._clock())

    def hit(self, user_id: int) -> None:
        self.check(user_id)
        self._hits.setdefault(user_id, deque()).append(self._clock())


class Guard:
    def __init__(
        self, guard: GuardSettings, discord: DiscordSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = guard
        self._guilds = set(discord.allowed_guild_ids)
        self._channels = set(discord.allowed_channel_ids)
        self.text = TextFilter(guard.banned_words, guard.banned_patterns)
        self.rate = RateLimiter(guard.rate_limit_count, guard.rate_limit_window_s, clock)

    def check_place(
        self, *, guild_id: int | None, channel_id: int | None, server: ServerSettings | None = None
    ) -> None:
        """``channel_id`` is the text channel (a thread's parent). No guild: the local console."""
        if guild_id is None:
            return
        if self._guilds and guild_id not in self._guilds:
            raise NotAllowedHereError(f"guild {guild_id} not allowed")
        allowed = set(self._channels)
        if server is not None and server.allowed_channel_ids:
            allowed = (
                set(server.allowed_channel_ids) if not allowed else allowed & set(server.allowed_channel_ids)
            )
            if not allowed:
                raise NotAllowedHereError("no channel is allowed by both the config and the server")
        if allowed and channel_id not in allowed:
            raise NotAllowedHereError(f"channel {channel_id} not allowed")

    def editors(self, server: ServerSettings | None) -> EditorsPolicy:
        return (server.editors if server else None) or self.settings.editors

    def safety(self, server: ServerSettings | None, *, nsfw_channel: bool) -> SafetyPolicy:
        if nsfw_channel and self.settings.relax_in_nsfw_channels:
            return "off"
        return (server.safety if server else None) or self.settings.safety_policy
