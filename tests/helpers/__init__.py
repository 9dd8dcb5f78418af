"""Shared helpers for the tests under tests/."""
