"""Configuration: one TOML file, overridden by ``BRIDGE_*`` environment variables.

Every problem is reported as a single :class:`ConfigError` line naming the key, so an operator
sees what to fix instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.access.settings import AccessSettings, LimitSettings
from bridge.files.settings import FilesSettings, StorageSettings
from bridge.infra.redact import redacted_url
from bridge.memory.settings import MemorySettings
from bridge.retention.settings import RetentionSettings

BACKENDS = ("echo", "openai", "webhook")
CONFIG_ENV = "BRIDGE_CONFIG"
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(Exception):
    """A bad configuration, described in one line that names the key."""


class SecretUrl(SecretStr):
    """A URL that may carry credentials (a database password, a proxy login, a query token).

    Printed (``str``, ``repr``, the settings' repr) it shows scheme, user, host, port and path
    but never the password or query values; dumped to JSON it is ``**********``. The code
    gets the real URL from ``get_secret_value()``, the one accessor.
    """

    def _display(self) -> str:
        return redacted_url(self.get_secret_value(), keep_path=True)


class SecretOriginUrl(SecretUrl):
    """A URL whose path may itself be a token (webhook URLs): printed as its origin only."""

    def _display(self) -> str:
        return redacted_url(self.get_secret_value(), keep_path=False)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: SecretUrl = SecretUrl("sqlite+aiosqlite:///./data/bridge.db")
    """Read it with ``url.get_secret_value()``; printing it hides the password."""
    pool_size: int = Field(default=10, ge=1, le=200)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body accepted; a larger one is refused with 413 Payload Too Large."""
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    """A connection must send a whole request line and headers within this; else it is cut."""
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    """A request body must arrive whole within this; else the request gets 408 and is cut."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks (CIDR) of reverse proxies in front of the bridge. Only a request
    from one of them may name the real client in ``X-Forwarded-For``/``Forwarded``."""
    public_url: str | None = None
    """How agents reach this bridge (``https://bridge.example.com``): the origin of the signed
    file links given to webhook agents. Unset: ``http://<host>:<port>`` as it listens."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return [entry.strip() for entry in entries]


class PipelineSettings(_Section):
    answer_concurrency: int = Field(default=16, ge=1)
    delivery_concurrency: int = Field(default=16, ge=1)
    claim_ttl_seconds: float = Field(default=60.0, gt=0)
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    max_delivery_attempts: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    send_timeout_seconds: float = Field(default=60.0, gt=0)
    apology_text: str = "Sorry, I could not answer that just now. Please try again in a moment."
    reset_text: str = (
        "Started a fresh conversation: earlier messages are no longer used as context."
    )


class WebSettings(_Section):
    dev_login: bool = True
    """Let the chat page sign in as the local admin without a token. Only ever honoured when
    ``http.host`` is loopback and ``http.trusted_proxies`` is empty, for a request from
    loopback to a loopback ``Host`` (this port), relayed by no proxy, sent by no other page."""
    max_text_bytes: int = Field(default=32_768, ge=1, le=1_000_000)
    """Longest message text the API accepts (UTF-8 bytes); a longer one is refused with 422."""
    event_retention_hours: float = Field(default=24.0, gt=0)
    """How long live events are kept for WebSocket clients that reconnect and catch up."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Other origins (``https://chat.example.com``) whose pages may open the live WebSocket;
    the bridge's own origin always may."""
    live_send_timeout_seconds: float = Field(default=5.0, gt=0)
    """A live client that does not take a frame within this is disconnected (close 4408)."""
    live_max_catch_up_events: int = Field(default=5_000, ge=1)
    """A resume that would replay more events than this gets ``reset`` (reload) instead."""

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, entries: list[str]) -> list[str]:
        """Each an origin as browsers send it: ``scheme://host[:port]``, nothing after."""
        origins = []
        for entry in entries:
            parts = urlsplit(entry.strip().lower())
            try:
                _ = parts.port  # a port that is not a number raises
            except ValueError:
                parts = parts._replace(scheme="")
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or "@" in parts.netloc
                or parts.path
                or parts.query
                or parts.fragment
            ):
                raise ValueError(f"{entry!r} is not an origin like https://chat.example.com")
            origins.append(f"{parts.scheme}://{parts.netloc}")
        return origins


class A2ASettings(_Section):
    """Budgets that stop agent-to-agent chains: no path lets two agents ping-pong forever."""

    max_hops: int = Field(default=4, ge=1, le=100)
    """Hand-offs and asks one human message may set off, one after another."""
    max_turns_per_hour: int = Field(default=30, ge=1)
    """Messages two agents may send each other (both directions) in any hour."""
    max_wait_seconds: float = Field(default=120.0, gt=0)
    """Longest ``?wait=`` a direct ask may hold its request open."""


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class OpenAIBackendSettings(_Section):
    base_url: SecretUrl = SecretUrl("https://api.openai.com/v1")
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_seconds: float = Field(default=60.0, gt=0)
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)


class WebhookBackendSettings(_Section):
    url: SecretOriginUrl
    secret: SecretStr
    timeout_seconds: float = Field(default=30.0, gt=0)


class AgentSettings(BaseModel):
    """One agent. Extra tables (``[agents.slack]`` …) are channel sections, checked by the
    channel that owns them."""

    model_config = ConfigDict(extra="allow")

    slug: str
    name: str = ""
    workspace: str = "default"
    """The workspace (tenant) the agent, its sessions and their API tokens belong to."""
    backend: str = "echo"
    system_prompt: str = ""
    history_messages: int = Field(default=20, ge=0, le=1000)
    history_chars: int = Field(default=12_000, ge=0)
    idle_reset_hours: float | None = Field(default=None, gt=0)
    echo_timeout_seconds: float = Field(default=10.0, gt=0)
    echo_stream_chunk_chars: int = Field(default=0, ge=0)
    """The echo backend yields its reply in pieces of this many characters; 0: all at once."""
    echo_stream_delay_ms: int = Field(default=0, ge=0)
    """The pause between the echo backend's pieces."""
    peers: list[str] = Field(default_factory=list)
    """The agents this one may address: direct asks, the ``ask_agent`` tool, hand-offs."""
    access: AccessSettings = Field(default_factory=AccessSettings)
    """Who may talk to the agent (README, "Access and limits")."""
    limits: LimitSettings = Field(default_factory=LimitSettings)
    """How much they may, counted in the database across processes."""
    memory: MemorySettings = Field(default_factory=MemorySettings)
    """A rolling summary of what the history window drops (``openai`` backend)."""
    openai: OpenAIBackendSettings | None = None
    webhook: WebhookBackendSettings | None = None

    @field_validator("slug", "workspace")
    @classmethod
    def _slug_shape(cls, value: str) -> str:
        if not SLUG_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a slug (lowercase letters, digits, - and _)")
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r} (expected one of: {', '.join(BACKENDS)})")
        return value

    @model_validator(mode="after")
    def _backend_options_present(self) -> AgentSettings:
        if not self.name:
            self.name = self.slug
        if self.backend in ("openai", "webhook") and getattr(self, self.backend) is None:
            raise ValueError(f"backend {self.backend!r} needs an [agents.{self.backend}] table")
        if self.memory.summarize and self.backend != "openai":
            raise ValueError("memory.summarize needs the openai backend")
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"unknown key {key!r}")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Channel sections are raw dicts (their channel validates them later) and hold tokens:
        # show that they are there, never what is in them.
        extras = self.model_extra or {}
        for name, value in super().__repr_args__():
            yield (name, "{...}") if name in extras else (name, value)

    @property
    def channels(self) -> dict[str, dict[str, Any]]:
        """The channel sections by channel name, still raw: their channel validates them."""
        return dict(self.model_extra or {})

    @property
    def answer_timeout_seconds(self) -> float:
        if self.backend == "openai" and self.openai is not None:
            return self.openai.timeout_seconds
        if self.backend == "webhook" and self.webhook is not None:
            return self.webhook.timeout_seconds
        return self.echo_timeout_seconds


def _default_agents() -> list[AgentSettings]:
    return [AgentSettings(slug="assistant", name="Assistant")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid"
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    a2a: A2ASettings = Field(default_factory=A2ASettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    agents: list[AgentSettings] = Field(default_factory=_default_agents, min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment overrides it.
        return (env_settings, init_settings)

    def agent(self, slug: str) -> AgentSettings:
        for agent in self.agents:
            if agent.slug == slug:
                return agent
        raise KeyError(slug)


def _format_location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "config"


def _check_unique_slugs(settings: Settings) -> None:
    seen: dict[str, int] = {}
    for index, agent in enumerate(settings.agents):
        if agent.slug in seen:
            first = seen[agent.slug]
            raise ConfigError(
                f"agents[{index}].slug: duplicate slug {agent.slug!r} (also agents[{first}])"
            )
        seen[agent.slug] = index


def _check_peers(settings: Settings) -> None:
    slugs = {agent.slug for agent in settings.agents}
    for index, agent in enumerate(settings.agents):
        for position, peer in enumerate(agent.peers):
            where = f"agents[{index}].peers[{position}]"
            if peer == agent.slug:
                raise ConfigError(f"{where}: an agent cannot be its own peer ({peer!r})")
            if peer not in slugs:
                raise ConfigError(
                    f"{where}: unknown agent {peer!r} (configured: {', '.join(sorted(slugs))})"
                )


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from None


def load_settings(
    config_path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load the TOML file (``--config``, else ``$BRIDGE_CONFIG``, else none) and the environment."""
    path = config_path or os.environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = read_toml(Path(path)) if path else {}
    if overrides:
        data = {**data, **overrides}
    try:
        settings = Settings(**data)
    except ValidationError as error:
        line = first_error_line(error)
        raise ConfigError(f"{path}: {line}" if path else line) from None
    try:
        _check_unique_slugs(settings)
        _check_peers(settings)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from None
    return settings


def first_error_line(error: ValidationError, *, under: tuple[int | str, ...] = ()) -> str:
    """The first problem, as ``key.path: message``; ``under`` is where the model was read from."""
    first = error.errors(include_url=False)[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{_format_location(under + tuple(first['loc']))}: {message}"
