"""The one small interface every agent backend implements.

An answer is an async stream of text chunks, so streaming replies can come later without
changing the interface; today the pipeline joins the chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.ports.events import Sender

NO_ANSWER = "the agent could not answer"
UNUSABLE_ANSWER = "the agent's answer was unusable"


class AgentError(Exception):
    """The backend failed: raised, timed out or answered something unusable.

    ``str(error)`` is the detail for logs and admins, and must already be redacted
    (:mod:`bridge.redact`): it may quote the upstream. ``reason`` is the short cause an
    ordinary user may see; the bridge writes it and it never quotes the upstream.
    """

    def __init__(self, detail: str, *, reason: str = NO_ANSWER) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryMessage:
    role: Literal["user", "assistant"]
    content: str
    sender_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAgent:
    slug: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentAttachment:
    """One file of the message answered, as its ``attachments`` row describes it.

    ``read`` and ``link`` are set only for a stored file: ``read`` fetches its bytes from the
    file store (raising :class:`LookupError` when the object is gone, another error when the
    store fails: a backend tells the model and answers anyway); ``link`` makes a fresh
    absolute signed URL to it, valid for ``files.link_ttl_seconds``.
    """

    id: int
    name: str
    content_type: str | None
    size: int | None
    state: str
    """``stored``, ``pending``, ``refused`` or ``failed`` (see ``AttachmentState``)."""
    reason: str | None = None
    for_model: bool = False
    """Its type is one of ``files.model_content_types``: a model may be shown its content."""
    read: Callable[[], Awaitable[bytes]] | None = field(default=None, compare=False)
    link: Callable[[], str] | None = field(default=None, compare=False)

    @property
    def media_type(self) -> str:
        """``type/subtype`` in lower case, without parameters."""
        return (self.content_type or "application/octet-stream").split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerFile:
    """A file the agent's answer carries, as the backend took it in: its content when kept
    (``state`` ``kept``), else only its metadata and why (``refused``: over a limit or from a
    host it does not belong to; ``failed``: fetching it failed). The answer step stores it."""

    name: str
    content_type: str
    size: int | None
    data: bytes | None = None
    state: Literal["kept", "refused", "failed"] = "kept"
    reason: str | None = None


class AgentTools(Protocol):
    """What the bridge lets an agent do while it answers: ask its peers.

    ``ask`` goes through the same path as a direct ask (a session of the peer with source
    channel ``agent``, the loop budgets, the peer's own backend) and always returns text for
    the model: the peer's answer, or why there is none (refused, over budget, timed out). The
    exchange is recorded in the asking agent's session.
    """

    @property
    def peers(self) -> tuple[PeerAgent, ...]: ...

    async def ask(self, *, agent: str, text: str) -> str: ...


class UsageMeter:
    """Where a backend records the model tokens one answer cost (every model call of it,
    tool rounds included), for token budgets and the usage API."""

    __slots__ = ("input_tokens", "output_tokens")

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0

    def add(self, *, input_tokens: int = 0, output_tokens: int = 0) -> None:
        self.input_tokens += max(0, input_tokens)
        self.output_tokens += max(0, output_tokens)

    @property
    def reported(self) -> bool:
        return bool(self.input_tokens or self.output_tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRequest:
    """Everything a backend may use to answer one message.

    ``history`` is the bounded window before ``text``, oldest first; it never includes ``text``.
    ``summary`` is the session's long memory (what the window no longer holds), when the agent
    keeps one; backends that cannot place it ignore it.
    """

    agent_slug: str
    agent_name: str
    system_prompt: str
    session_id: int
    external_conv_id: str
    channel: str
    is_group: bool
    group_name: str | None
    sender: Sender
    message_id: int
    text: str
    history: tuple[HistoryMessage, ...]
    summary: str | None = None
    """The rolling summary of the earlier conversation (``[agents.memory]``), sent ahead of
    ``history`` by the openai backend."""
    tools: AgentTools | None = None
    """Set when the agent has peers; backends that support tool calls offer ``ask_agent``."""
    usage: UsageMeter = field(default_factory=UsageMeter)
    """Filled by the backend as it answers, when its upstream reports usage."""
    attachments: tuple[AgentAttachment, ...] = ()
    """The files of this message (not of the history), in the order it carries them."""
    answer_files: list[AnswerFile] = field(default_factory=list)
    """Filled by a backend whose answer carries files, in their order, once the answer is
    complete (a streamed answer's files come with its end)."""
    context_chars: int | None = None
    """The agent's ``history_chars``: the window and the text of attached files share it
    (the openai backend drops the oldest history to make room for the files)."""


class AgentBackend(Protocol):
    def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the reply in chunks; raise AgentError when no reply can be given."""
        ...

    async def aclose(self) -> None: ...
