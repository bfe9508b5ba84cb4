"""A bridge killed with SIGKILL while a Slack reply streams: the restarted process finishes the
same Slack message (stopping the stream of unknown content, then editing it), never a second
one. Real ``bridge serve`` processes, the strict Slack fake, one SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.store.models import MessageState
from channels.slack.mrkdwn import to_mrkdwn
from tests.fakes import slack
from tests.fakes.slack import FakeSlack
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import WEBHOOK_SECRET
from tests.support.processes import (
    bridge_database,
    run_cli,
    serving_bridge,
    wait_until,
    write_toml,
)

DM = "D0DM000001"
HUMAN = "U0HUMAN001"
FINAL = "First words, then the rest of a complete answer."


async def test_sigkill_mid_stream_ends_with_the_same_message_finished(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with (
        FakeSlack(bot_token="xoxb-live-kill", signing_secret="live-secret") as fake,
        FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent,
    ):
        fake.add_channel(DM, is_im=True, user=HUMAN)
        fake.add_user(HUMAN, "ada", "Ada")
        agent.release = asyncio.Event()
        agent.add_stream("First words, ", "then the rest of a complete answer.")
        agent.add_stream("First words, ", "then the rest of a complete answer.")
        agents = [
            {
                "slug": "assistant",
                "backend": "webhook",
                "webhook": {"url": agent.url, "secret": WEBHOOK_SECRET, "timeout_seconds": 30},
                "slack": {
                    "bot_token": fake.bot_token,
                    "signing_secret": fake.signing_secret,
                    "api_base_url": fake.api_url,
                },
            }
        ]
        config = write_toml(
            tmp_path / "bridge.toml",
            {
                "database": {"url": database_url},
                "pipeline": {"poll_interval_seconds": 0.5, "retry_base_seconds": 0.2},
                "agents": agents,
            },
        )
        migrated = run_cli("migrate", "--config", str(config), cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        event = slack.message(channel=DM, user=HUMAN, text="tell me")
        root = event["event"]["ts"]

        async def recorded() -> list[str]:
            async with bridge_database(database_url, agents=[{"slug": "assistant"}]) as db:
                users = [m for m in await db.messages() if m.role == "user"]
            return list(users[0].live_message_ids or []) if users else []

        async def has_live_id() -> bool:
            return bool(await recorded())

        async with serving_bridge(config, cwd=tmp_path) as first:
            pushed = await fake.push_event(f"{first.url}/slack/assistant/events", event)
            assert pushed.status == 200
            await wait_until(has_live_id, within=20, what="the stream recorded")
            first.kill()
            assert await first.wait() == -9
        [stream_ts] = await recorded()
        assert fake.streams == {(DM, stream_ts): "streaming"}  # left open by the dead process
        agent.release.set()

        async with serving_bridge(config, cwd=tmp_path):

            async def delivered() -> bool:
                async with bridge_database(database_url, agents=[{"slug": "assistant"}]) as db:
                    replies = [m for m in await db.messages() if m.role == "assistant"]
                return bool(replies) and replies[0].state == MessageState.DELIVERED

            await wait_until(delivered, within=30, what="the reply delivered after restart")

        mine = [m for m in fake.messages(DM) if m.get("bot_id") == fake.bot_id]
        assert [m["ts"] for m in mine] == [stream_ts]
        assert mine[0]["thread_ts"] == root
        assert mine[0]["blocks"] == [{"type": "markdown", "text": FINAL}]
        assert mine[0]["text"] == to_mrkdwn(FINAL)
        assert fake.streams == {(DM, stream_ts): "stopped"}
        assert len(fake.calls_to("chat.startStream")) == 1  # part 0 never started again
        assert fake.calls_to("chat.postMessage") == []
        # The restarted process stopped the stream it did not know instead of appending to it.
        assert fake.calls_to("chat.appendStream") == []
        assert [c.params["ts"] for c in fake.calls_to("chat.stopStream")][:1] == [stream_ts]
        assert fake.reactions_on(DM, root) == {"white_check_mark"}
