"""One driver per platform for the channel contract suite (tests/channels/test_contract.py).

Each driver starts its platform's strict fake and the real bridge (real client library, real
database), speaks as a user through the fake's own verbs, and reads what the bridge posted
back as a :class:`Post`. The fakes name the same things differently (``next_post`` /
``next_sent``, ``rate_limit_next`` / ``fail_next_posts``, a webhook push / a gateway dispatch);
a driver hides that, and says where the platform's rules differ (where a reply is addressed,
what a conversation id looks like, the part limit).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bridge.store.models import ChatMessage
from tests.fakes import slack
from tests.fakes.discord import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_THREAD_ID,
    DEFAULT_USER_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
)
from tests.fakes.discord import DEFAULT_USER_NAME as DISCORD_USER_NAME
from tests.fakes.feishu import (
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_GROUP_CHAT_ID,
    DEFAULT_GROUP_CHAT_NAME,
    DEFAULT_P2P_CHAT_ID,
    DEFAULT_USER_OPEN_ID,
    FakeFeishu,
)
from tests.fakes.feishu import DEFAULT_USER_NAME as FEISHU_USER_NAME
from tests.fakes.slack import FakeSlack
from tests.support.discord import discord_section
from tests.support.harness import RunningBridge, make_settings, running_bridge

PLATFORMS = ("slack", "discord", "feishu")


@dataclass(frozen=True, slots=True)
class Said:
    """A message a user (or bot) sent on the platform: its id, where, and the raw event."""

    message_id: str
    place: str
    raw: Any


@dataclass(frozen=True, slots=True)
class Post:
    """A message the bridge created on the platform."""

    id: str
    text: str
    place: str
    raw: Any


@dataclass(frozen=True, slots=True)
class Conversation:
    """The session a platform conversation should be stored as."""

    external_conv_id: str
    parent_conv_id: str | None
    group_name: str | None


class Driver(Protocol):
    """What every platform's driver offers the contract suite."""

    name: ClassVar[str]
    human_id: ClassVar[str]
    human_name: ClassVar[str]
    other_id: ClassVar[str]
    """A second person, for tests where who speaks matters (access, limits)."""
    part_limit: ClassVar[int]
    part_joiner: ClassVar[str]
    rate_limited_status: ClassVar[int]
    attempts_after_a_rate_limit: ClassVar[int]

    @property
    def running(self) -> RunningBridge: ...

    def bridge(self, database_url: str, **agent: Any) -> AbstractAsyncContextManager[RunningBridge]:
        """Start the fake and the bridge; ``agent``: more settings of the agent (``access``,
        ``limits``, ...)."""
        ...

    async def user_says_in_dm(self, text: str, *, user: str | None = None) -> Said:
        """``user`` (default :attr:`human_id`) writes to the bot in their own DM."""
        ...

    async def user_says_in_group(
        self,
        text: str,
        *,
        mention: bool,
        thread: str | None = None,
        user: str | None = None,
        other_group: bool = False,
    ) -> Said:
        """In the group (``other_group``: a second group the bot is also in)."""
        ...

    def identity(self, user: str | None = None) -> str:
        """How ``allow`` and ``deny`` name ``user`` (default :attr:`human_id`)."""
        ...

    def group_id(self, *, other_group: bool = False) -> str:
        """The group's conversation id, as ``[agents.access] conversations`` lists it (its
        threads lie under it)."""
        ...

    def new_thread(self) -> str: ...

    async def bots_say(self, text: str) -> None: ...

    async def redeliver(self, said: Said) -> None: ...

    async def user_edits(self, said: Said, text: str) -> None: ...

    async def user_deletes(self, said: Said) -> None: ...

    async def next_post(self) -> Post: ...

    def posts(self) -> list[Post]: ...

    def fail_next_post(self, *, status: int = 429, retry_after: float = 1) -> None: ...

    def post_statuses(self) -> list[int]: ...

    def dm_conversation(self, said: Said) -> Conversation: ...

    def group_conversation(self, said: Said) -> Conversation: ...

    def thread_conversation(self, thread: str) -> Conversation: ...

    def assert_answers(self, post: Post, said: Said) -> None: ...

    def long_text(self) -> str: ...

    def assert_parts_address(self, parts: list[Post], said: Said) -> None: ...


class _Base:
    _running: RunningBridge | None = None

    @property
    def running(self) -> RunningBridge:
        assert self._running is not None, "use `async with driver.bridge(database_url)` first"
        return self._running

    async def user_messages(self) -> list[ChatMessage]:
        return [m for m in await self.running.messages() if m.role == "user"]


# --- Slack ---------------------------------------------------------------------------------

SLACK_BOT_TOKEN = "xoxb-test-bot-token"
SLACK_SIGNING_SECRET = "slack-signing-secret"
SLACK_CHANNEL = "C0CHAN0001"
SLACK_DM = "D0DM000001"
SLACK_HUMAN = "U0HUMAN001"
SLACK_OTHER_CHANNEL = "C0CHAN0002"
SLACK_OTHER_HUMAN = "U0HUMAN002"
SLACK_OTHER_DM = "D0DM000002"
SLACK_TEAM = slack.DEFAULT_TEAM_ID
SLACK_DMS = {SLACK_HUMAN: SLACK_DM, SLACK_OTHER_HUMAN: SLACK_OTHER_DM}


def slack_section(fake: FakeSlack, **extra: Any) -> dict[str, Any]:
    """An agent's ``[agents.slack]`` pointed at ``fake``."""
    return {
        "bot_token": SLACK_BOT_TOKEN,
        "signing_secret": SLACK_SIGNING_SECRET,
        "api_base_url": fake.api_url,
        **extra,
    }


class SlackDriver(_Base):
    """Events pushed, signed, to the Events API endpoint; replies by ``chat.postMessage``."""

    name: ClassVar[str] = "slack"
    human_id: ClassVar[str] = SLACK_HUMAN
    human_name: ClassVar[str] = "Ada"
    other_id: ClassVar[str] = SLACK_OTHER_HUMAN
    part_limit: ClassVar[int] = 3900
    part_joiner: ClassVar[str] = "\n\n"  # split at paragraphs
    rate_limited_status: ClassVar[int] = 429
    attempts_after_a_rate_limit: ClassVar[int] = 2  # the bridge's own retry after Retry-After

    def __init__(self) -> None:
        self.fake = FakeSlack(bot_token=SLACK_BOT_TOKEN, signing_secret=SLACK_SIGNING_SECRET)
        self.url = ""

    @asynccontextmanager
    async def bridge(self, database_url: str, **agent: Any) -> AsyncIterator[RunningBridge]:
        async with self.fake as fake:
            fake.add_channel(SLACK_CHANNEL, "general")
            fake.add_channel(SLACK_OTHER_CHANNEL, "random")
            fake.add_channel(SLACK_DM, is_im=True, user=SLACK_HUMAN)
            fake.add_channel(SLACK_OTHER_DM, is_im=True, user=SLACK_OTHER_HUMAN)
            fake.add_user(SLACK_HUMAN, "ada", "Ada")
            fake.add_user(SLACK_OTHER_HUMAN, "bob", "Bob")
            agents = [{"slug": "assistant", "slack": slack_section(fake), **agent}]
            async with running_bridge(make_settings(database_url, agents=agents)) as bridge:
                self._running, self.url = bridge, f"{bridge.url}/slack/assistant/events"
                yield bridge

    async def _push(self, event: dict[str, Any], **options: Any) -> None:
        assert (await self.fake.push_event(self.url, event, **options)).status == 200

    async def user_says_in_dm(self, text: str, *, user: str | None = None) -> Said:
        user = user or SLACK_HUMAN
        dm = SLACK_DMS[user]
        event = slack.message(channel=dm, user=user, text=text)
        await self._push(event)
        return Said(event["event"]["ts"], dm, event)

    async def user_says_in_group(
        self,
        text: str,
        *,
        mention: bool,
        thread: str | None = None,
        user: str | None = None,
        other_group: bool = False,
    ) -> Said:
        user = user or SLACK_HUMAN
        channel = SLACK_OTHER_CHANNEL if other_group else SLACK_CHANNEL
        if mention:
            mentioned = f"<@{self.fake.bot_user_id}> {text}"
            event = slack.app_mention(channel=channel, user=user, text=mentioned, thread_ts=thread)
        else:
            event = slack.message(channel=channel, user=user, text=text, thread_ts=thread)
        await self._push(event)
        return Said(event["event"]["ts"], channel, event)

    def identity(self, user: str | None = None) -> str:
        return f"slack:{user or SLACK_HUMAN}"

    def group_id(self, *, other_group: bool = False) -> str:
        return f"slack:{SLACK_TEAM}:{SLACK_OTHER_CHANNEL if other_group else SLACK_CHANNEL}"

    def new_thread(self) -> str:
        return slack.new_ts()

    async def bots_say(self, text: str) -> None:
        fake = self.fake
        for event in (
            slack.bot_message(channel=SLACK_DM, text=f"{text} (another bot)"),
            slack.bot_message(
                channel=SLACK_DM,
                text=f"{text} (my own words)",
                bot_id=fake.bot_id,
                user=fake.bot_user_id,
                subtype=None,
            ),
            slack.message(channel=SLACK_DM, user=fake.bot_user_id, text=f"{text} (self)"),
            slack.message(channel=SLACK_DM, user="U0OTHER01", text=text, bot_id="B0OTHER001"),
        ):
            await self._push(event)

    async def redeliver(self, said: Said) -> None:
        for retry in (1, 2):  # Slack's retries carry X-Slack-Retry-Num and the same event
            await self._push(said.raw, retry_num=retry)

    async def user_edits(self, said: Said, text: str) -> None:
        previous = said.raw["event"]["text"]
        event = slack.message_changed(
            channel=said.place, ts=said.message_id, text=text, previous_text=previous
        )
        await self._push(event)

    async def user_deletes(self, said: Said) -> None:
        await self._push(slack.message_deleted(channel=said.place, ts=said.message_id))

    @staticmethod
    def _post(raw: dict[str, Any]) -> Post:
        return Post(raw["ts"], raw["text"], raw["channel"], raw)

    async def next_post(self) -> Post:
        return self._post(await self.fake.next_post(timeout=10))

    def posts(self) -> list[Post]:
        return [self._post(raw) for raw in self.fake.posts]

    def fail_next_post(self, *, status: int = 429, retry_after: float = 1) -> None:
        assert status == 429
        self.fake.rate_limit_next(1, retry_after=int(retry_after))

    def post_statuses(self) -> list[int]:
        return [call.status for call in self.fake.calls_to("chat.postMessage")]

    def dm_conversation(self, said: Said) -> Conversation:
        return Conversation(f"slack:{SLACK_TEAM}:{said.place}", None, None)

    def group_conversation(self, said: Said) -> Conversation:
        # With thread replies (the default) a mention opens a thread: the thread is the session.
        return self.thread_conversation(said.message_id, channel=said.place)

    def thread_conversation(self, thread: str, *, channel: str = SLACK_CHANNEL) -> Conversation:
        base = f"slack:{SLACK_TEAM}:{channel}"
        name = "#random" if channel == SLACK_OTHER_CHANNEL else "#general"
        return Conversation(f"{base}:{thread}", base, name)

    def assert_answers(self, post: Post, said: Said) -> None:
        """In a DM the reply is not threaded; in a channel it is in the message's thread."""
        event = said.raw["event"]
        in_dm = said.place in SLACK_DMS.values()
        expected = None if in_dm else event.get("thread_ts") or event["ts"]
        assert post.raw.get("thread_ts") == expected
        assert post.raw["metadata"]["event_type"] == "bridge_delivery"

    def long_text(self) -> str:
        return "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(12))

    def assert_parts_address(self, parts: list[Post], said: Said) -> None:
        assert {p.raw["thread_ts"] for p in parts} == {said.message_id}


# --- Discord -------------------------------------------------------------------------------

MESSAGES_PATH = r"/api/v10/channels/\d+/messages"
DISCORD_OTHER_CHANNEL_ID = "1300000000000000004"
DISCORD_OTHER_USER_ID = "1200000000000000003"
DISCORD_NAMES = {DEFAULT_USER_ID: DISCORD_USER_NAME, DISCORD_OTHER_USER_ID: "bob"}
DISCORD_GROUPS = {DEFAULT_CHANNEL_ID: "general", DISCORD_OTHER_CHANNEL_ID: "random"}


class DiscordDriver(_Base):
    """Messages dispatched over the fake's gateway to discord.py; replies by REST."""

    name: ClassVar[str] = "discord"
    human_id: ClassVar[str] = DEFAULT_USER_ID
    human_name: ClassVar[str] = "Alice"
    other_id: ClassVar[str] = DISCORD_OTHER_USER_ID
    part_limit: ClassVar[int] = 2000
    part_joiner: ClassVar[str] = "\n"  # split at lines
    rate_limited_status: ClassVar[int] = 429
    attempts_after_a_rate_limit: ClassVar[int] = 1  # discord.py waits a 429 out itself

    def __init__(self) -> None:
        # The fake's default guild, plus a second text channel for tests that need two groups.
        guild = FakeGuild(
            DEFAULT_GUILD_ID,
            "Test Guild",
            channels=[FakeChannel(id, name) for id, name in DISCORD_GROUPS.items()],
            threads=[
                FakeChannel(DEFAULT_THREAD_ID, "a-thread", type=11, parent_id=DEFAULT_CHANNEL_ID)
            ],
        )
        self.fake = FakeDiscord(guilds=[guild])
        self.fake.add_user(DISCORD_OTHER_USER_ID, DISCORD_NAMES[DISCORD_OTHER_USER_ID])

    @asynccontextmanager
    async def bridge(self, database_url: str, **agent: Any) -> AsyncIterator[RunningBridge]:
        async with self.fake as fake:
            agents = [{"slug": "assistant", "discord": discord_section(fake), **agent}]
            async with running_bridge(make_settings(database_url, agents=agents)) as bridge:
                await fake.wait_identified(timeout=10)
                self._running = bridge
                yield bridge

    async def user_says_in_dm(self, text: str, *, user: str | None = None) -> Said:
        user = user or DEFAULT_USER_ID
        dm = self.fake.create_dm_channel(user)
        sent = await self.fake.send_message(
            channel_id=dm, content=text, author_id=user, author_name=DISCORD_NAMES[user]
        )
        return Said(sent["id"], dm, sent)

    async def user_says_in_group(
        self,
        text: str,
        *,
        mention: bool,
        thread: str | None = None,
        user: str | None = None,
        other_group: bool = False,
    ) -> Said:
        assert not (thread and other_group), "the fake's thread is under the first channel"
        user = user or DEFAULT_USER_ID
        channel = thread or (DISCORD_OTHER_CHANNEL_ID if other_group else DEFAULT_CHANNEL_ID)
        sent = await self.fake.send_message(
            channel_id=channel,
            content=text,
            mentions_bot=mention,
            author_id=user,
            author_name=DISCORD_NAMES[user],
        )
        return Said(sent["id"], channel, sent)

    def identity(self, user: str | None = None) -> str:
        return f"discord:{user or DEFAULT_USER_ID}"

    def group_id(self, *, other_group: bool = False) -> str:
        channel = DISCORD_OTHER_CHANNEL_ID if other_group else DEFAULT_CHANNEL_ID
        return f"discord:{DEFAULT_GUILD_ID}:{channel}"

    def new_thread(self) -> str:
        return DEFAULT_THREAD_ID

    async def bots_say(self, text: str) -> None:
        for channel in (DEFAULT_CHANNEL_ID, DEFAULT_THREAD_ID):
            await self.fake.send_message(
                channel_id=channel,
                content=text,
                bot=True,
                author_id="99",
                author_name="otherbot",
                mentions_bot=True,
            )

    async def redeliver(self, said: Said) -> None:
        """The gateway RESUMEs and replays every dispatch from the message on."""
        session = self.fake.session()
        [seq] = [
            int(d["s"])
            for d in session.log
            if d.get("t") == "MESSAGE_CREATE" and d["d"]["id"] == said.message_id
        ]
        resumes = self.fake.resume_count()
        await self.fake.replay_on_next_resume(seq - 1)
        await self.fake.close_gateway(4000)
        await self.fake.wait_resumed(timeout=10, count=resumes + 1)
        assert self.fake.resumes[-1].replayed >= 1

    async def user_edits(self, said: Said, text: str) -> None:
        await self.fake.edit_message(
            channel_id=said.place, message_id=said.message_id, content=text
        )

    async def user_deletes(self, said: Said) -> None:
        await self.fake.delete_message(channel_id=said.place, message_id=said.message_id)

    @staticmethod
    def _post(raw: dict[str, Any]) -> Post:
        return Post(raw["id"], raw["content"], raw["channel_id"], raw)

    async def next_post(self) -> Post:
        return self._post(await self.fake.next_post(timeout=10))

    def posts(self) -> list[Post]:
        return [self._post(raw) for raw in self.fake.posts_by()]

    def fail_next_post(self, *, status: int = 429, retry_after: float = 1) -> None:
        self.fake.fail_next_posts(1, status=status, retry_after=retry_after)

    def post_statuses(self) -> list[int]:
        return [r.status for r in self.fake.requests_to("POST", MESSAGES_PATH)]

    def dm_conversation(self, said: Said) -> Conversation:
        return Conversation(f"discord:dm:{said.raw['author']['id']}", None, None)

    def group_conversation(self, said: Said) -> Conversation:
        name = DISCORD_GROUPS[said.place]
        return Conversation(
            f"discord:{DEFAULT_GUILD_ID}:{said.place}", None, f"#{name} in Test Guild"
        )

    def thread_conversation(self, thread: str) -> Conversation:
        parent = f"discord:{DEFAULT_GUILD_ID}:{DEFAULT_CHANNEL_ID}"
        return Conversation(
            f"discord:{DEFAULT_GUILD_ID}:{thread}", parent, "#general in Test Guild"
        )

    def assert_answers(self, post: Post, said: Said) -> None:
        """A reply references the message it answers and is the bot's own."""
        assert post.raw["message_reference"]["message_id"] == said.message_id
        assert post.raw["author"]["id"] == self.fake.bot.id
        assert post.place in self.fake.typing  # typing was shown while the agent worked

    def long_text(self) -> str:
        return "\n".join(f"line {i:03d} " + "y" * 60 for i in range(80))

    def assert_parts_address(self, parts: list[Post], said: Said) -> None:
        """Only the first part is a reply to the message; the rest follow it."""
        assert parts[0].raw["message_reference"]["message_id"] == said.message_id
        assert all("message_reference" not in p.raw for p in parts[1:])


# --- Feishu --------------------------------------------------------------------------------

_thread_ids = itertools.count(1)
FEISHU_OTHER_OPEN_ID = "ou_0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b02"
FEISHU_OTHER_P2P_CHAT_ID = "oc_0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b02"
FEISHU_OTHER_GROUP_CHAT_ID = "oc_5ad11d72b830411d72b836c21"
FEISHU_DMS = {
    DEFAULT_USER_OPEN_ID: DEFAULT_P2P_CHAT_ID,
    FEISHU_OTHER_OPEN_ID: FEISHU_OTHER_P2P_CHAT_ID,
}
FEISHU_GROUPS = {
    DEFAULT_GROUP_CHAT_ID: DEFAULT_GROUP_CHAT_NAME,
    FEISHU_OTHER_GROUP_CHAT_ID: "Design Review",
}


def feishu_section(fake: FakeFeishu, **extra: Any) -> dict[str, Any]:
    """An agent's ``[agents.feishu]`` pointed at ``fake`` (with its Encrypt Key, if any)."""
    section: dict[str, Any] = {
        "app_id": fake.app_id,
        "app_secret": fake.app_secret,
        "verification_token": fake.verification_token,
        "base_url": fake.base_url,
        **extra,
    }
    if fake.encrypt_key is not None:
        section["encrypt_key"] = fake.encrypt_key
    return section


class FeishuDriver(_Base):
    """Events pushed, encrypted and signed, to the webhook; replies by the Open API."""

    name: ClassVar[str] = "feishu"
    human_id: ClassVar[str] = DEFAULT_USER_OPEN_ID
    human_name: ClassVar[str] = FEISHU_USER_NAME
    other_id: ClassVar[str] = FEISHU_OTHER_OPEN_ID
    part_limit: ClassVar[int] = 8000
    part_joiner: ClassVar[str] = "\n\n"
    rate_limited_status: ClassVar[int] = 400  # Feishu throttles with 400 and code 99991400
    attempts_after_a_rate_limit: ClassVar[int] = 2

    def __init__(self) -> None:
        self.fake = FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY)
        self.url = ""

    @asynccontextmanager
    async def bridge(self, database_url: str, **agent: Any) -> AsyncIterator[RunningBridge]:
        async with self.fake as fake:
            fake.add_user()
            fake.add_user(FEISHU_OTHER_OPEN_ID, "Bob Li")
            for chat_id, name in FEISHU_GROUPS.items():
                fake.add_chat(chat_id, name)
            agents = [{"slug": "assistant", "feishu": feishu_section(fake), **agent}]
            async with running_bridge(make_settings(database_url, agents=agents)) as bridge:
                self._running, self.url = bridge, bridge.url + "/feishu/assistant/events"
                yield bridge

    async def _push(self, event: dict[str, Any], **options: Any) -> Said:
        pushed = await self.fake.push(self.url, event, **options)
        assert pushed.status == 200 and pushed.json() == {"msg": "success"}
        message = event["event"]["message"]
        return Said(message["message_id"], message["chat_id"], (event, pushed))

    async def user_says_in_dm(self, text: str, *, user: str | None = None) -> Said:
        user = user or DEFAULT_USER_OPEN_ID
        event = self.fake.message_event(text=text, chat_id=FEISHU_DMS[user], sender_open_id=user)
        return await self._push(event)

    async def user_says_in_group(
        self,
        text: str,
        *,
        mention: bool,
        thread: str | None = None,
        user: str | None = None,
        other_group: bool = False,
    ) -> Said:
        event = self.fake.message_event(
            chat_id=FEISHU_OTHER_GROUP_CHAT_ID if other_group else DEFAULT_GROUP_CHAT_ID,
            chat_type="group",
            text=text,
            mention_bot=mention,
            thread_id=thread,
            sender_open_id=user or DEFAULT_USER_OPEN_ID,
        )
        return await self._push(event)

    def identity(self, user: str | None = None) -> str:
        return f"feishu:{user or DEFAULT_USER_OPEN_ID}"

    def group_id(self, *, other_group: bool = False) -> str:
        return f"feishu:{FEISHU_OTHER_GROUP_CHAT_ID if other_group else DEFAULT_GROUP_CHAT_ID}"

    def new_thread(self) -> str:
        return f"omt_contract{next(_thread_ids):08d}"

    async def bots_say(self, text: str) -> None:
        for event in (
            self.fake.message_event(text=text, sender_type="app"),
            self.fake.message_event(
                chat_type="group", text=text, mention_bot=True, sender_type="app"
            ),
        ):
            await self._push(event)

    async def redeliver(self, said: Said) -> None:
        event, pushed = said.raw
        # Feishu's own retry: the very same request again.
        assert (await self.fake.redeliver(self.url, pushed)).status == 200
        # The same message under a new event id (a second subscription).
        fresh_id = dict(event, header=dict(event["header"], event_id="another-event"))
        await self._push(fresh_id)

    async def user_edits(self, said: Said, text: str) -> None:
        raise NotImplementedError("the bridge takes no Feishu edit events")

    async def user_deletes(self, said: Said) -> None:
        raise NotImplementedError("the bridge takes no Feishu recall events")

    @staticmethod
    def _post(raw: Any) -> Post:
        return Post(raw.message_id, raw.text or "", raw.chat_id, raw)

    async def next_post(self) -> Post:
        return self._post(await self.fake.next_sent(timeout=10))

    def posts(self) -> list[Post]:
        return [self._post(raw) for raw in self.fake.sent]

    def fail_next_post(self, *, status: int = 429, retry_after: float = 1) -> None:
        assert status == 429  # Feishu's throttle: HTTP 400 with its rate-limit code
        self.fake.rate_limit_next(1, reset_seconds=retry_after)

    def post_statuses(self) -> list[int]:
        return [r.status for r in self.fake.message_creates()]

    def dm_conversation(self, said: Said) -> Conversation:
        return Conversation(f"feishu:{said.place}", None, None)

    def group_conversation(self, said: Said) -> Conversation:
        return Conversation(f"feishu:{said.place}", None, FEISHU_GROUPS[said.place])

    def thread_conversation(self, thread: str) -> Conversation:
        parent = f"feishu:{DEFAULT_GROUP_CHAT_ID}"
        return Conversation(f"{parent}:{thread}", parent, DEFAULT_GROUP_CHAT_NAME)

    def assert_answers(self, post: Post, said: Said) -> None:
        """A reply (not a fresh send) to the message, in its thread when it was in one."""
        event, _pushed = said.raw
        assert post.raw.kind == "reply" and post.raw.reply_to == said.message_id
        assert post.raw.reply_in_thread == bool(event["event"]["message"].get("thread_id"))

    def long_text(self) -> str:
        return "\n\n".join(f"paragraph {i} " + "z" * 500 for i in range(40))

    def assert_parts_address(self, parts: list[Post], said: Said) -> None:
        """Each part is its own create, with its own idempotency uuid."""
        assert len({p.raw.uuid for p in parts}) == len(parts)


DRIVERS: dict[str, Callable[[], Driver]] = {
    "slack": SlackDriver,
    "discord": DiscordDriver,
    "feishu": FeishuDriver,
}


def driver_for(platform: str) -> Driver:
    return DRIVERS[platform]()
