"""Guard rails on their own: ban lists, places, rate limits, policies."""

from __future__ import annotations

import pytest

from lmd_bot.config import DiscordSettings, GuardSettings
from lmd_bot.errors import ConfigError
from lmd_bot.guard import BannedContentError, Guard, NotAllowedHereError, RateLimitedError, TextFilter
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.scenes.models import ServerSettings
from lmd_bot.services.errors import EmptyTextError
from tests.services.conftest import ALICE, running_core


def test_banned_words_match_whole_words_in_any_case_and_width():
    f = TextFilter(["gore", "nude"], [])
    assert f.matches("so much GORE here") and f.matches("ｎｕｄｅ statue")  # full-width letters
    assert f.matches("gore.") and not f.matches("gorenstein's algebra") and not f.matches("nudge")


HIDDEN_GORE = {
    "zero-width space": "a g\u200bore scene",
    "soft hyphen": "a go\u00adre scene",
    "word joiner": "a gor\u2060e scene",
    "zero-width joiner": "a g\u200dore scene",
    "zero-width non-joiner": "a go\u200cre scene",
    "byte-order mark": "a \ufeffgore scene",
    "Cyrillic е": "a gor\u0435 scene",
    "Cyrillic о": "a g\u043ere scene",
    "Cyrillic capitals": "a G\u041eR\u0415 scene",
    "mixed": "a g\u200b\u043er\u00ad\u0435 scene",
}


@pytest.mark.parametrize("text", HIDDEN_GORE.values(), ids=HIDDEN_GORE.keys())
def test_banned_words_hidden_by_invisible_or_look_alike_characters_are_refused(text):
    with pytest.raises(BannedContentError) as err:
        TextFilter(["gore"], []).check(text)
    assert err.value.user_message == "That prompt isn't allowed here."


def test_banned_patterns_see_through_invisible_and_look_alike_characters():
    f = TextFilter([], [r"\bblood\w*"])
    assert f.matches("a bl\u200b\u043e\u043edy knight") and f.matches("BL\u041e\u041eD")


def test_look_alike_folding_keeps_ordinary_words_apart():
    f = TextFilter(["burn", "gore", "кот"], [])
    assert not f.matches("a bum on a bench")  # "rn" is not read as "m"
    assert not f.matches("gorenstein") and not f.matches("a gone cat")
    assert f.matches("a кoт")  # a ban in Cyrillic, evaded with a Latin o
    assert not f.matches("a кит")


async def test_hidden_banned_words_and_invisible_prompts_are_refused_before_planning(tmp_path):
    async with running_core(tmp_path, guard={"banned_words": ["gore"]}) as (app, notes):
        with pytest.raises(BannedContentError) as err:
            await app.scenes.imagine(ALICE, "a g\u200bor\u0435 scene", notes)
        assert err.value.user_message == "That prompt isn't allowed here."
        with pytest.raises(EmptyTextError) as err:
            await app.scenes.imagine(ALICE, "\u200b\u200d\u2060\u00ad\ufeff", notes)
        assert err.value.user_message == "Tell me what to draw: the prompt is empty."
        assert app.planner.calls == []


def test_patterns_are_case_insensitive_and_invalid_ones_are_a_config_error():
    f = TextFilter([], [r"\bblood\w*"])
    assert f.matches("Bloody knight") and not f.matches("a knight")
    with pytest.raises(ConfigError) as err:
        TextFilter([], ["(unclosed"])
    assert "guard.banned_patterns" in str(err.value)


def test_layout_check_covers_captions_and_background_not_the_negative():
    f = TextFilter(["gore"], [])
    clean = SceneLayout.model_validate(
        {"objects": [{"id": 1, "caption": "a knight", "box": [0, 0, 50, 50]}], "negative": "gore"}
    )
    f.check_layout(clean)  # asking the model to avoid something is fine
    with pytest.raises(BannedContentError):
        f.check_layout(clean.model_copy(update={"background": "a gore field"}))


def test_places_from_config_and_server_settings():
    guard = Guard(GuardSettings(), DiscordSettings(allowed_guild_ids=[1], allowed_channel_ids=[10, 11]))
    guard.check_place(guild_id=1, channel_id=10)
    guard.check_place(guild_id=None, channel_id=None)  # the local console
    with pytest.raises(NotAllowedHereError):
        guard.check_place(guild_id=2, channel_id=10)
    with pytest.raises(NotAllowedHereError):
        guard.check_place(guild_id=1, channel_id=12)
    narrowed = ServerSettings(allowed_channel_ids=[11])
    with pytest.raises(NotAllowedHereError):
        guard.check_place(guild_id=1, channel_id=10, server=narrowed)
    guard.check_place(guild_id=1, channel_id=11, server=narrowed)
    open_guard = Guard(GuardSettings(), DiscordSettings())
    open_guard.check_place(guild_id=5, channel_id=99)
    with pytest.raises(NotAllowedHereError):
        open_guard.check_place(guild_id=5, channel_id=99, server=ServerSettings(allowed_channel_ids=[7]))


def test_rate_limit_is_a_sliding_window_per_user():
    now = [0.0]
    guard = Guard(
        GuardSettings(rate_limit_count=2, rate_limit_window_s=10), DiscordSettings(), clock=lambda: now[0]
    )
    guard.rate.hit(1)
    now[0] = 4
    guard.rate.hit(1)
    guard.rate.hit(2)
    with pytest.raises(RateLimitedError) as err:
        guard.rate.hit(1)
    assert err.value.user_message == "You're going a bit fast; try again in 6 s."
    now[0] = 10.5  # the first hit left the window
    guard.rate.hit(1)


def test_editors_and_safety_policy_resolution():
    guard = Guard(GuardSettings(editors="owner", safety_policy="withhold"), DiscordSettings())
    assert guard.editors(None) == "owner" and guard.editors(ServerSettings(editors="everyone")) == "everyone"
    assert guard.safety(None, nsfw_channel=False) == "withhold"
    assert guard.safety(ServerSettings(safety="spoiler"), nsfw_channel=False) == "spoiler"
    assert guard.safety(ServerSettings(safety="spoiler"), nsfw_channel=True) == "off"
    strict = Guard(GuardSettings(relax_in_nsfw_channels=False), DiscordSettings())
    assert strict.safety(None, nsfw_channel=True) == "spoiler"
