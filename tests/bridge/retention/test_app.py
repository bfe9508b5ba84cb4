"""``bridge serve`` runs retention: a running bridge purges and archives by itself while it
keeps answering, and the API shows what is left."""

from __future__ import annotations

from sqlalchemy import update

from bridge.retention.settings import RetentionSettings
from bridge.store.models import MESSAGES, SESSIONS
from tests.bridge.retention.rows import answered, days_ago
from tests.support.api import api_clients
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.metrics import metric
from tests.support.processes import wait_until


async def age(bridge: RunningBridge, message_ids: list[int], session_id: int) -> None:
    async with bridge.sessions() as db, db.begin():
        for n, message_id in enumerate(sorted(message_ids)):
            await db.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id == message_id)
                .values(created_at=days_ago(3, plus_seconds=n))
            )
        await db.execute(
            update(SESSIONS).where(SESSIONS.c.id == session_id).values(last_message_at=days_ago(3))
        )


async def test_a_running_bridge_purges_archives_and_keeps_answering(database_url: str) -> None:
    settings = make_settings(database_url).model_copy(
        update={
            "retention": RetentionSettings(
                message_days=1, idle_session_days=2, interval_seconds=0.1, batch_size=3
            )
        }
    )
    async with (
        running_bridge(settings) as bridge,
        api_clients(bridge.url, bridge.sessions, "alice") as clients,
    ):
        alice = clients["alice"]
        old = await alice.new_session(title="old")
        await answered(alice, old["id"], "first")
        before = await answered(alice, old["id"], "second")
        kept = await alice.new_session(title="kept")
        await answered(alice, kept["id"], "still here")
        await age(bridge, [m["id"] for m in before], old["id"])

        async def archived() -> bool:
            # The counter moves just after the commit: wait for it, not only for the rows.
            return await metric(bridge, "bridge_retention_sessions_archived_total") == 1

        await wait_until(archived, within=20, what="the idle session archived")
        assert (await alice.get(f"/sessions/{old['id']}")).ok()["deleted_at"] is not None
        after = await alice.all_pages(f"/sessions/{old['id']}/messages", "before")
        assert [m["id"] for m in after] == [m["id"] for m in before], "tombstones keep order"
        assert [m["content"] for m in after] == [""] * 4
        assert [(m["role"], m["state"]) for m in after] == [(m["role"], m["state"]) for m in before]
        session = (await alice.get(f"/sessions/{old['id']}")).ok()
        assert session["message_count"] == 4
        assert await metric(bridge, "bridge_retention_messages_purged_total") == 4
        assert await metric(bridge, "bridge_retention_sessions_archived_total") == 1

        current = await answered(alice, kept["id"], "and more")
        assert [m["content"] for m in current] == ["still here"] * 2 + ["and more"] * 2
        assert (await alice.get(f"/sessions/{kept['id']}")).ok()["deleted_at"] is None
        assert await metric(bridge, 'bridge_retention_runs_total{outcome="done"}') >= 2
