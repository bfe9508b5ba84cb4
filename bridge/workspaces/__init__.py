"""Workspaces (tenants): every agent, its sessions and the API tokens that see them belong to
one; the API scopes every query by the caller's."""
