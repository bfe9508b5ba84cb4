"""The fake model of the long-memory tests, recognizing folds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.bridge.memory.conversation import API_KEY, FOLD_MARKER, KEY_ENV
from tests.fakes.openai_server import FakeOpenAIServer


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, fold_marker=FOLD_MARKER) as server:
        yield server
