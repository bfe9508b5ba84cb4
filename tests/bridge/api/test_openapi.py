"""The OpenAPI document describes every route, and schemathesis finds no 5xx for any input it
generates from it, against the live server on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from bridge.api.routes import PREFIX, ROUTES
from tests.support.api import token_for
from tests.support.harness import make_settings, running_bridge

SCHEMATHESIS = Path(sys.executable).with_name("st")


async def test_the_document_is_openapi_3_1_and_covers_every_route(database_url: str) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        async with (
            aiohttp.ClientSession() as http,
            http.get(bridge.url + PREFIX + "/openapi.json") as response,
        ):
            assert response.status == 200
            document = await response.json()
        assert document["openapi"] == "3.1.0"
        (api,) = [
            r.get_info()["app"] for r in bridge.app.router.resources() if r.canonical == PREFIX
        ]
        served = {
            (resource.canonical, route.method.lower())
            for resource in api.router.resources()
            for route in resource
            if route.method != "HEAD"
        }
        assert len(served) >= len(ROUTES)
        documented = {
            (path, method)
            for path, operations in document["paths"].items()
            for method in operations
        }
        assert served <= documented
        assert {(PREFIX + r.path, r.method.lower()) for r in ROUTES} <= documented
        schemas = document["components"]["schemas"]
        assert {"SessionOut", "MessageOut", "ErrorBody", "PostMessage"} <= set(schemas)
        assert set(schemas["SessionOut"]["properties"]) >= {
            "id",
            "agent",
            "title",
            "source_channel",
            "external_conv_id",
            "is_group",
            "group_name",
            "participant",
            "peer_agent",
            "parent_session",
            "message_count",
            "created_at",
            "last_message_at",
            "deleted_at",
        }


async def test_schemathesis_finds_no_server_error(database_url: str, tmp_path: Path) -> None:
    async with running_bridge(make_settings(database_url)) as bridge:
        for admin, name in ((True, "root"), (False, "alice")):
            token = await token_for(bridge.sessions, name, admin=admin)
            process = await asyncio.create_subprocess_exec(
                str(SCHEMATHESIS),
                "run",
                bridge.url + PREFIX + "/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,response_schema_conformance",
                "--header",
                f"Authorization: Bearer {token}",
                "--max-examples",
                os.environ.get("BRIDGE_SCHEMATHESIS_EXAMPLES", "40"),
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--generation-database",
                "none",
                "--seed",
                "5",
                "--workers",
                "1",
                "--no-color",
                "--report-dir",
                str(tmp_path / name),
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            text = output.decode(errors="replace")
            assert process.returncode == 0, text[-6000:]
