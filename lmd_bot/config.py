"""Settings: ``config/default.toml``, then an optional TOML file of yours, then the environment.

Precedence, highest first: keyword arguments (tests), environment variables
(``LMD_<SECTION>__<KEY>``, e.g. ``LMD_DISCORD__TOKEN``; a ``.env`` file is read too), the file named
by ``LMD_CONFIG``, then ``config/default.toml``, which documents every key.

Secrets (the Discord token, the API keys) are ``SecretStr``: they print as ``**********`` and are
never logged; one with a space, line break or other character no key has inside it is refused
here, before it can reach an HTTP header. Numbers must be finite and within documented ranges. A
missing or invalid setting raises :class:`~lmd_bot.errors.ConfigError` whose message names the
setting, its environment variable and how to fix it, never a secret's value.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import unicodedata
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lmd_bot.errors import ConfigError
from lmd_bot.layout.schema import LayoutLimits
from lmd_bot.rendering import Refine, RenderMode

ENV_PREFIX = "LMD_"
# The repository's config/default.toml, through a link in the package's assets so that an installed
# package (a wheel, the Docker image) carries it too.
DEFAULT_TOML = Path(__file__).resolve().parent / "assets" / "config" / "default.toml"


class _Section(BaseModel):
    # inf and nan pass a "> 0" check and then overflow timers and clocks.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _secret(value: SecretStr | None) -> SecretStr | None:
    """Surrounding whitespace dropped (a pasted trailing newline); anything else that is not
    printable ASCII refused: no token or key has it, and in an HTTP header it fails far from here."""
    if value is None:
        return None
    text = value.get_secret_value().strip()
    if any(not 33 <= ord(ch) <= 126 for ch in text):
        raise ValueError(
            "contains a space, line break, control or non-ASCII character, which no key has; "
            "copy it again (the value is not shown)"
        )
    return SecretStr(text)


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValueError("contains a line break or other control character (the value is not shown)")
    return value


class DiscordSettings(_Section):
    token: SecretStr | None = None
    dev_guild_id: int | None = None
    sync_global: bool = False
    connect_retries: int = Field(5, ge=0, le=20)
    message_content_intent: bool = True
    allowed_guild_ids: list[int] = Field(default_factory=list)
    allowed_channel_ids: list[int] = Field(default_factory=list)
    status_edit_interval_s: float = Field(3.0, ge=0, le=60)
    thread_auto_archive_minutes: Literal[60, 1440, 4320, 10080] = 1440

    _check_token = field_validator("token")(_secret)


class PlannerSettings(_Section):
    backend: Literal["anthropic", "openai"] = "anthropic"
    model: str = "claude-haiku-5-5"
    api_key: SecretStr | None = None
    base_url: str | None = None
    openai_base_url: str = "http://127.0.0.1:11434/v1"
    openai_model: str = "llama3.1"
    openai_api_key: SecretStr | None = None
    max_tokens: int = Field(2000, ge=256, le=16000)
    attempt_timeout_s: float = Field(30.0, gt=0, le=600)
    deadline_s: float = Field(90.0, gt=0, le=3600)
    max_repairs: int = Field(2, ge=0, le=5)
    max_retries: int = Field(4, ge=0, le=10)
    # Anthropic only; "default" leaves the parameter out (the model's own default).
    effort: Literal["low", "medium", "high", "xhigh", "max", "default"] = "low"
    thinking: Literal["disabled", "adaptive", "between_tools", "default"] = "disabled"

    _check_keys = field_validator("api_key", "openai_api_key")(_secret)


class LayoutSettings(_Section):
    max_objects: int = Field(16, ge=1, le=64)
    max_caption_chars: int = Field(120, ge=8, le=2000)
    max_prompt_chars: int = Field(400, ge=16, le=2000)
    max_user_text_chars: int = Field(1500, ge=16, le=6000)

    def limits(self) -> LayoutLimits:
        return LayoutLimits(
            max_objects=self.max_objects,
            max_caption_chars=self.max_caption_chars,
            max_prompt_chars=self.max_prompt_chars,
        )


class LoraSettings(_Section):
    """One LoRA fused into the SD model: its file (or a folder / hub id holding one) and weight."""

    path: str = Field(min_length=1)
    weight: float = Field(1.0, ge=-4, le=4)


class DiffusionSettings(_Section):
    mode: RenderMode = RenderMode.LMD_PLUS
    sd_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    sd_config: str = ""
    loras: list[LoraSettings] = Field(default_factory=list, max_length=16)
    gligen_model: str = "masterful/gligen-1-4-generation-text-box@d2820dc1e9ba6ca082051ce79cfd3eb468ae2c83"
    sam_model: str = "facebook/sam-vit-base"
    use_sam: bool = True
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    steps: int = Field(50, ge=1, le=150)
    guidance_scale: float = Field(7.5, ge=0, le=30)
    size: int = Field(512, ge=64, le=1024, multiple_of=64)
    object_batch_size: int = Field(8, ge=1, le=30)
    compile_guidance: bool = False
    object_cache_mb: int = Field(1024, ge=0)
    object_cache_dir: str = ""
    object_cache_disk_mb: int = Field(4096, ge=0)
    # Self-check (docs/selfcheck.md): after lmd, lmd+ and fast renders, detect the layout's objects
    # and re-generate the missing or misplaced ones (lmd, lmd+), at most check_retries times. On
    # wherever check_detector names one: OWLv2 for real weights, "shapes" for the shapes models.
    self_check: bool = True
    check_detector: Literal["owlv2", "owlvit", "shapes", "none"] = "owlv2"
    check_detector_model: str = ""  # a hub id or folder; empty: the benchmark's default model
    check_retries: int = Field(2, ge=0, le=5)
    refine: Refine = Refine.OFF
    refiner_model: str = "stabilityai/stable-diffusion-xl-refiner-1.0"
    refine_strength: float = Field(0.3, gt=0, le=1)
    refine_size: int = Field(1024, ge=256, le=2048, multiple_of=64)


class QueueSettings(_Section):
    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    per_user_cap: int = Field(2, ge=1, le=50)
    job_timeout_s: float = Field(600.0, gt=0, le=86400)
    renderer: Literal["diffusion", "tiny", "preview"] = "diffusion"
    max_queued: int = Field(100, ge=1, le=10000)
    max_attempts: int = Field(2, ge=1, le=5)
    cancel_grace_s: float = Field(15.0, gt=0, le=3600)
    worker_start_timeout_s: float = Field(900.0, gt=0, le=86400)
    worker_start_backoff_s: float = Field(60.0, ge=0, le=3600)
    shutdown_grace_s: float = Field(30.0, ge=0, le=3600)
    redis_prefix: str = Field("lmd", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    worker_heartbeat_s: float = Field(5.0, gt=0, le=300)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        _no_control_characters(value)
        try:
            scheme = urlsplit(value).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix:// (e.g. redis://127.0.0.1:6379/0)")
        return value


class GuardSettings(_Section):
    rate_limit_count: int = Field(8, ge=1, le=10000)
    rate_limit_window_s: float = Field(60.0, gt=0, le=86400)
    banned_words: list[str] = Field(default_factory=list)
    banned_patterns: list[str] = Field(default_factory=list)
    editors: Literal["owner", "everyone"] = "owner"
    safety_policy: Literal["spoiler", "withhold", "off"] = "spoiler"
    safety_checker: str = ""
    safety_model: str = "CompVis/stable-diffusion-safety-checker"
    relax_in_nsfw_channels: bool = True

    @field_validator("safety_checker")
    @classmethod
    def _factory_path(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError("must look like 'package.module:function', or be empty for no checker")
        return value


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///data/lmd-bot.sqlite3"
    busy_timeout_s: float = Field(5.0, gt=0, le=600)

    _check_url = field_validator("url")(_no_control_characters)


class StorageSettings(_Section):
    image_dir: Path = Path("data/images")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    discord: DiscordSettings = DiscordSettings()
    planner: PlannerSettings = PlannerSettings()
    layout: LayoutSettings = LayoutSettings()
    diffusion: DiffusionSettings = DiffusionSettings()
    queue: QueueSettings = QueueSettings()
    guard: GuardSettings = GuardSettings()
    db: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [DEFAULT_TOML]
        if user := os.environ.get(f"{ENV_PREFIX}CONFIG"):
            files.append(Path(user))
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=files, deep_merge=True),
        )


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


FIX = "Fix it in your config file or the environment (see config/default.toml)."


def _list_items() -> dict[tuple[str, str], Any]:
    """Every list setting, (section, key), with the type of its items."""
    return {
        (section, key): get_args(sub.annotation)[0]
        for section, field in Settings.model_fields.items()
        for key, sub in getattr(field.annotation, "model_fields", {}).items()
        if get_origin(sub.annotation) is list
    }


def _json_list_form(loc: tuple[str, str], item: Any) -> str:
    if isinstance(item, type) and issubclass(item, BaseModel):  # a table: its keys, "..." if required
        table = {k: "..." if f.is_required() else f.default for k, f in item.model_fields.items()}
        example = json.dumps([table])
    else:
        example = {int: "[123, 456]", str: '["first", "second"]'}[item]
    return f"a JSON list, e.g. {_env_name(loc)}='{example}'"


def _check_lists_are_json() -> None:
    """A list in the environment or .env is read as JSON; one that is not (``123,456``, as a
    shell list reads) fails in pydantic-settings naming only its section, so name it here."""
    from dotenv import dotenv_values

    sources = [os.environ, dotenv_values(".env") if Path(".env").is_file() else {}]
    for loc, item in _list_items().items():
        name = _env_name(loc)
        for source in sources:
            value = next((v for k, v in source.items() if k.upper() == name and v is not None), None)
            try:
                if value is not None:
                    json.loads(value)
            except ValueError:
                key = ".".join(loc)
                raise ConfigError(
                    f"Invalid setting {key!r} ({name}): write it as {_json_list_form(loc, item)}. {FIX}"
                ) from None


def load_settings(**overrides: Any) -> Settings:
    """Load the settings, turning any validation error into a ConfigError that names the key."""
    user = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if user and not Path(user).is_file():
        raise ConfigError(f"{ENV_PREFIX}CONFIG names {user!r}, which is not a file.")
    _check_lists_are_json()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lists = _list_items()
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not isinstance(p, int))
            key = ".".join(map(str, loc))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "list_type" and loc in lists:
                msg = f"{msg}: {_json_list_form(loc, lists[loc])}"
            lines.append(f"setting {key!r} ({_env_name(loc)}): {msg}.")
        if len(lines) == 1:  # the common case reads as one line
            raise ConfigError(f"Invalid {lines[0]} {FIX}") from None
        raise ConfigError("Invalid configuration:\n" + "\n".join(lines) + "\n" + FIX) from None
    except (OSError, ValueError) as exc:  # an unreadable or malformed TOML file
        if user and (problem := _toml_problem(Path(user))):
            named = f"the configuration file {user} ({ENV_PREFIX}CONFIG)"
            raise ConfigError(f"Could not read {named}: {problem}.") from None
        raise ConfigError(f"Could not read the configuration: {exc}") from None


def _toml_problem(path: Path) -> str | None:
    """Why ``path`` is no TOML file, or None: which file a failed read was about."""
    try:
        tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    except tomllib.TOMLDecodeError as exc:
        return str(exc)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def require_secret(value: SecretStr | None, key: str, how: str) -> str:
    """The secret's value, or a ConfigError naming the setting and how to set it."""
    if value is None or not value.get_secret_value().strip():
        raise ConfigError(f"Missing setting {key!r}: set {_env_name(tuple(key.split('.')))}. {how}")
    return value.get_secret_value().strip()
