"""ves-streams: collectd telemetry from Kafka to a VES collector, on Faust.

`faust -A ves_streams worker` looks up ``ves_streams.app``. The Faust app is
built lazily on first access so that importing the rule engine, the CLI or
the collector never reads worker settings or touches Kafka.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from ves_streams.app import app

        return app
    raise AttributeError(f"module 'ves_streams' has no attribute {name!r}")
