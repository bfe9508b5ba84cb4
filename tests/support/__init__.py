"""Shared helpers for the test suite (fakes, real-service harnesses)."""
