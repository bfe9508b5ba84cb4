"""Retention: old message content deleted (tombstones kept), idle sessions archived."""
