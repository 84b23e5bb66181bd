"""Fixtures for collectd (being written)."""
