"""The web channel: the bridge's own chat page and HTTP API.

It is on for every agent unless an agent says ``[agents.web] enabled = false``. Sending is a
no-op that always succeeds: the reply is already in the database, and marking it delivered
writes the change that the live clients (the WebSocket) stream from there, from any process.
"""

from __future__ import annotations

from bridge.events import WEB_CHANNEL
from channels.stored import StoredOnlyPlugin

plugin = StoredOnlyPlugin(name=WEB_CHANNEL)
