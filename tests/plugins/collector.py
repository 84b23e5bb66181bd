"""Fixtures for collector (being written)."""
