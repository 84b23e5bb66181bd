"""The baseline: a bare aiokafka consume -> orjson parse -> produce passthrough, one process.

It is what the simplest hand-written Kafka stage in Python costs on this
machine: fetch a backlog in batches, parse each ``write_kafka`` message
with orjson (the one thing every consumer of it must do), and produce the
message unchanged to an output topic keyed by its host (as ves-streams'
ingest repartitions by host). No state, no rendering, no HTTP. Every
ves-streams figure is reported as a ratio to what this achieves in the same
run, on the same topic.

Run as its own process (so it has its own core, RSS and CPU time)::

    python -m bench.passthrough --bootstrap H:P --input T --output T2 --group G --expect N

prints one JSON object: messages, seconds (first fetched record to last
acknowledged produce), rate, peak RSS (MiB) and CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["passthrough", "main"]


async def passthrough(bootstrap: str, source: str, target: str, group: str, expect: int, timeout: float) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=1000,
        max_partition_fetch_bytes=1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    count = 0
    first: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while count < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=4096)
            if batches and first is None:
                first = time.perf_counter()
            for records in batches.values():
                for record in records:
                    value_lists = orjson.loads(record.value)
                    host = value_lists[0]["host"] if value_lists else ""
                    await producer.send(target, record.value, key=host.encode())
                count += len(records)
        await producer.flush()
        done = time.perf_counter()
        await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
    seconds = done - first if first is not None else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "messages": count,
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else 0.0,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "complete": count >= expect,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True, help="stop after this many records")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    result = asyncio.run(passthrough(args.bootstrap, args.input, args.output, args.group, args.expect, args.timeout))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
