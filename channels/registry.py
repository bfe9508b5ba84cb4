"""Channel plugins by name, and the running channels of an app.

Plugins are found through the ``bridge.channels`` entry points and a platform's module is
imported only when some agent configures that channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from bridge.logs import log_event
from bridge.settings import AgentSettings, ConfigError, Settings, first_error_line
from channels.base import Channel, ChannelPlugin, ChannelStatus

ENTRY_POINT_GROUP = "bridge.channels"
ALWAYS_ON = ("web", "agent")
"""Channels every agent has unless its section says ``enabled = false`` (when installed)."""
logger = logging.getLogger(__name__)


class ChannelRegistry:
    def __init__(self, *, plugins: Mapping[str, ChannelPlugin] | None = None) -> None:
        """``plugins`` replaces entry-point discovery (tests bring their own)."""
        self._given = dict(plugins) if plugins is not None else None

    def names(self) -> list[str]:
        if self._given is not None:
            return sorted(self._given)
        return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))

    def plugin(self, name: str) -> ChannelPlugin | None:
        if self._given is not None:
            return self._given.get(name)
        for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
            plugin: ChannelPlugin = point.load()
            return plugin
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfiguredChannel:
    agent: AgentSettings
    plugin: ChannelPlugin
    settings: BaseModel


def configured_channels(settings: Settings, registry: ChannelRegistry) -> list[ConfiguredChannel]:
    """Every enabled channel section of every agent, validated by its channel's own model."""
    found: list[ConfiguredChannel] = []
    always_on = [name for name in ALWAYS_ON if registry.plugin(name) is not None]
    for index, agent in enumerate(settings.agents):
        sections: dict[str, dict[str, Any]] = {name: {} for name in always_on}
        sections |= agent.channels
        for name, raw in sections.items():
            where = ("agents", index, name)
            section = dict(raw)
            if section.pop("enabled", True) is False:
                continue
            plugin = registry.plugin(name)
            if plugin is None:
                known = ", ".join(registry.names()) or "none"
                raise ConfigError(
                    f"agents[{index}].{name}: unknown channel {name!r} (installed: {known})"
                )
            try:
                parsed = plugin.settings_model.model_validate(section)
            except ValidationError as error:
                raise ConfigError(first_error_line(error, under=where)) from None
            found.append(ConfiguredChannel(agent=agent, plugin=plugin, settings=parsed))
    return found


class RunningChannels:
    """The channel instances of one app, keyed by (channel name, agent slug)."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, str], Channel] = {}
        self._start_errors: dict[tuple[str, str], str] = {}

    def add(self, *, name: str, agent_slug: str, channel: Channel) -> None:
        self._channels[(name, agent_slug)] = channel

    def get(self, name: str, agent_slug: str) -> Channel | None:
        return self._channels.get((name, agent_slug))

    async def start_all(self) -> None:
        """Start every channel; one that fails is reported in /readyz, the others run on."""
        for key, channel in self._channels.items():
            try:
                await channel.start()
                log_event(logger, "channel.started", channel=key[0], agent=key[1])
            except Exception as error:
                self._start_errors[key] = f"{type(error).__name__}: {error}"
                log_event(
                    logger,
                    "channel.start_failed",
                    level=logging.ERROR,
                    channel=key[0],
                    agent=key[1],
                    error=self._start_errors[key],
                )

    async def stop_all(self) -> None:
        for key, channel in self._channels.items():
            try:
                await channel.stop()
            except Exception:
                logger.exception("channel %s/%s did not stop cleanly", *key)

    def statuses(self) -> dict[str, ChannelStatus]:
        result: dict[str, ChannelStatus] = {}
        for key, channel in self._channels.items():
            error = self._start_errors.get(key)
            result[f"{key[0]}/{key[1]}"] = (
                ChannelStatus(ready=False, detail=f"did not start: {error}")
                if error
                else channel.status()
            )
        return result
