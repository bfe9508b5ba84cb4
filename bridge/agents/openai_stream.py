"""Reading an OpenAI-compatible answer: a JSON completion, or server-sent chunks as they come.

Split from :mod:`bridge.agents.openai`, which asks; this module only reads what comes back
(see that module's docstring for the rules).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from bridge.agents.base import UNUSABLE_ANSWER, AgentError
from bridge.agents.http import BROKEN_ANSWER, ReplyBody, parse_json
from bridge.infra.redact import excerpt

MAX_TOOL_ROUNDS = 4
"""How many responses in one answer may call tools; the request after that offers none."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One entry of ``message.tool_calls``; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ModelTurn:
    """``choices[0].message``: its text (``None`` when null) and its tool calls, if any."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()


def parse_turn(raw: bytes, *, secrets: Iterable[str] = ()) -> ModelTurn:
    """``choices[0].message`` of a response body: its content and its tool calls.

    Raises AgentError when the body is not JSON, has no message, or the content or a tool
    call has the wrong shape. A missing or empty ``tool_calls`` means none. Error messages
    quote the body without ``secrets`` (what the request carried).
    """
    data = parse_json(raw, label="openai", what="response", secrets=secrets)
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        message = None
    if not isinstance(message, dict):
        shown = excerpt(raw, secrets=secrets)
        raise AgentError(
            f"openai backend: response has no choices[0].message: {shown}",
            reason=UNUSABLE_ANSWER,
        )
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise AgentError(
            f"openai backend: choices[0].message.content is {type(content).__name__}, not text",
            reason=UNUSABLE_ANSWER,
        )
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise AgentError(
            "openai backend: choices[0].message.tool_calls is not a list", reason=UNUSABLE_ANSWER
        )
    return ModelTurn(
        content=content, tool_calls=tuple(_parse_call(call, secrets) for call in calls)
    )


def _parse_call(call: Any, secrets: Iterable[str]) -> ToolCall:
    """One tool call; arguments given as a JSON value rather than as text are re-encoded."""
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        call_id, function = call.get("id"), call["function"]
        name, arguments = function.get("name"), function.get("arguments", "")
        if isinstance(call_id, str) and call_id and isinstance(name, str):
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            return ToolCall(id=call_id, name=name, arguments=arguments)
    shown = excerpt(json.dumps(call, ensure_ascii=False), secrets=secrets)
    raise AgentError(
        f"openai backend: a tool call has no id or function name: {shown}", reason=UNUSABLE_ANSWER
    )


def no_text(turn: ModelTurn, *, out_of_rounds: bool) -> AgentError:
    """Why the last response, which had no text, gives no answer."""
    if out_of_rounds and turn.tool_calls:
        return AgentError(
            f"openai backend: the model gave no text, only more tool calls, after "
            f"{MAX_TOOL_ROUNDS} rounds of tool calls",
            reason="the agent gave no answer",
        )
    return AgentError(
        "openai backend: the model returned an empty reply", reason="the agent gave an empty answer"
    )


class StreamedText:
    """What of the streamed content to yield: each response's text stripped, the texts of
    successive responses separated by a blank line.

    Leading whitespace of a response is dropped and trailing whitespace held back until more
    text follows, so the chunks join to exactly the stripped texts.
    """

    def __init__(self) -> None:
        self._any_text = False
        self.response_had_text = False
        self._held = ""

    def next_response(self) -> None:
        self.response_had_text = False
        self._held = ""

    def feed(self, delta: str) -> str:
        """The part of ``delta`` to yield now (possibly empty)."""
        if not self.response_had_text:
            delta = delta.lstrip()
            if not delta:
                return ""
            before = "\n\n" if self._any_text else ""
            self._any_text = self.response_had_text = True
        else:
            before = self._held
        kept = delta.rstrip()
        if not kept:
            self._held += delta
            return ""
        self._held = delta[len(kept) :]
        return before + kept


@dataclass(slots=True)
class _CallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StreamedTurn:
    """One response as it streams in: content, tool-call fragments by index, the end."""

    content: list[str] | None = None
    calls: dict[int, _CallParts] = field(default_factory=dict)
    finish_reason: str | None = None
    done: bool = False
    usage: dict[str, Any] | None = None
    whole: ModelTurn | None = None
    """Set when the server answered one JSON completion instead of a stream."""

    def model_turn(self, secrets: Iterable[str]) -> ModelTurn:
        if self.whole is not None:
            return self.whole
        calls: list[ToolCall] = []
        for index in sorted(self.calls):
            parts = self.calls[index]
            if not parts.id or not parts.name:
                shown = excerpt(
                    json.dumps({"index": index, "id": parts.id, "name": parts.name}),
                    secrets=secrets,
                )
                raise AgentError(
                    f"openai backend: a streamed tool call has no id or function name: {shown}",
                    reason=UNUSABLE_ANSWER,
                )
            calls.append(ToolCall(id=parts.id, name=parts.name, arguments="".join(parts.arguments)))
        content = None if self.content is None else "".join(self.content)
        return ModelTurn(content=content, tool_calls=tuple(calls))

    def add_call_fragment(self, fragment: Any, secrets: Iterable[str]) -> None:
        """One entry of ``delta.tool_calls``: the first of a call brings its id and name,
        the following ones pieces of its arguments. Without an ``index``, a fragment with an
        ``id`` starts a new call and one without continues the last."""
        function = fragment.get("function", {}) if isinstance(fragment, dict) else None
        if not isinstance(function, dict):
            raise _bad_event("a tool call fragment is not an object", fragment, secrets)
        index = fragment.get("index")
        if index is None:
            last = max(self.calls, default=-1)
            index = last + 1 if fragment.get("id") or last < 0 else last
        call_id, name = fragment.get("id"), function.get("name")
        arguments = function.get("arguments")
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not isinstance(call_id, str | None)
            or not isinstance(name, str | None)
        ):
            raise _bad_event("a tool call fragment has the wrong shape", fragment, secrets)
        parts = self.calls.setdefault(index, _CallParts())
        if call_id and not parts.id:
            parts.id = call_id
        if name and not parts.name:
            parts.name = name
        if arguments is not None:
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            parts.arguments.append(arguments)


def _usage_of(raw: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of a whole (non-streamed) completion, already known to be JSON."""
    data = json.loads(raw)
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


async def read_turn(
    reply: ReplyBody, turn: StreamedTurn, secrets: Iterable[str]
) -> AsyncGenerator[str, None]:
    """Read one response into ``turn``, yielding each content delta as it arrives."""
    if reply.content_type != "text/event-stream":
        raw = await reply.read()
        whole = parse_turn(raw, secrets=secrets)
        turn.whole = whole
        turn.usage = _usage_of(raw)
        turn.finish_reason = "stop"
        if whole.content is not None:
            yield whole.content
        return
    async with aclosing(_sse_data(reply.lines(), secrets)) as events:
        async for data in events:
            if data == "[DONE]":
                turn.done = True
                return
            for delta in _read_chunk(data, turn, secrets):
                yield delta
    if turn.finish_reason is None:
        raise AgentError(
            "openai backend: the stream ended before the answer was complete "
            "(no finish_reason and no [DONE])",
            reason=BROKEN_ANSWER,
        )


def _read_chunk(data: str, turn: StreamedTurn, secrets: Iterable[str]) -> list[str]:
    """Apply one ``chat.completion.chunk`` to ``turn``; its content deltas."""
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        raise _bad_event("a stream event is not JSON", data, secrets) from None
    if not isinstance(chunk, dict):
        raise _bad_event("a stream event is not an object", data, secrets)
    if "error" in chunk:
        shown = excerpt(json.dumps(chunk["error"], ensure_ascii=False), secrets=secrets)
        raise AgentError(f"openai backend: the stream reported an error: {shown}")
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        turn.usage = usage
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _bad_event("choices of a stream event is not a list", data, secrets)
    deltas: list[str] = []
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise _bad_event("a stream event's delta is not an object", data, secrets)
        content = delta.get("content")
        if content is not None:
            if not isinstance(content, str):
                raise _bad_event("a stream event's content is not text", data, secrets)
            if turn.content is None:
                turn.content = []
            turn.content.append(content)
            if content:
                deltas.append(content)
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            raise _bad_event("a stream event's tool_calls is not a list", data, secrets)
        for fragment in calls:
            turn.add_call_fragment(fragment, secrets)
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str) and finish_reason:
            turn.finish_reason = finish_reason
    return deltas


async def _sse_data(
    lines: AsyncGenerator[bytes, None], secrets: Iterable[str]
) -> AsyncGenerator[str, None]:
    """The data of each server-sent event: its ``data:`` lines joined by newlines. Comments
    and other fields are skipped; an event not closed by a blank line at the end counts."""
    data: list[str] = []
    async with aclosing(lines):
        async for raw in lines:
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                raise _bad_event("a stream line is not UTF-8", raw, secrets) from None
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def _bad_event(what: str, shown: Any, secrets: Iterable[str]) -> AgentError:
    if not isinstance(shown, str | bytes):
        shown = json.dumps(shown, ensure_ascii=False, default=str)
    return AgentError(
        f"openai backend: {what}: {excerpt(shown, secrets=secrets)}", reason=UNUSABLE_ANSWER
    )
