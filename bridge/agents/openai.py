"""A backend for any OpenAI-compatible ``/chat/completions`` endpoint.

OpenAI, Azure-style proxies, vLLM, Ollama and LiteLLM all speak this shape, so one small
client covers most hosted and self-hosted models. The API key is read from the environment
variable the settings name, at call time, so keys never sit in the config file and can be
rotated without a restart.

When the request carries :class:`~bridge.agents.base.AgentTools` with at least one peer, the
model is offered one function tool, ``ask_agent`` (chat-completions function calling). Each
``tool_calls`` message is answered with one ``tool`` message per call, in order, and the
model is asked again; at most :data:`MAX_TOOL_ROUNDS` responses may call tools, then one
last request with ``"tool_choice": "none"`` makes the model answer in text. A call the
bridge cannot run (unknown tool, arguments that are not JSON or lack a field, an agent that
is not a peer) is answered with a tool result starting ``"Error: "`` that says what to do
instead, so the model can correct itself; it never raises. Without peers the request body is
the plain completion it has always been, plus the streaming options.

Every request streams (``"stream": true`` with ``"stream_options": {"include_usage": true}``):
the server-sent ``data:`` events are read as they arrive and each content delta is yielded at
once; tool calls are put together from their ``delta.tool_calls`` fragments, by ``index``.
The text of each response is stripped (leading whitespace dropped, trailing whitespace held
back until more text follows), and the texts of successive responses are joined by a blank
line: text the model writes beside its tool calls has already reached the user. The last
response must have text. A stream that ends with neither a ``finish_reason`` nor
``data: [DONE]``, breaks off, or carries an event that is not a chunk is an AgentError, even
after some text was yielded. A server that ignores ``stream`` and answers one JSON
completion is read as before. ``usage``, when the server sends it, is recorded on the request
(token budgets, the usage API) and logged as the ``agent usage`` event (one per response).

The files of the message answered go with it (:mod:`bridge.agents.openai_files`): images as
``image_url`` parts, text files inline, every other file as a line saying why it is not shown.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

import aiohttp

from bridge.agents.base import AgentError, AgentRequest, AgentTools, PeerAgent, UsageMeter
from bridge.agents.http import (
    MAX_RESPONSE_BYTES,
    ReplyBody,
    display_url,
    open_reply,
    request_secrets,
)
from bridge.agents.openai_files import NO_FILES, ShownFiles, fit_history, show_files, user_content
from bridge.agents.openai_stream import (
    MAX_TOOL_ROUNDS,
    ModelTurn,
    StreamedText,
    StreamedTurn,
    ToolCall,
    no_text,
    parse_turn,
    read_turn,
)
from bridge.infra.logs import log_event
from bridge.settings import OpenAIBackendSettings

__all__ = [
    "ASK_AGENT",
    "MAX_RESPONSE_BYTES",
    "MAX_TOOL_ROUNDS",
    "STREAM_OPTIONS",
    "SUMMARY_LEAD",
    "ModelTurn",
    "OpenAIBackend",
    "ToolCall",
    "assistant_message",
    "build_messages",
    "build_payload",
    "build_tools",
    "parse_turn",
    "run_tool_call",
]

ASK_AGENT = "ask_agent"
SUMMARY_LEAD = "Summary of the earlier conversation: "
STREAM_OPTIONS: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
"""Added to every request body: stream the answer, and end the stream with the usage."""

logger = logging.getLogger(__name__)


def build_messages(request: AgentRequest, files: ShownFiles = NO_FILES) -> list[dict[str, Any]]:
    """The ``messages`` list: system prompt (if any), the summary of the earlier conversation
    (if any, as a second system message), the history window, the new message.

    Chat-completions has no notion of several human speakers, so in a group chat each user
    turn whose speaker is known is written as ``"Name: text"`` (history and the new message
    alike); the model can then tell people apart. Assistant turns and one-to-one chats are
    sent unchanged. ``files`` (:mod:`bridge.agents.openai_files`) go with the new message;
    the history left out to make room for their text is the oldest.
    """
    messages: list[dict[str, Any]] = []
    if request.system_prompt.strip():
        messages.append({"role": "system", "content": request.system_prompt})
    if request.summary:
        messages.append({"role": "system", "content": f"{SUMMARY_LEAD}{request.summary}"})
    for item in fit_history(request.history, budget=request.context_chars, files=files):
        content = item.content
        if request.is_group and item.role == "user" and item.sender_name:
            content = f"{item.sender_name}: {content}"
        messages.append({"role": item.role, "content": content})
    text = request.text
    if request.is_group and request.sender.display_name:
        text = f"{request.sender.display_name}: {text}"
    messages.append({"role": "user", "content": user_content(text, files)})
    return messages


def build_tools(peers: Sequence[PeerAgent]) -> list[dict[str, Any]]:
    """The ``tools`` list: the one ``ask_agent`` function, its ``agent`` enum the peer slugs."""
    listed = ", ".join(f"{peer.slug} ({peer.name})" for peer in peers)
    return [
        {
            "type": "function",
            "function": {
                "name": ASK_AGENT,
                "description": (
                    "Ask another agent a question and get its answer as text. Use it when "
                    "another agent is better placed to answer part of the message. "
                    f"The agents you may ask: {listed}."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "agent": {
                            "type": "string",
                            "enum": [peer.slug for peer in peers],
                            "description": "The slug of the agent to ask.",
                        },
                        "text": {
                            "type": "string",
                            "description": (
                                "The message for that agent. It does not see this "
                                "conversation, so make the question complete on its own."
                            ),
                        },
                    },
                    "required": ["agent", "text"],
                    "additionalProperties": False,
                },
            },
        }
    ]


def build_payload(
    settings: OpenAIBackendSettings,
    request: AgentRequest,
    *,
    exchange: Sequence[dict[str, Any]] = (),
    final: bool = False,
    files: ShownFiles = NO_FILES,
) -> dict[str, Any]:
    """The request body; optional sampling options are sent only when configured.

    ``exchange`` is what this answer added so far: assistant ``tool_calls`` messages and the
    ``tool`` results, appended after the new message. ``tools`` is sent only when the
    request has peers; ``final`` adds ``"tool_choice": "none"`` so the model must answer
    in text (the tools stay listed, since the messages refer to them).
    """
    messages: list[dict[str, Any]] = [*build_messages(request, files), *exchange]
    payload: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.temperature is not None:
        payload["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        payload["max_tokens"] = settings.max_tokens
    if request.tools is not None and request.tools.peers:
        payload["tools"] = build_tools(request.tools.peers)
        if final:
            payload["tool_choice"] = "none"
    return payload


def assistant_message(turn: ModelTurn) -> dict[str, Any]:
    """The model's ``tool_calls`` message as it goes back into ``messages``."""
    return {
        "role": "assistant",
        "content": turn.content,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in turn.tool_calls
        ],
    }


async def run_tool_call(call: ToolCall, tools: AgentTools) -> str:
    """The ``tool`` message content for ``call``: the peer's answer, or an ``Error: `` text."""
    peers = tools.peers
    listed = ", ".join(peer.slug for peer in peers)
    usage = f'Call {ASK_AGENT} with {{"agent": "<one of: {listed}>", "text": "<question>"}}.'
    if call.name != ASK_AGENT:
        return f"Error: there is no tool named {call.name!r}; the only tool is {ASK_AGENT}."
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        return f"Error: the arguments are not valid JSON. {usage}"
    if not isinstance(arguments, dict):
        return f"Error: the arguments must be a JSON object. {usage}"
    agent, text = arguments.get("agent"), arguments.get("text")
    if not isinstance(agent, str) or not isinstance(text, str):
        return f'Error: "agent" and "text" are both required and must be strings. {usage}'
    if agent not in {peer.slug for peer in peers}:
        return f"Error: {agent!r} is not an agent you may ask. You may ask: {listed}."
    if not text.strip():
        return f'Error: "text" is empty; write the question for {agent}.'
    return await tools.ask(agent=agent, text=text)


class OpenAIBackend:
    """Answers with chat completions; the shared ``http`` session belongs to the app."""

    def __init__(self, *, settings: OpenAIBackendSettings, http: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._http = http
        self._url = f"{settings.base_url.get_secret_value().rstrip('/')}/chat/completions"
        self._shown_url = display_url(self._url)

    async def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the text as it streams in; raise AgentError on any failure.

        With peers, tool calls are run between requests (see the module docstring). If the
        last request, which allows no tool calls, still gets no text back, that is an
        AgentError: there is no answer to give.
        """
        headers = self._headers(self._api_key())
        # The upstream may echo any of these in an error: none of them may reach a message.
        secrets = request_secrets(url=self._url, headers=headers)
        tools = request.tools if request.tools is not None and request.tools.peers else None
        exchange: list[dict[str, Any]] = []
        files = await show_files(request)
        text = StreamedText()
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            final = tools is None or round_number == MAX_TOOL_ROUNDS
            payload = {
                **build_payload(
                    self._settings, request, exchange=exchange, final=final, files=files
                ),
                **STREAM_OPTIONS,
            }
            text.next_response()
            turn = StreamedTurn()
            async with (
                self._open(headers, secrets, payload) as reply,
                aclosing(read_turn(reply, turn, secrets)) as deltas,
            ):
                async for delta in deltas:
                    if shown := text.feed(delta):
                        yield shown
            if turn.usage is not None:
                self._log_usage(request, turn.usage)
            model_turn = turn.model_turn(secrets)
            if final or tools is None or not model_turn.tool_calls:
                if not text.response_had_text:
                    raise no_text(model_turn, out_of_rounds=tools is not None and final)
                return
            exchange.append(assistant_message(model_turn))
            for call in model_turn.tool_calls:
                result = await run_tool_call(call, tools)
                exchange.append({"role": "tool", "tool_call_id": call.id, "content": result})

    async def complete(self, messages: Sequence[dict[str, str]], *, usage: UsageMeter) -> str:
        """One plain completion of ``messages`` (not streamed, no tools), its text stripped:
        how the bridge asks the agent's own model for something other than an answer (the
        long memory's summary). ``usage`` gets what it cost. Raises AgentError on any failure,
        an empty text included; bounded by the backend's timeout."""
        headers = self._headers(self._api_key())
        secrets = request_secrets(url=self._url, headers=headers)
        payload: dict[str, Any] = {"model": self._settings.model, "messages": list(messages)}
        if self._settings.temperature is not None:
            payload["temperature"] = self._settings.temperature
        async with self._open(headers, secrets, payload) as reply:
            raw = await reply.read()
        text = (parse_turn(raw, secrets=secrets).content or "").strip()
        spent = json.loads(raw).get("usage")  # parse_turn has checked it is a JSON object
        if isinstance(spent, dict):
            usage.add(
                input_tokens=_count(spent.get("prompt_tokens")),
                output_tokens=_count(spent.get("completion_tokens")),
            )
        if not text:
            raise AgentError("openai backend: the model returned an empty completion")
        return text

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is owned and closed by the app."""
        return None

    def _headers(self, api_key: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream, application/json",
        }

    def _open(
        self, headers: dict[str, str], secrets: Iterable[str], payload: dict[str, Any]
    ) -> AbstractAsyncContextManager[ReplyBody]:
        return open_reply(
            self._http,
            url=self._url,
            shown_url=self._shown_url,
            body=json.dumps(payload, ensure_ascii=False).encode(),
            headers=headers,
            timeout_seconds=self._settings.timeout_seconds,
            label="openai",
            secrets=secrets,
        )

    def _log_usage(self, request: AgentRequest, usage: dict[str, Any]) -> None:
        counts = {
            key: value
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")
            if isinstance(value := usage.get(key), int) and not isinstance(value, bool)
        }
        request.usage.add(
            input_tokens=counts.get("prompt_tokens", 0),
            output_tokens=counts.get("completion_tokens", 0),
        )
        log_event(
            logger,
            "agent usage",
            agent=request.agent_slug,
            session_id=request.session_id,
            message_id=request.message_id,
            model=self._settings.model,
            **counts,
        )

    def _api_key(self) -> str:
        # Name the variable, never its value: error messages end up in logs.
        name = self._settings.api_key_env
        key = os.environ.get(name, "").strip()
        if not key:
            raise AgentError(
                f"openai backend: environment variable {name} is not set or empty",
                reason="the agent is not set up correctly",
            )
        return key


def _count(value: Any) -> int:
    """A token count as the server reported it; anything else counts nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
