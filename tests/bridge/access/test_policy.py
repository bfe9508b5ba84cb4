"""The access decision alone (``bridge.access.policy``): pure, so every process decides alike."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.access.policy import (
    agent_refusal,
    identity_of,
    in_conversations,
    needs_grants,
    refusal,
)
from bridge.access.settings import AccessSettings

ALICE = "slack:U1"
BOB = "slack:U2"


def decide(
    identity: str = ALICE,
    *,
    is_group: bool = False,
    conversation: str = "slack:T1:D1",
    parent: str | None = None,
    granted: bool = False,
    **access: Any,
) -> str | None:
    return refusal(
        AccessSettings(**access),
        identity=identity,
        is_group=is_group,
        conversation_ids=(conversation, parent),
        granted=granted,
    )


def test_an_identity_is_the_channel_and_the_platform_user_id() -> None:
    assert identity_of("slack", "U0123ABCD") == "slack:U0123ABCD"
    assert identity_of("web", "alice") == "web:alice"


def test_open_answers_everyone_in_dms_and_groups() -> None:
    assert decide() is None
    assert decide(BOB, is_group=True, conversation="slack:T1:C1") is None


@pytest.mark.parametrize("is_group", [False, True])
def test_deny_wins_over_allow_and_open(is_group: bool) -> None:
    policy: dict[str, Any] = {"dm": "allowlist", "groups": "allowlist"}
    assert decide(is_group=is_group, allow=[ALICE], deny=[ALICE], **policy) == "denied"
    assert decide(is_group=is_group, deny=[ALICE]) == "denied"
    # Also over a pairing approval and over the conversation filter.
    assert decide(is_group=is_group, deny=[ALICE], granted=True, **policy) == "denied"
    assert decide(is_group=is_group, deny=[ALICE], conversations=["discord:G1"]) == "denied"
    # Only the identity named.
    assert decide(BOB, is_group=is_group, allow=[BOB], deny=[ALICE], **policy) is None


def test_deny_names_one_identity_of_one_channel() -> None:
    assert decide("discord:U1", deny=[ALICE]) is None
    assert decide("slack:U10", deny=[ALICE]) is None


@pytest.mark.parametrize(
    ("conversation", "parent", "allowed"),
    [
        ("slack:T1:C1", None, True),
        ("slack:T1:C1:123.4", None, True),  # a thread under the channel
        ("slack:T1:C10", None, False),  # not a prefix at a ':' boundary
        ("slack:T1:C10:123.4", None, False),
        ("slack:T1", None, False),  # the workspace is wider than the channel
        ("slack:T2:C1", None, False),
        ("slack:T1:C2", None, False),
        # A thread with an id of its own, under an allowed channel: its parent is matched.
        ("discord:T99", "slack:T1:C1", True),
        ("discord:T99", "slack:T1:C10", False),
        ("discord:G1:C5", None, True),
        ("discord:G10:C5", None, False),
    ],
)
def test_the_conversation_filter_matches_whole_segments_and_the_parent(
    conversation: str, parent: str | None, allowed: bool
) -> None:
    prefixes = ["slack:T1:C1", "discord:G1"]
    assert in_conversations(prefixes, conversation, parent) is allowed
    for is_group in (False, True):
        expected = None if allowed else "conversation"
        got = decide(
            is_group=is_group, conversation=conversation, parent=parent, conversations=prefixes
        )
        assert got == expected


def test_the_conversation_filter_comes_before_the_policies() -> None:
    outside: dict[str, Any] = {"conversation": "slack:T1:C2", "conversations": ["slack:T1:C1"]}
    assert decide(allow=[ALICE], dm="allowlist", **outside) == "conversation"
    assert decide(dm="off", **outside) == "conversation"
    assert decide(dm="pairing", **outside) == "conversation"
    inside: dict[str, Any] = {"conversation": "slack:T1:C1", "conversations": ["slack:T1:C1"]}
    assert decide(dm="off", **inside) == "dm_off"
    assert decide(dm="pairing", **inside) == "pairing"


def test_no_conversation_filter_when_the_list_is_empty() -> None:
    assert in_conversations([], "slack:T1:C1") is False
    assert decide(conversation="anything:at-all", conversations=[]) is None


def test_dm_off_refuses_dms_only() -> None:
    assert decide(dm="off") == "dm_off"
    assert decide(dm="off", allow=[ALICE]) == "dm_off", "off answers nobody"
    assert decide(dm="off", granted=True) == "dm_off"
    assert decide(is_group=True, dm="off") is None


def test_dm_allowlist_answers_allowed_and_approved_identities() -> None:
    assert decide(dm="allowlist", allow=[ALICE]) is None
    assert decide(BOB, dm="allowlist", allow=[ALICE]) == "not_allowed"
    assert decide(BOB, dm="allowlist", allow=[ALICE], granted=True) is None
    assert decide(dm="allowlist") == "not_allowed"
    # The DM policy says nothing about groups.
    assert decide(BOB, is_group=True, dm="allowlist", allow=[ALICE]) is None


def test_dm_pairing_asks_unknown_people_to_pair() -> None:
    assert decide(dm="pairing") == "pairing"
    assert decide(dm="pairing", granted=True) is None
    assert decide(dm="pairing", allow=[ALICE]) is None
    assert decide(is_group=True, dm="pairing") is None


def test_groups_off_refuses_groups_only() -> None:
    assert decide(is_group=True, groups="off") == "groups_off"
    assert decide(is_group=True, groups="off", allow=[ALICE], granted=True) == "groups_off"
    assert decide(groups="off") is None


def test_groups_allowlist_answers_allowed_and_approved_identities() -> None:
    assert decide(is_group=True, groups="allowlist", allow=[ALICE]) is None
    assert decide(BOB, is_group=True, groups="allowlist", allow=[ALICE]) == "not_allowed"
    assert decide(BOB, is_group=True, groups="allowlist", granted=True) is None
    # A group never pairs: an unknown person there is simply not allowed.
    assert decide(BOB, is_group=True, groups="allowlist", dm="pairing") == "not_allowed"


def test_grants_are_looked_up_only_where_they_can_change_the_answer() -> None:
    assert needs_grants(AccessSettings(dm="allowlist"), is_group=False)
    assert needs_grants(AccessSettings(dm="pairing"), is_group=False)
    assert not needs_grants(AccessSettings(dm="pairing"), is_group=True)
    assert needs_grants(AccessSettings(groups="allowlist"), is_group=True)
    assert not needs_grants(AccessSettings(groups="allowlist"), is_group=False)
    assert not needs_grants(AccessSettings(dm="off", groups="off"), is_group=False)
    assert not needs_grants(AccessSettings(), is_group=True)


def test_another_agent_meets_deny_and_the_conversation_filter_only() -> None:
    strict = AccessSettings(dm="off", groups="off", conversations=["slack:T1:C1"])
    # A direct ask has no platform conversation: neither the policies nor the filter apply.
    assert agent_refusal(strict, identity="agent:alpha", conversation_ids=None) is None
    # A hand-off in a platform conversation meets the filter, never the user policies.
    assert (
        agent_refusal(strict, identity="agent:alpha", conversation_ids=("slack:T1:C1:9.9", None))
        is None
    )
    assert (
        agent_refusal(strict, identity="agent:alpha", conversation_ids=("slack:T1:C10", None))
        == "conversation"
    )
    assert (
        agent_refusal(strict, identity="agent:alpha", conversation_ids=("discord:X", "slack:T1:C1"))
        is None
    )
    denied = AccessSettings(deny=["agent:alpha"])
    assert agent_refusal(denied, identity="agent:alpha", conversation_ids=None) == "denied"
    assert (
        agent_refusal(denied, identity="agent:alpha", conversation_ids=("slack:T1:C1", None))
        == "denied"
    )
    assert agent_refusal(denied, identity="agent:beta", conversation_ids=None) is None
    # Without a filter, a hand-off anywhere is let through.
    assert (
        agent_refusal(AccessSettings(), identity="agent:alpha", conversation_ids=("x:y", None))
        is None
    )
