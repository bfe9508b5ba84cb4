"""Channel plugins by name, and the running channels of an app.

Plugins are the core's own (web, agent) and those named by ``bridge.channels`` entry points; a
platform's module is imported only when some agent configures that channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from bridge.infra.logs import log_event
from bridge.ports.builtin import BUILT_IN
from bridge.ports.contract import Capabilities, Channel, ChannelPlugin, ChannelStatus, Dispatch
from bridge.settings import AgentSettings, ConfigError, Settings, first_error_line

ENTRY_POINT_GROUP = "bridge.channels"
logger = logging.getLogger(__name__)
NO_CAPABILITIES = Capabilities()


class ChannelRegistry:
    def __init__(self, *, plugins: Mapping[str, ChannelPlugin[Any]] | None = None) -> None:
        """``plugins`` replaces entry-point discovery (tests bring their own); the core's own
        channels are always there."""
        self._given = dict(plugins) if plugins is not None else None

    def names(self) -> list[str]:
        found = (
            set(self._given)
            if self._given is not None
            else {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
        )
        return sorted(found | set(BUILT_IN))

    def plugin(self, name: str) -> ChannelPlugin[Any] | None:
        if name in BUILT_IN:
            return BUILT_IN[name]
        if self._given is not None:
            return self._given.get(name)
        for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
            plugin: ChannelPlugin[Any] = point.load()
            return plugin
        return None

    def capabilities(self, name: str) -> Capabilities:
        plugin = self.plugin(name)
        return NO_CAPABILITIES if plugin is None else plugin.capabilities


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfiguredChannel:
    agent: AgentSettings
    plugin: ChannelPlugin[Any]
    settings: BaseModel


def configured_channels(settings: Settings, registry: ChannelRegistry) -> list[ConfiguredChannel]:
    """Every enabled channel section of every agent, validated by its channel's own model."""
    found: list[ConfiguredChannel] = []
    always_on = [plugin.name for plugin in BUILT_IN.values() if plugin.capabilities.always_on]
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
    """The channels of one app, keyed by (channel name, agent slug).

    Known from the configuration when the app is built; each channel is created once the
    pipeline runs (:meth:`create_all`), so it gets the working ``dispatch`` at once.
    """

    def __init__(self, *, configured: list[ConfiguredChannel]) -> None:
        self._configured = configured
        self._capabilities = {c.plugin.name: c.plugin.capabilities for c in configured}
        self._channels: dict[tuple[str, str], Channel] = {}
        self._start_errors: dict[tuple[str, str], str] = {}

    def configured(self) -> list[ConfiguredChannel]:
        return list(self._configured)

    def capabilities(self, name: str) -> Capabilities:
        return self._capabilities.get(name, NO_CAPABILITIES)

    def get(self, name: str, agent_slug: str) -> Channel | None:
        return self._channels.get((name, agent_slug))

    def create_all(self, *, dispatch: Dispatch) -> None:
        for configured in self._configured:
            key = (configured.plugin.name, configured.agent.slug)
            self._channels[key] = configured.plugin.build(
                agent=configured.agent, settings=configured.settings, dispatch=dispatch
            )

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
        for configured in self._configured:
            key = (configured.plugin.name, configured.agent.slug)
            channel = self._channels.get(key)
            error = self._start_errors.get(key)
            result[f"{key[0]}/{key[1]}"] = (
                ChannelStatus(ready=False, detail=f"did not start: {error}")
                if error
                else ChannelStatus(ready=False, detail="not started")
                if channel is None
                else channel.status()
            )
        return result
