"""What the long-memory tests share: an openai agent that keeps a summary, and one exchange
with it on the memory channel."""

from __future__ import annotations

from typing import Any

from bridge.memory.prompt import FOLD_INSTRUCTION
from bridge.store.models import ChatSession
from channels.inmemory import MemoryChannel
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.harness import RunningBridge

KEY_ENV = "BRIDGE_TEST_MEMORY_OPENAI_KEY"
API_KEY = "sk-memory-test"
SYSTEM_PROMPT = "You are a helpful assistant."
LEAD = "Summary of the earlier conversation: "
FOLDS = 'bridge_memory_folds_total{agent="assistant",outcome='
FOLD_MARKER = FOLD_INSTRUCTION[:40]
"""How the fake tells a fold from an answer: the start of the fold's instruction."""


def remembering_agent(model: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {
        "slug": "assistant",
        "name": "Assistant",
        "backend": "openai",
        "system_prompt": SYSTEM_PROMPT,
        "history_messages": 4,
        "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": KEY_ENV},
        "memory": {"summarize": True},
        "inmemory": {},
        **extra,
    }


async def say(memory: MemoryChannel, model: FakeOpenAIServer, text: str) -> list[dict[str, str]]:
    """Send ``text`` as Ada, wait for the reply (the model answers ``re: text``) and return
    the messages of the answer request the model got for it."""
    model.add_reply(f"re: {text}")
    asked = len(model.answers)
    await memory.receive(text, sender_name="Ada")
    reply = await memory.next_sent()
    assert reply.text == f"re: {text}"
    assert len(model.answers) == asked + 1
    messages: list[dict[str, str]] = model.answers[-1].json["messages"]
    assert messages[-1] == {"role": "user", "content": text}
    return messages


def window(messages: list[dict[str, str]]) -> list[str]:
    """The contents between the system messages and the new message."""
    return [m["content"] for m in messages[:-1] if m["role"] != "system"]


def systems(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "system"]


async def summary_of(bridge: RunningBridge, session_id: int) -> tuple[str | None, int | None]:
    async with bridge.sessions() as db:
        session = await db.get(ChatSession, session_id)
        assert session is not None
        return session.summary, session.summary_through_message_id
