"""Hostile HTTP clients against the real server: the local sign-in, the live socket's origin
policy, and the headers every response carries.

The bridge under test listens on 127.0.0.1, so every request here comes from loopback: the
attacks are the ones a loopback peer can still make (a DNS-rebinding page in a local browser,
a reverse proxy on the same host, a foreign page opening the socket with a stolen token).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select

from bridge.api.clients import real_client
from bridge.api.tokens import create_token
from bridge.settings import ConfigError, Settings, load_settings
from bridge.store.models import ApiToken
from tests.support.harness import RunningBridge, make_settings, running_bridge

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
DEV_LOGIN = "/api/v1/auth/dev-login"
FORWARDING_HEADERS = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Host": "chat.example.com",
    "X-Forwarded-Proto": "https",
    "Forwarded": "for=203.0.113.9;proto=https",
    "X-Real-IP": "203.0.113.9",
}
FOREIGN = "https://chat.example.com"


@dataclass
class Answer:
    status: int
    body: Any


def with_settings(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """``settings`` with some keys of some sections replaced."""
    changed = {
        name: getattr(settings, name).model_copy(update=values) for name, values in sections.items()
    }
    return settings.model_copy(update=changed)


def port(bridge: RunningBridge) -> int:
    number = urlsplit(bridge.url).port
    assert number is not None
    return number


async def sign_in(bridge: RunningBridge, **headers: str) -> Answer:
    async with (
        aiohttp.ClientSession() as http,
        http.post(bridge.url + DEV_LOGIN, headers=headers) as response,
    ):
        return Answer(status=response.status, body=await response.json(content_type=None))


async def token_rows(bridge: RunningBridge, *, active: bool = False) -> int:
    query = select(func.count()).select_from(ApiToken)
    if active:
        query = query.where(ApiToken.revoked_at.is_(None))
    async with bridge.sessions() as db:
        return int((await db.execute(query)).scalar_one())


async def me_status(bridge: RunningBridge, token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            bridge.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status


def assert_refused(answer: Answer) -> None:
    assert answer.status == 403, answer
    assert set(answer.body) == {"error"}, answer
    assert "token" not in answer.body


# ---------------------------------------------------------------------------------------
# The local sign-in
# ---------------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_local_sign_in_works_for_curl_and_for_the_page_itself(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        curl = await sign_in(bridge)  # what .ci/run does: no Origin at all
        assert curl.status == 200, curl
        assert await me_status(bridge, curl.body["token"]) == 200
        page = await sign_in(bridge, Origin=bridge.url, **{"Sec-Fetch-Site": "same-origin"})
        assert page.status == 200, page
        assert await me_status(bridge, page.body["token"]) == 200
        as_localhost = await sign_in(
            bridge,
            Host=f"localhost:{port(bridge)}",
            Origin=f"http://localhost:{port(bridge)}",
        )
        assert as_localhost.status == 200, as_localhost


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("header", "value"),
    [
        # A foreign Host header.
        ("Host", "evil.example:{port}"),  # DNS rebinding: the attacker's name -> 127.0.0.1
        ("Host", "evil.example"),
        ("Host", "127.0.0.1.nip.io:{port}"),
        ("Host", "127.0.0.1:1"),  # loopback, but not this bridge's port
        ("Host", "127.0.0.1"),  # no port: only the listening default (80) may be left out
        ("Host", "localhost.:{port}"),
        ("Host", "[::ffff:7f00:1]x:{port}"),
        # A relayed request: a proxy on the same host connects from loopback; its forwarding
        # header gives it away.
        *((name, FORWARDING_HEADERS[name]) for name in sorted(FORWARDING_HEADERS)),
        # A foreign Origin.
        ("Origin", "https://evil.example"),
        ("Origin", "null"),  # a sandboxed frame or a file: page
        ("Origin", "http://localhost:{port}"),  # another loopback origin than the page's Host
        ("Origin", "http://127.0.0.1:1"),
        ("Origin", "https://127.0.0.1:{port}"),
        ("Origin", "http://127.0.0.1:{port}/"),
        # A cross-site fetch.
        ("Sec-Fetch-Site", "cross-site"),
    ],
)
async def test_a_foreign_relayed_or_cross_site_sign_in_gets_no_token(
    database_url: str, header: str, value: str
) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        answer = await sign_in(bridge, **{header: value.format(port=port(bridge))})
        assert_refused(answer)
        assert await token_rows(bridge) == 0


async def test_sign_ins_rotate_one_token(database_url: str) -> None:
    """Each sign-in replaces the local token: only the newest one works, and whatever the
    number of sign-ins there are two rows (the replaced one is kept, revoked, so that its id
    is not handed out again while sockets opened with it are being closed)."""
    async with running_bridge(make_settings(database_url)) as bridge:
        tokens = []
        for _ in range(5):
            answer = await sign_in(bridge)
            assert answer.status == 200, answer
            tokens.append(answer.body["token"])
        assert len(set(tokens)) == 5
        assert await token_rows(bridge, active=True) == 1
        assert await token_rows(bridge) == 2
        assert [await me_status(bridge, token) for token in tokens] == [401] * 4 + [200]

        at_once = await asyncio.gather(*(sign_in(bridge) for _ in range(8)))
        assert [answer.status for answer in at_once] == [200] * 8, at_once
        working = [await me_status(bridge, answer.body["token"]) for answer in at_once]
        assert sorted(working) == [200] + [401] * 7
        assert await token_rows(bridge, active=True) == 1
        assert await token_rows(bridge) == 2


@SQLITE_ONLY
async def test_a_sign_in_leaves_other_tokens_alone_and_clears_old_piles(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        own = await create_token(bridge.sessions, name="alice", admin=False)
        local = await create_token(bridge.sessions, name="local-cli", admin=True, user="local")
        # What earlier versions left behind: one admin token per sign-in.
        for number in range(3):
            await create_token(
                bridge.sessions, name=f"dev-login-{number}", admin=True, user="local"
            )
        assert (await sign_in(bridge)).status == 200
        assert (await sign_in(bridge)).status == 200
        assert await me_status(bridge, own) == 200
        assert await me_status(bridge, local) == 200
        assert await token_rows(bridge, active=True) == 3  # alice, local-cli, local-sign-in
        assert await token_rows(bridge) == 4  # and the replaced local-sign-in


@SQLITE_ONLY
async def test_a_sign_in_closes_the_socket_of_the_token_it_replaces(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        first = (await sign_in(bridge)).body["token"]
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{bridge.url}/api/v1/ws?token={first}") as socket,
        ):
            assert (await socket.receive_json(timeout=10))["type"] == "ready"
            assert (await sign_in(bridge)).status == 200
            await socket.receive(timeout=10)  # the hub's revocation check closes it
            assert socket.close_code == 4401


@SQLITE_ONLY
async def test_behind_a_trusted_proxy_there_is_no_local_sign_in(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``http.trusted_proxies`` set the operator says a proxy is in front, and a proxy
    makes remote visitors look local: the local sign-in is off, even for a forwarded loopback
    client. The log names the real client the proxy forwarded."""
    settings = with_settings(
        make_settings(database_url), http={"trusted_proxies": ["127.0.0.1/32"]}
    )
    caplog.set_level(logging.INFO, logger="bridge.api.auth")
    async with running_bridge(settings) as bridge:
        for forwarded in ("198.51.100.7", "127.0.0.1"):
            assert_refused(await sign_in(bridge, **{"X-Forwarded-For": forwarded}))
        assert_refused(await sign_in(bridge))
        assert await token_rows(bridge) == 0
    refusals = [r for r in caplog.records if r.getMessage() == "api.dev_login_refused"]
    clients = [getattr(r, "fields", {}).get("client") for r in refusals]
    assert clients == ["198.51.100.7", "127.0.0.1", "127.0.0.1"]


@SQLITE_ONLY
async def test_an_untrusted_proxy_cannot_name_the_client(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.api.auth")
    async with running_bridge(make_settings(database_url)) as bridge:
        assert_refused(await sign_in(bridge, **{"X-Forwarded-For": "198.51.100.7"}))
    refusals = [r for r in caplog.records if r.getMessage() == "api.dev_login_refused"]
    assert [getattr(r, "fields", {}).get("client") for r in refusals] == ["127.0.0.1"]


# ---------------------------------------------------------------------------------------
# The real client behind proxies
# ---------------------------------------------------------------------------------------

TRUSTED = ("127.0.0.1/32", "10.0.0.0/8")


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("127.0.0.1", {}, "127.0.0.1"),
        ("192.0.2.1", {"X-Forwarded-For": "198.51.100.7"}, "192.0.2.1"),  # untrusted peer
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.7"}, "198.51.100.7"),
        # The right-most address that no trusted proxy added; what is left of it was sent by
        # the client itself and can say anything.
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1, 198.51.100.7, 10.1.2.3"}, "198.51.100.7"),
        ("127.0.0.1", {"X-Forwarded-For": "10.9.9.9, 10.1.2.3"}, "10.9.9.9"),
        ("127.0.0.1", {"X-Forwarded-For": "garbage, 10.1.2.3"}, "garbage"),
        ("127.0.0.1", {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'}, "2001:db8::7"),
        ("127.0.0.1", {"Forwarded": "for=198.51.100.7, for=10.0.0.2"}, "198.51.100.7"),
        ("127.0.0.1", {"Forwarded": "for=unknown"}, "unknown"),
        ("127.0.0.1", {"X-Real-IP": "198.51.100.7"}, "127.0.0.1"),  # not a chain: ignored
        ("::1", {"X-Forwarded-For": "198.51.100.7"}, "::1"),  # ::1 is not in TRUSTED
    ],
)
def test_the_real_client(peer: str, headers: dict[str, str], expected: str) -> None:
    assert real_client(peer, headers, trusted=TRUSTED) == expected


@pytest.mark.parametrize("entry", ["10.0.0.300", "example.com", "10.0.0.0/33", ""])
def test_a_bad_trusted_proxy_is_a_one_line_config_error(entry: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(overrides={"http": {"trusted_proxies": [entry]}})
    assert "http.trusted_proxies" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("entry", ["chat.example.com", "https://chat.example.com/app", "*"])
def test_a_bad_allowed_origin_is_a_one_line_config_error(entry: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(overrides={"web": {"allowed_origins": [entry]}})
    assert "web.allowed_origins" in str(error.value)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------
# The live socket's origin policy
# ---------------------------------------------------------------------------------------


async def open_socket(bridge: RunningBridge, token: str, **headers: str) -> int:
    """The handshake's status (101: upgraded, and the first frame was ``ready``)."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(
                f"{bridge.url}/api/v1/ws?token={token}", headers=headers
            ) as socket:
                assert (await socket.receive_json(timeout=10))["type"] == "ready"
                return 101
        except aiohttp.WSServerHandshakeError as error:
            return error.status


@SQLITE_ONLY
async def test_a_foreign_page_cannot_open_the_socket(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        token = await create_token(bridge.sessions, name="alice", admin=False)
        for origin in ("https://evil.example", "null", f"http://localhost:{port(bridge)}"):
            assert await open_socket(bridge, token, Origin=origin) == 403, origin
        # The refusal is the API's JSON error, given before any upgrade.
        upgrade = {
            "Origin": "https://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{bridge.url}/api/v1/ws?token={token}", headers=upgrade) as response,
        ):
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "origin_not_allowed"


@SQLITE_ONLY
async def test_the_own_origin_and_programs_may_open_the_socket(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        token = await create_token(bridge.sessions, name="alice", admin=False)
        assert await open_socket(bridge, token, Origin=bridge.url) == 101
        assert await open_socket(bridge, token) == 101  # no Origin: not a browser


@SQLITE_ONLY
async def test_an_allowed_origin_may_open_the_socket(database_url: str) -> None:
    settings = with_settings(make_settings(database_url), web={"allowed_origins": [FOREIGN]})
    async with running_bridge(settings) as bridge:
        token = await create_token(bridge.sessions, name="alice", admin=False)
        assert await open_socket(bridge, token, Origin=FOREIGN) == 101
        assert await open_socket(bridge, token, Origin="https://evil.example") == 403


@SQLITE_ONLY
async def test_behind_a_trusted_proxy_the_public_host_is_the_own_origin(
    database_url: str,
) -> None:
    """A proxy that rewrites Host names the public one in X-Forwarded-Host; only a trusted
    proxy is believed."""
    behind = {"Origin": FOREIGN, "X-Forwarded-Host": "chat.example.com"}
    async with running_bridge(make_settings(database_url)) as bridge:
        token = await create_token(bridge.sessions, name="alice", admin=False)
        assert await open_socket(bridge, token, **behind) == 403
    trusting = with_settings(make_settings(database_url), http={"trusted_proxies": ["127.0.0.1"]})
    async with running_bridge(trusting) as bridge:
        token = await create_token(bridge.sessions, name="bob", admin=False)
        assert await open_socket(bridge, token, **behind) == 101
        assert await open_socket(bridge, token, Origin="https://evil.example") == 403


# ---------------------------------------------------------------------------------------
# Response headers
# ---------------------------------------------------------------------------------------

REQUIRED_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "object-src": "'none'",
}


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path",
    ["/", "/static/app.js", "/static/style.css", "/static/nothing.js", "/api/v1/me", "/healthz"],
)
async def test_every_response_carries_the_page_headers(database_url: str, path: str) -> None:
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        aiohttp.ClientSession() as http,
        http.get(bridge.url + path) as response,
    ):
        headers = response.headers
        assert headers.get("X-Content-Type-Options") == "nosniff"
        assert headers.get("X-Frame-Options") == "DENY"
        assert headers.get("Referrer-Policy") == "no-referrer"
        policy = dict(
            directive.strip().split(" ", 1)
            for directive in headers.get("Content-Security-Policy", "").split(";")
            if directive.strip()
        )
        assert policy == REQUIRED_CSP
