"""The echo backend: the user's text back, whole or streamed in pieces."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from bridge.agents.echo import EchoBackend
from bridge.settings import AgentSettings
from tests.support.shared_agents import agent_request


async def chunks_of(backend: EchoBackend, text: str) -> list[str]:
    return [chunk async for chunk in backend.answer(agent_request(text=text))]


@pytest.mark.parametrize(
    ("chunk_chars", "text", "expected"),
    [
        (0, "Hello there", ["Hello there"]),
        (3, "Hello there", ["Hel", "lo ", "the", "re"]),
        (4, "abcdefgh", ["abcd", "efgh"]),
        (5, "  ✓ é  ", ["  ✓ é", "  "]),
        (20, "short", ["short"]),
        (3, "", [""]),
    ],
)
async def test_the_reply_comes_in_pieces_of_chunk_chars(
    chunk_chars: int, text: str, expected: list[str]
) -> None:
    backend = EchoBackend(chunk_chars=chunk_chars)

    assert await chunks_of(backend, text) == expected


async def test_the_delay_between_pieces_lets_other_tasks_run() -> None:
    """Each pause awaits, so a task that is ready runs between two pieces."""
    seen: list[str] = []

    async def other_task() -> None:
        seen.append("other")

    async def read(backend: EchoBackend) -> None:
        task = asyncio.get_running_loop().create_task(other_task())
        async for chunk in backend.answer(agent_request(text="abcdef")):
            seen.append(chunk)
        await task

    await read(EchoBackend(chunk_chars=2, delay_ms=1))
    assert seen == ["ab", "other", "cd", "ef"]
    seen.clear()
    # Without a delay nothing awaits between pieces: the other task runs after them all.
    await read(EchoBackend(chunk_chars=2))
    assert seen == ["ab", "cd", "ef", "other"]


def test_the_settings_default_to_one_piece_and_refuse_negative_values() -> None:
    agent = AgentSettings(slug="echo")
    assert (agent.echo_stream_chunk_chars, agent.echo_stream_delay_ms) == (0, 0)
    configured = AgentSettings(slug="echo", echo_stream_chunk_chars=8, echo_stream_delay_ms=40)
    assert (configured.echo_stream_chunk_chars, configured.echo_stream_delay_ms) == (8, 40)
    for field in ("echo_stream_chunk_chars", "echo_stream_delay_ms"):
        with pytest.raises(ValidationError, match=field):
            AgentSettings.model_validate({"slug": "echo", field: -1})
    with pytest.raises(ValueError, match="negative"):
        EchoBackend(chunk_chars=-1)
