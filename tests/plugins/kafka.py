"""Fixtures for kafka (being written)."""
