"""The agent channel: where one agent's direct asks to another arrive and are answered.

Its sessions are ``agent:{from}`` (or ``agent:{from}:{conversation}``) sessions of the asked
agent. The asking side (the API's ``?wait=``, the ``ask_agent`` tool) reads the stored reply
from the database, so sending is a no-op.
"""

from __future__ import annotations

from bridge.events import AGENT_CHANNEL
from channels.stored import StoredOnlyPlugin

plugin = StoredOnlyPlugin(name=AGENT_CHANNEL)
