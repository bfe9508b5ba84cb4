"""What the agent backend tests share: a request to answer, and the whole answer it streams."""

from __future__ import annotations

from typing import Any

from bridge.agents.base import AgentBackend, AgentRequest
from bridge.ports.events import Sender


def agent_request(**overrides: Any) -> AgentRequest:
    """A direct web chat with agent ``helper`` asking "What is 2 + 2?", no history; any field
    replaced by ``overrides``."""
    fields: dict[str, Any] = {
        "agent_slug": "helper",
        "agent_name": "Helper",
        "system_prompt": "You are a helpful assistant.",
        "session_id": 7,
        "external_conv_id": "web:abc",
        "channel": "web",
        "is_group": False,
        "group_name": None,
        "sender": Sender(external_id="u1", display_name="Alice"),
        "message_id": 42,
        "text": "What is 2 + 2?",
        "history": (),
    }
    fields.update(overrides)
    return AgentRequest(**fields)


async def collect(backend: AgentBackend, request: AgentRequest) -> str:
    """The backend's answer to ``request``, its chunks joined."""
    return "".join([chunk async for chunk in backend.answer(request)])
