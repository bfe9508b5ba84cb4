"""Strict local fakes of the services the bridge talks to."""
