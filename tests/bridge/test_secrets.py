"""Secrets stay secret: an upstream that echoes its request, and settings that hold passwords.

The hostile case is an agent backend (or a proxy in front of it) that answers an error whose
body repeats the request headers and query: the API key, the webhook signature, URL
credentials. None of it may reach the stored message, the API (a user's or an admin's view)
or the log. Settings hold database passwords and credential-bearing URLs; printing them must
never show those.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import select

from bridge.infra.logs import TextFormatter
from bridge.settings import Settings, load_settings
from bridge.store.models import Agent, ChatMessage, MessageState
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.api import api_clients
from tests.support.harness import (
    WEBHOOK_SECRET,
    RunningBridge,
    make_settings,
    running_bridge,
    webhook_agent_config,
)

KEY_ENV = "BRIDGE_TEST_SECRETS_OPENAI_KEY"
API_KEY = "sk-proj-Zq8v3LkT9wPq2Xn5Rb7Yc1Md4"
HOOK_USER, HOOK_PASSWORD = "hookuser", "hook-pass-7Tq2Lw9"
QUERY_TOKEN = "qtok-4Jd8Ks2Pz6"


def _leaks(secrets: Iterable[str], texts: Iterable[str]) -> list[tuple[str, str]]:
    return [(secret, text) for text in texts for secret in secrets if secret in text]


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = TextFormatter()
    return [formatter.format(record) for record in caplog.records]


async def _fail_one_message(bridge: RunningBridge) -> tuple[ChatMessage, Any, Any]:
    """Alice writes to the agent, whose backend fails; the stored row and both API views."""
    async with api_clients(bridge.url, bridge.sessions, "alice", "root", admin="root") as users:
        alice, root = users["alice"], users["root"]
        session = await alice.new_session()
        sent = await alice.say(session["id"], "are you there?")
        await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)  # the apology
        async with bridge.sessions() as db:
            row = await db.get(ChatMessage, sent["id"])
        assert row is not None and row.state == MessageState.FAILED
        path = f"/sessions/{session['id']}/messages"
        as_user = (await alice.call("GET", path)).ok()
        as_admin = (await root.call("GET", path)).ok()
    [user_view] = [m for m in as_user["items"] if m["id"] == sent["id"]]
    [admin_view] = [m for m in as_admin["items"] if m["id"] == sent["id"]]
    return row, (user_view, as_user), (admin_view, as_admin)


def _raw(document: Any) -> str:
    return json.dumps(document)


async def test_an_openai_upstream_that_echoes_the_api_key_shows_it_nowhere(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY) as fake:
        fake.echo_request_next(status=500)
        agent = {
            "slug": "assistant",
            "backend": "openai",
            "openai": {"base_url": fake.url, "model": "gpt-test", "api_key_env": KEY_ENV},
        }
        async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
            row, (user_view, user_page), (admin_view, admin_page) = await _fail_one_message(bridge)
        echoed = fake.requests[0]
    assert echoed.status == 500 and API_KEY in echoed.headers["Authorization"]

    secrets = [API_KEY, API_KEY[8:]]
    places = [row.last_error or "", _raw(user_page), _raw(admin_page), *_log_lines(caplog)]
    assert _leaks(secrets, places) == []
    assert user_view["error"] == "the agent did not answer (HTTP 500)"
    assert "HTTP 500" in admin_view["error"] and "upstream failed" in admin_view["error"]
    assert "[redacted]" in admin_view["error"]


async def test_a_webhook_agent_that_echoes_its_request_shows_no_credential(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as fake:
        fake.echo_request_next(status=500)
        url = fake.url.replace("http://", f"http://{HOOK_USER}:{HOOK_PASSWORD}@")
        agent = webhook_agent_config(fake)
        agent["webhook"]["url"] = f"{url}?token={QUERY_TOKEN}"
        async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
            row, (user_view, user_page), (admin_view, admin_page) = await _fail_one_message(bridge)
        echoed = fake.requests[0]
    assert echoed.status == 500
    signature = echoed.headers["X-Bridge-Signature"]
    basic = base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()
    assert echoed.headers["Authorization"] == f"Basic {basic}"

    secrets = [
        signature,
        signature.removeprefix("sha256="),
        WEBHOOK_SECRET,
        HOOK_PASSWORD,
        QUERY_TOKEN,
        basic,
    ]
    places = [row.last_error or "", _raw(user_page), _raw(admin_page), *_log_lines(caplog)]
    assert _leaks(secrets, places) == []
    assert user_view["error"] == "the agent did not answer (HTTP 500)"
    assert "HTTP 500" in admin_view["error"] and "agent failed" in admin_view["error"]
    assert "[redacted]" in admin_view["error"]


async def test_an_unusable_answer_is_shown_to_users_as_a_short_reason(database_url: str) -> None:
    """A 200 whose body is not the expected document: its text is for admins only."""
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as fake:
        fake.garbage_next(body=b"<html>internal details for Bearer abc.def.ghi</html>")
        settings = make_settings(database_url, agents=[webhook_agent_config(fake)])
        async with running_bridge(settings) as bridge:
            row, (user_view, _), (admin_view, _) = await _fail_one_message(bridge)
    assert user_view["error"] == "the agent's answer was unusable"
    assert "internal details" in admin_view["error"] and "abc.def.ghi" not in admin_view["error"]
    assert "abc.def.ghi" not in (row.last_error or "")


# --- settings --------------------------------------------------------------------------------

DB_PASSWORD = "db-pass-Hx81Qe"
PROXY_PASSWORD = "proxy-pass-Vb42Nm"
PATH_TOKEN = "ptok-Ys73Kd0"


def _secret_settings() -> Settings:
    return load_settings(
        overrides={
            "database": {"url": f"postgresql+asyncpg://bridge:{DB_PASSWORD}@db.internal/bridge"},
            "agents": [
                {
                    "slug": "hook",
                    "backend": "webhook",
                    "webhook": {
                        "url": (
                            f"https://{HOOK_USER}:{HOOK_PASSWORD}@hooks.example/agent/"
                            f"{PATH_TOKEN}?token={QUERY_TOKEN}"
                        ),
                        "secret": WEBHOOK_SECRET,
                    },
                },
                {
                    "slug": "model",
                    "backend": "openai",
                    "openai": {
                        "base_url": f"https://me:{PROXY_PASSWORD}@llm.example/v1",
                        "model": "gpt-test",
                    },
                },
            ],
        }
    )


SETTING_SECRETS = [DB_PASSWORD, HOOK_PASSWORD, QUERY_TOKEN, PATH_TOKEN, PROXY_PASSWORD]


def test_settings_never_print_passwords_or_url_credentials() -> None:
    settings = _secret_settings()
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.model_dump()),
        str(settings.model_dump(mode="json")),
        repr(settings.database),
        str(settings.database.url),
        repr(settings.agents[0]),
        str(settings.agents[0].webhook),
        f"{settings.agents[1].openai}",
    ]
    assert _leaks([*SETTING_SECRETS, WEBHOOK_SECRET], shown) == []
    # What is shown still says where things are.
    assert "db.internal" in str(settings.database.url)
    assert "hooks.example" in repr(settings.agents[0])


def test_the_code_still_gets_the_real_values() -> None:
    settings = _secret_settings()
    assert DB_PASSWORD in settings.database.url.get_secret_value()
    webhook, openai = settings.agents[0].webhook, settings.agents[1].openai
    assert webhook is not None and openai is not None
    assert webhook.url.get_secret_value().endswith(f"/agent/{PATH_TOKEN}?token={QUERY_TOKEN}")
    assert PROXY_PASSWORD in openai.base_url.get_secret_value()


async def test_a_credential_bearing_webhook_url_works_and_is_not_stored(
    database_url: str,
) -> None:
    """The real URL reaches the agent; the agents table keeps only the redacted one."""
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as fake:
        agent = webhook_agent_config(fake)
        url = fake.url.replace("http://", f"http://{HOOK_USER}:{HOOK_PASSWORD}@")
        agent["webhook"]["url"] = f"{url}?token={QUERY_TOKEN}"
        async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
            result = await bridge.memory().receive("hello")
            assert (await bridge.memory().next_sent()).text == "echo: hello"
            await bridge.reply_to(result.message_id, state=MessageState.DELIVERED)
            async with bridge.sessions() as db:
                options = (await db.execute(select(Agent.backend_options))).scalars().all()
        basic = base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()
        assert fake.requests[0].headers["Authorization"] == f"Basic {basic}"
    assert _leaks([HOOK_PASSWORD, QUERY_TOKEN, WEBHOOK_SECRET], map(_raw, options)) == []
