"""A second reference point: the same passthrough as :mod:`bench.passthrough`, as a Faust agent.

One agent reads the collectd topic record by record, parses each with
orjson and sends it on to an output topic keyed by host: no state, no
rendering. What it costs per record is what faust-streaming itself costs,
so comparing ves-streams with it separates the framework's share from the
project's own code. ``GET /count`` answers the records handled so far.

Run by :func:`bench.throughput.run_faust_passthrough`::

    BENCH_FAUST_APP=id BENCH_FAUST_BROKER=kafka://h:p BENCH_FAUST_INPUT=t BENCH_FAUST_OUTPUT=t2 \\
        python -m faust -A bench.faust_passthrough worker --web-port P

The app is built on first access of ``app`` (``faust -A`` looks it up), so
importing this module reads no environment.
"""

from __future__ import annotations

import os
from typing import Any

import faust
import orjson

__all__ = ["app", "create_app"]


def create_app(app_id: str, broker: str, source: str, target: str, data_dir: str) -> faust.App:
    app = faust.App(
        app_id,
        broker=broker,
        store="memory://",
        datadir=data_dir,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        autodiscover=False,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inbound = app.topic(source, **raw)
    outbound = app.topic(target, **raw)
    handled = {"records": 0}

    @app.agent(inbound, name="bench.passthrough")
    async def passthrough(stream: Any) -> None:
        async for event in stream.events():
            value = event.message.value
            value_lists = orjson.loads(value)
            host = value_lists[0]["host"] if value_lists else ""
            await outbound.send(key=host.encode(), value=value)
            handled["records"] += 1

    @app.page("/count")
    async def count(self: Any, request: Any) -> Any:
        return self.json(handled)

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        built = globals().get("_app")
        if built is None:
            env = os.environ
            built = globals()["_app"] = create_app(
                env["BENCH_FAUST_APP"], env["BENCH_FAUST_BROKER"], env["BENCH_FAUST_INPUT"], env["BENCH_FAUST_OUTPUT"],
                env.get("BENCH_FAUST_DATA_DIR", "faust-passthrough-data"),
            )  # fmt: skip
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
