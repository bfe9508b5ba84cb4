"""``[agents.access]`` and ``[agents.limits]`` are checked at start: a mistake is one line that
names the key, and a good section is read as written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import ConfigError, Settings, load_settings
from tests.support.processes import write_toml


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ``BRIDGE_*`` variable of the developer's shell, and a cwd of our own."""
    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def agent_with(**sections: Any) -> Settings:
    return load_settings(overrides={"agents": [{"slug": "assistant", **sections}]})


def config_error(**sections: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        agent_with(**sections)
    message = str(raised.value)
    assert "\n" not in message, "one line"
    return message


def test_nothing_configured_is_open_and_unlimited() -> None:
    (agent,) = agent_with().agents
    assert (agent.access.dm, agent.access.groups) == ("open", "open")
    assert agent.access.allow == agent.access.deny == agent.access.conversations == []
    assert agent.access.is_open
    assert agent.access.denied_text == ""
    limits = agent.limits
    assert (
        limits.user_messages_per_hour,
        limits.conversation_messages_per_minute,
        limits.user_tokens_per_day,
    ) == (0, 0, 0)
    assert not limits.any
    assert limits.limited_text.startswith("You are sending messages faster")


def test_a_full_toml_section_is_read_as_written(tmp_path: Path) -> None:
    agent = {
        "slug": "assistant",
        "access": {
            "dm": "pairing",
            "groups": "allowlist",
            "allow": ["slack:U0123ABCD", "discord:80351110224678912", " web:alice "],
            "deny": ["feishu:ou_7d8a6e"],
            "conversations": ["slack:T1:C1", "discord:G1"],
            "denied_text": "Not for you.",
        },
        "limits": {
            "user_messages_per_hour": 30,
            "conversation_messages_per_minute": 10,
            "user_tokens_per_day": 50_000,
            "limited_text": "Slow down.",
        },
    }
    config = write_toml(tmp_path / "bridge.toml", {"agents": [agent]})
    (loaded,) = load_settings(config).agents
    access = loaded.access
    assert (access.dm, access.groups) == ("pairing", "allowlist")
    assert access.allow == ["slack:U0123ABCD", "discord:80351110224678912", "web:alice"]
    assert access.deny == ["feishu:ou_7d8a6e"]
    assert access.conversations == ["slack:T1:C1", "discord:G1"]
    assert access.denied_text == "Not for you."
    assert not access.is_open
    limits = loaded.limits
    assert (
        limits.user_messages_per_hour,
        limits.conversation_messages_per_minute,
        limits.user_tokens_per_day,
        limits.limited_text,
    ) == (30, 10, 50_000, "Slow down.")
    assert limits.any


@pytest.mark.parametrize(
    ("access", "unless_open"),
    [
        ({"deny": ["slack:U1"]}, False),
        ({"conversations": ["slack:T1"]}, False),
        ({"dm": "allowlist"}, False),
        ({"groups": "off"}, False),
        ({"allow": ["slack:U1"], "denied_text": "no"}, True),
    ],
)
def test_only_what_can_refuse_makes_access_checked(
    access: dict[str, Any], unless_open: bool
) -> None:
    """``allow`` alone refuses nobody while both policies are open."""
    (agent,) = agent_with(access=access).agents
    assert agent.access.is_open is unless_open


@pytest.mark.parametrize(
    ("sections", "key", "detail"),
    [
        (
            {"access": {"dm": "friends"}},
            "agents[0].access.dm",
            "'open', 'allowlist', 'pairing' or 'off'",
        ),
        ({"access": {"dm": "Open"}}, "agents[0].access.dm", "'open'"),
        (
            {"access": {"groups": "pairing"}},
            "agents[0].access.groups",
            "'open', 'allowlist' or 'off'",
        ),
        ({"access": {"groups": 1}}, "agents[0].access.groups", "'open'"),
        ({"access": {"allow": ["U0123ABCD"]}}, "agents[0].access.allow", "channel:user id"),
        ({"access": {"allow": ["slack:"]}}, "agents[0].access.allow", "'slack:'"),
        ({"access": {"allow": [":U1"]}}, "agents[0].access.allow", "':U1'"),
        ({"access": {"allow": ["Slack:U1"]}}, "agents[0].access.allow", "'Slack:U1'"),
        ({"access": {"allow": ["slack: U1"]}}, "agents[0].access.allow", "'slack: U1'"),
        ({"access": {"deny": ["web"]}}, "agents[0].access.deny", "'web'"),
        ({"access": {"allow": "slack:U1"}}, "agents[0].access.allow", "list"),
        ({"access": {"conversations": [""]}}, "agents[0].access.conversations", "''"),
        ({"access": {"conversations": ["  "]}}, "agents[0].access.conversations", "''"),
        ({"access": {"conversations": ["general"]}}, "agents[0].access.conversations", "id"),
        (
            {"access": {"conversations": ["slack:T1:"]}},
            "agents[0].access.conversations",
            "'slack:T1:'",
        ),
        ({"access": {"pairing": True}}, "agents[0].access.pairing", "not permitted"),
        (
            {"limits": {"user_messages_per_hour": -1}},
            "agents[0].limits.user_messages_per_hour",
            "greater than or equal to 0",
        ),
        (
            {"limits": {"conversation_messages_per_minute": -5}},
            "agents[0].limits.conversation_messages_per_minute",
            "greater than or equal to 0",
        ),
        (
            {"limits": {"user_tokens_per_day": -100}},
            "agents[0].limits.user_tokens_per_day",
            "greater than or equal to 0",
        ),
        (
            {"limits": {"user_messages_per_hour": 2.5}},
            "agents[0].limits.user_messages_per_hour",
            "integer",
        ),
        (
            {"limits": {"user_messages_per_hour": "many"}},
            "agents[0].limits.user_messages_per_hour",
            "integer",
        ),
        ({"limits": {"messages_per_hour": 3}}, "agents[0].limits.messages_per_hour", "not"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(
    sections: dict[str, Any], key: str, detail: str
) -> None:
    message = config_error(**sections)
    assert message.startswith(f"{key}: ") or message.startswith(f"{key}["), message
    assert detail in message


def test_the_file_is_named_first(tmp_path: Path) -> None:
    agents = [{"slug": "one"}, {"slug": "two", "access": {"deny": ["alice"]}}]
    config = write_toml(tmp_path / "bridge.toml", {"agents": agents})
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert message.startswith(f"{config}: agents[1].access.deny"), message
    assert "'alice'" in message
    assert "\n" not in message
