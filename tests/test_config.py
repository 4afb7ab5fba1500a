"""Settings: documented defaults, environment overrides, secrets hidden, clear errors."""

import re
import tomllib

import pytest

from lmd_bot.config import DEFAULT_TOML, Settings, load_settings, require_secret
from lmd_bot.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("LMD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_come_from_default_toml():
    s = load_settings()
    assert s.diffusion.steps == 50 and s.diffusion.mode == "lmd+"
    assert s.planner.model == "claude-haiku-5-5"
    assert s.db.url.startswith("sqlite+aiosqlite://")


def test_every_setting_is_in_default_toml_with_a_comment():
    text = DEFAULT_TOML.read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()
    documented = {}
    section = None
    for i, line in enumerate(lines):
        if m := re.match(r"^\[(\w+)\]$", line):
            section = m.group(1)
        elif m := re.match(r"^(?:# )?([a-z_]+) = ", line):
            # walk up over the group's other key lines to its comment block
            j = i - 1
            while j >= 0 and re.match(r"^(?:# )?[a-z_]+ = ", lines[j]):
                j -= 1
            documented[(section, m.group(1))] = j >= 0 and lines[j].startswith("# ")
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if hasattr(model, "model_fields"):
            for key in model.model_fields:
                assert documented.get((name, key)), f"{name}.{key} is not documented in default.toml"

        else:
            assert documented.get((None, name)), f"{name} is not documented in default.toml"
    for section in data:
        assert section in Settings.model_fields, section


def test_environment_overrides_nested_keys(monkeypatch):
    monkeypatch.setenv("LMD_DIFFUSION__STEPS", "30")
    monkeypatch.setenv("LMD_QUEUE__PER_USER_CAP", "5")
    s = load_settings()
    assert (s.diffusion.steps, s.queue.per_user_cap) == (30, 5)
    assert s.diffusion.mode == "lmd+"  # the rest of the section keeps its defaults


def test_user_config_file_overrides_defaults(monkeypatch, tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[diffusion]\nsteps = 25\n")
    monkeypatch.setenv("LMD_CONFIG", str(cfg))
    s = load_settings()
    assert s.diffusion.steps == 25 and s.diffusion.guidance_scale == 7.5


def test_missing_user_config_file_is_named(monkeypatch):
    monkeypatch.setenv("LMD_CONFIG", "/nonexistent/lmd.toml")
    with pytest.raises(ConfigError, match=r"LMD_CONFIG names '/nonexistent/lmd\.toml'"):
        load_settings()


@pytest.mark.parametrize(
    ("content", "told"),
    [
        (b"[diffusion\nsteps = 2\n", "Expected ']' at the end of a table declaration (at line 1, column 11)"),
        (b"[diffusion]\nsteps = \xff\n", "it is not UTF-8 text"),
    ],
)
def test_a_user_config_file_that_is_not_toml_is_named(monkeypatch, tmp_path, content, told):
    """A typo in the operator's own file said 'Could not read the configuration: Expected ...'
    without the file (it could as well have been config/default.toml)."""
    cfg = tmp_path / "mine.toml"
    cfg.write_bytes(content)
    monkeypatch.setenv("LMD_CONFIG", str(cfg))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == f"Could not read the configuration file {cfg} (LMD_CONFIG): {told}."


def test_invalid_value_names_the_setting_and_its_variable(monkeypatch):
    monkeypatch.setenv("LMD_DIFFUSION__STEPS", "lots")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "diffusion.steps" in str(err.value) and "LMD_DIFFUSION__STEPS" in str(err.value)


def test_unknown_key_is_an_error(tmp_path, monkeypatch):
    cfg = tmp_path / "typo.toml"
    cfg.write_text("[diffusion]\nstepz = 25\n")
    monkeypatch.setenv("LMD_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"diffusion\.stepz"):
        load_settings()


def test_secrets_are_never_printed(monkeypatch):
    monkeypatch.setenv("LMD_DISCORD__TOKEN", "super-secret-token")
    monkeypatch.setenv("LMD_PLANNER__API_KEY", "sk-ant-secret")
    s = load_settings()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "super-secret-token" not in text and "sk-ant-secret" not in text
    assert require_secret(s.discord.token, "discord.token", "") == "super-secret-token"


def test_missing_secret_names_setting_and_fix():
    s = load_settings()
    with pytest.raises(ConfigError, match=r"'discord\.token'.*LMD_DISCORD__TOKEN.*portal"):
        require_secret(s.discord.token, "discord.token", "Get one from the developer portal.")


@pytest.mark.parametrize("where", ["environment", ".env"])
@pytest.mark.parametrize("value", ["123,456", "[123, 456", "123"])
def test_a_list_that_is_not_json_names_its_variable_and_its_form(monkeypatch, tmp_path, where, value):
    """``LMD_DISCORD__ALLOWED_GUILD_IDS=123,456`` is how people write a list in a shell; it used to
    be 'error parsing value for field "discord" from source "EnvSettingsSource"' (no variable,
    no form), and ``=123`` said only 'Input should be a valid list'."""
    if where == "environment":
        monkeypatch.setenv("LMD_DISCORD__ALLOWED_GUILD_IDS", value)
    else:
        (tmp_path / ".env").write_text(f"LMD_DISCORD__ALLOWED_GUILD_IDS={value}\n")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "'discord.allowed_guild_ids' (LMD_DISCORD__ALLOWED_GUILD_IDS)" in message
    assert "a JSON list, e.g. LMD_DISCORD__ALLOWED_GUILD_IDS='[123, 456]'" in message


def test_a_json_list_in_the_environment_is_read(monkeypatch):
    monkeypatch.setenv("LMD_DISCORD__ALLOWED_GUILD_IDS", "[123, 456]")
    monkeypatch.setenv("LMD_GUARD__BANNED_WORDS", '["gore", "blood"]')
    s = load_settings()
    assert s.discord.allowed_guild_ids == [123, 456] and s.guard.banned_words == ["gore", "blood"]
