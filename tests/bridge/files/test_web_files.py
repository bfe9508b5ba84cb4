"""Files on the web channel and in the API, end to end: uploads as multipart forms, the
``attachments`` of every message, downloads with their headers and access checks, limits,
idempotency and storing each content once per agent. Real bridge, real databases, the local
file store in the test's own directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from bridge.api.uploads import OVERHEAD_BYTES
from bridge.store.models import ChatMessage, MessageState
from tests.bridge.files.web_files import (
    attachment_rows,
    chunked,
    download,
    png,
    sha,
    stored_objects,
    upload,
    with_files,
)
from tests.bridge.workspaces.isolation import two_workspace_settings, two_workspaces
from tests.support.harness import RunningBridge, make_settings
from tests.support.shared_api import bridge_with_users, user_with_session


async def _message_count(bridge: RunningBridge) -> int:
    async with bridge.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(ChatMessage))).scalar_one())


async def test_an_upload_is_listed_everywhere_and_downloads_as_sent(
    database_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "files"
    settings = with_files(make_settings(database_url), store)
    picture, notes = png(), b"first line\nsecond line\n"
    async with user_with_session(settings) as (bridge, alice, session):
        async with alice.live() as live:
            sent = (
                await upload(
                    alice,
                    session["id"],
                    "two files",
                    ("cat.png", picture, "image/png"),
                    ("notes.txt", notes, "text/plain; charset=utf-8"),
                )
            ).ok(202)
            created = await live.next(
                lambda f: f["type"] == "message.created" and f["message"]["id"] == sent["id"]
            )
        assert sent["content"] == "two files"
        files = sent["attachments"]
        assert [{k: v for k, v in a.items() if k not in ("id", "url")} for a in files] == [
            {
                "name": "cat.png",
                "content_type": "image/png",
                "size": len(picture),
                "sha256": sha(picture),
                "state": "stored",
                "reason": None,
            },
            {
                "name": "notes.txt",
                "content_type": "text/plain",
                "size": len(notes),
                "sha256": sha(notes),
                "state": "stored",
                "reason": None,
            },
        ]
        assert [a["url"] for a in files] == [f"/api/v1/files/{a['id']}" for a in files]
        assert created["message"]["attachments"] == files

        reply = await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
        history = (await alice.get(f"/sessions/{session['id']}/messages")).ok()["items"]
        assert [(m["id"], m["attachments"]) for m in history] == [
            (sent["id"], files),
            (reply.id, []),
        ]

        for listed, content in zip(files, (picture, notes), strict=True):
            status, body, headers = await download(alice, listed["url"])
            assert (status, body) == (200, content)
            assert headers["content-type"] == listed["content_type"]
            name = listed["name"]
            assert headers["content-disposition"] == (
                f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
            )
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["cache-control"] == "private, no-store"
            assert headers["content-security-policy"].startswith("sandbox")

        rows = await attachment_rows(bridge)
        assert [(r.message_id, r.position, r.state, r.sha256) for r in rows] == [
            (sent["id"], 0, "stored", sha(picture)),
            (sent["id"], 1, "stored", sha(notes)),
        ]
        assert stored_objects(store) == sorted(store / r.storage_key for r in rows)
        assert [(store / r.storage_key).read_bytes() for r in rows] == [picture, notes]


async def test_a_file_is_not_found_for_whoever_may_not_see_its_session(
    database_url: str, tmp_path: Path
) -> None:
    settings = with_files(two_workspace_settings(database_url), tmp_path / "files")
    async with two_workspaces(settings, ("acme_other", "acme")) as (_bridge, clients):
        owner = clients["acme_user"]
        session = await owner.new_session("acme-bot")
        sent = (
            await upload(owner, session["id"], "mine", ("plan.txt", b"the plan", "text/plain"))
        ).ok(202)
        url = sent["attachments"][0]["url"]
        missing = f"/api/v1/files/{sent['attachments'][0]['id'] + 1000}"
        for allowed in ("acme_user", "acme_admin", "operator"):
            assert (await download(clients[allowed], url))[:2] == (200, b"the plan"), allowed
        for refused in ("acme_other", "globex_user", "globex_admin"):
            status, body, _ = await download(clients[refused], url)
            absent_status, absent_body, _ = await download(clients[refused], missing)
            assert status == absent_status == 404, refused
            assert body == absent_body, refused
            assert b"plan" not in body
        for bad in ("abc", "0", "-1", "99999999999999999999"):
            assert (await download(owner, f"/api/v1/files/{bad}"))[0] == 404


async def test_markup_is_served_as_an_inert_download_and_names_are_made_safe(
    database_url: str, tmp_path: Path
) -> None:
    settings = with_files(make_settings(database_url), tmp_path / "files")
    page = b"<html><script>alert(document.cookie)</script></html>"
    drawing = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    async with user_with_session(settings) as (_bridge, alice, session):
        sent = (
            await upload(
                alice,
                session["id"],
                "look",
                ("../../etc/evil.html", page, "text/html"),
                ("drawing.svg", drawing, "image/svg+xml"),
                ("résumé.txt", b"cv", "text/plain"),
                ("odd", b"?", "not a type"),
            )
        ).ok(202)
        files = sent["attachments"]
        assert [(a["name"], a["content_type"]) for a in files] == [
            ("evil.html", "text/html"),
            ("drawing.svg", "image/svg+xml"),
            ("résumé.txt", "text/plain"),
            ("odd", "application/octet-stream"),
        ]
        served = [await download(alice, a["url"]) for a in files]
        assert [s[1] for s in served] == [page, drawing, b"cv", b"?"]
        assert [s[2]["content-type"] for s in served] == [
            "application/octet-stream",
            "application/octet-stream",
            "text/plain",
            "application/octet-stream",
        ]
        for _status, _body, headers in served:
            assert headers["content-disposition"].startswith("attachment; ")
            assert headers["x-content-type-options"] == "nosniff"
        assert served[2][2]["content-disposition"] == (
            "attachment; filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
        )


async def test_a_file_over_the_limit_is_kept_as_metadata_and_the_message_answered(
    database_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "files"
    settings = with_files(make_settings(database_url), store, max_bytes=1024)
    async with user_with_session(settings) as (bridge, alice, session):
        sent = (
            await upload(
                alice,
                session["id"],
                "a big one",
                ("big.bin", b"x" * 5000, "application/octet-stream"),
                ("small.txt", b"ok", "text/plain"),
            )
        ).ok(202)
        big, small = sent["attachments"]
        assert (big["state"], big["reason"], big["size"], big["sha256"]) == (
            "refused",
            "larger than 1024 bytes",
            5000,
            None,
        )
        assert (small["state"], small["size"]) == ("stored", 2)
        reply = await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
        assert reply.content == "a big one"
        status, body, _ = await download(alice, big["url"])
        assert status == 409 and b"larger than 1024 bytes" in body
        assert (await download(alice, small["url"]))[:2] == (200, b"ok")
        rows = await attachment_rows(bridge)
        assert [(r.state, r.storage_key is None) for r in rows] == [
            ("refused", True),
            ("stored", False),
        ]
        assert stored_objects(store) == [store / rows[1].storage_key]


async def test_a_repeated_client_message_id_stores_one_message_and_one_set_of_files(
    database_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "files"
    settings = with_files(make_settings(database_url), store)
    files = (("a.txt", b"alpha", "text/plain"), ("b.png", png(), "image/png"))
    async with user_with_session(settings) as (bridge, alice, session):
        first = await asyncio.gather(
            *(
                upload(alice, session["id"], "once", *files, client_message_id="c-1")
                for _ in range(3)
            )
        )
        later = await upload(alice, session["id"], "once", *files, client_message_id="c-1")
        posts = [response.ok(202) for response in (*first, later)]
        assert len({post["id"] for post in posts}) == 1
        assert all(post["attachments"] == posts[0]["attachments"] for post in posts)
        rows = await attachment_rows(bridge)
        assert [(r.message_id, r.position) for r in rows] == [
            (posts[0]["id"], 0),
            (posts[0]["id"], 1),
        ]
        assert len(stored_objects(store)) == 2
        await bridge.reply_to(posts[0]["id"], state=MessageState.DELIVERED)
        assert [m.role for m in await bridge.messages(session["id"])] == ["user", "assistant"]


async def test_the_same_content_is_one_object_per_agent(database_url: str, tmp_path: Path) -> None:
    store = tmp_path / "files"
    agents = [{"slug": "assistant", "inmemory": {}}, {"slug": "helper", "inmemory": {}}]
    settings = with_files(make_settings(database_url, agents=agents), store)
    report = ("report.txt", b"quarterly numbers", "text/plain")
    async with bridge_with_users(settings, "alice") as (bridge, users):
        alice = users["alice"]
        first, second = await alice.new_session(), await alice.new_session()
        other = await alice.new_session("helper")
        sent = [
            (await upload(alice, s["id"], f"copy {i}", report)).ok(202)
            for i, s in enumerate((first, first, second, other))
        ]
        rows = await attachment_rows(bridge)
        assert [r.message_id for r in rows] == [post["id"] for post in sent]
        assert len({r.id for r in rows}) == 4
        keys = [r.storage_key for r in rows]
        assert keys[0] == keys[1] == keys[2] != keys[3]
        assert stored_objects(store) == sorted({store / key for key in keys})


async def test_too_many_files_is_422_and_a_body_over_the_limit_413_storing_nothing(
    database_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "files"
    settings = with_files(
        make_settings(database_url), store, max_bytes=1024, max_files_per_message=2
    )
    limit = 2 * 1024 + settings.web.max_text_bytes + OVERHEAD_BYTES
    async with user_with_session(settings) as (bridge, alice, session):
        before = await _message_count(bridge)
        three = [(f"{i}.txt", f"file {i}".encode(), "text/plain") for i in range(3)]
        too_many = await upload(alice, session["id"], "three", *three)
        assert "at most 2 files" in too_many.error(422, "too_many_files")["message"]

        huge = ("huge.bin", b"y" * (limit + 1), "application/octet-stream")
        over = await upload(alice, session["id"], "huge", huge)
        assert str(limit) in over.error(413, "payload_too_large")["message"]

        # Without a Content-Length: refused once the parts pass the limit.
        boundary = "b0undary"
        raw = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\nhuge\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="h.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + b"z" * (limit + 1)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        streamed = await alice.call(
            "POST",
            f"/sessions/{session['id']}/messages",
            data=chunked(raw),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        streamed.error(413, "payload_too_large")

        assert await _message_count(bridge) == before
        assert await attachment_rows(bridge) == []
        assert stored_objects(store) == []
        # The bridge carries on.
        assert (await upload(alice, session["id"], "fine", three[0])).ok(202)["attachments"]


async def test_a_malformed_form_is_refused_and_json_posting_is_unchanged(
    database_url: str, tmp_path: Path
) -> None:
    settings = with_files(make_settings(database_url), tmp_path / "files")
    path_of = "/sessions/{}/messages".format
    async with user_with_session(settings) as (bridge, alice, session):
        empty = await upload(alice, session["id"], "   ")
        empty.error(422, "invalid")
        long_text = await upload(alice, session["id"], "x" * (settings.web.max_text_bytes + 1))
        long_text.error(422, "text_too_long")
        stray = await alice.call(
            "POST", path_of(session["id"]), data={"text": "hi", "attachments": "x"}
        )
        stray.error(400, "malformed_json")  # urlencoded: not a form this route reads
        no_boundary = await alice.call(
            "POST",
            path_of(session["id"]),
            data=b"--x\r\n",
            headers={"Content-Type": "multipart/form-data"},
        )
        no_boundary.error(400, "bad_request")
        files_only = (await upload(alice, session["id"], None, ("a.txt", b"a", "text/plain"))).ok(
            202
        )
        assert files_only["content"] == "" and len(files_only["attachments"]) == 1

        said = await alice.say(session["id"], "plain json", client_message_id="j-1")
        assert said["content"] == "plain json" and said["attachments"] == []
        again = await alice.say(session["id"], "plain json", client_message_id="j-1")
        assert again["id"] == said["id"]
        (await alice.post(path_of(session["id"]), {"text": "x", "attachments": []})).error(422)
        assert [r.message_id for r in await attachment_rows(bridge)] == [files_only["id"]]


async def test_an_upload_may_be_larger_than_the_json_body_limit(
    database_url: str, tmp_path: Path
) -> None:
    settings = with_files(make_settings(database_url), tmp_path / "files")
    big = bytes(range(256)) * (settings.http.max_body_bytes // 256 + 2048)
    async with user_with_session(settings) as (_bridge, alice, session):
        sent = (await upload(alice, session["id"], "big", ("big.bin", big, "application/zip"))).ok(
            202
        )
        [listed] = sent["attachments"]
        assert (listed["state"], listed["size"], listed["sha256"]) == ("stored", len(big), sha(big))
        assert (await download(alice, listed["url"]))[:2] == (200, big)
        # JSON keeps its own limit.
        too_big = {"text": "x" * settings.http.max_body_bytes}
        (await alice.post(f"/sessions/{session['id']}/messages", too_big)).error(413)
