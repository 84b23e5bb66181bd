"""Fixtures shared by the rule engine tests (data helpers live in helpers.py)."""

from __future__ import annotations

import pytest

from ves_streams.collectd import Notification, Sample

from .helpers import CAPTURE_NOTIFICATIONS, CAPTURE_VALUES, latest_samples, notifications


@pytest.fixture(scope="session")
def capture_samples() -> list[Sample]:
    return latest_samples(CAPTURE_VALUES)


@pytest.fixture(scope="session")
def capture_notifications() -> list[Notification]:
    return notifications(CAPTURE_NOTIFICATIONS)
