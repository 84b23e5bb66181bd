"""The collector's exception hierarchy."""

from __future__ import annotations

__all__ = ["CollectorError", "CollectorConfigError", "ControlError"]


class CollectorError(Exception):
    """Base class of every error raised by :mod:`ves_streams.dev.collector`."""


class CollectorConfigError(CollectorError):
    """A setting the operator gave cannot work; the message names the setting."""


class ControlError(CollectorError):
    """A ``POST /_control`` command is malformed; the message says what to send instead."""
