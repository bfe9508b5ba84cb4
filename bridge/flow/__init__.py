"""The message flow: ingest -> answer -> deliver, each in batches, over one message store.

``ingest`` stores inbound messages by group commit, ``answer`` and ``deliver`` claim and
finish work in batches (``claims``, ``workers``), and ``store`` is the one place that writes
message rows, records their change events and wakes the workers after the commit.
"""
