"""Helpers for the worker integration tests: real workers, real broker, real topology.

* :class:`Worker` runs ``python -m faust -A ves_streams worker`` as a
  subprocess with its own settings (environment), data directory and web
  port; it is ready when ``/ready`` answers 200.
* :class:`KafkaIO` owns an event loop on a helper thread for aiokafka: a
  producer (:meth:`KafkaIO.produce`) and background readers
  (:class:`TopicReader`) that collect records of the output topics.
* :func:`host_messages` re-hosts and re-times one round of the recorded
  collectd capture (``ves_streams/dev/capture``), so events come from real
  collectd data and the real ``topologies/host.yaml``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import requests

from ves_streams.resources import capture_dir

PROJECT_DIR = Path(__file__).resolve().parents[2]
CAPTURE_DIR = capture_dir()


# -- data -----------------------------------------------------------------------


@cache
def capture_round() -> tuple[bytes, ...]:
    """The latest value list of every series in the capture, as write_kafka JSON objects."""
    latest: dict[tuple[str, ...], dict[str, Any]] = {}
    for line in (CAPTURE_DIR / "compute-0.values.jsonl").read_bytes().splitlines():
        for item in orjson.loads(line):
            key = (item["plugin"], item["plugin_instance"], item["type"], item["type_instance"])
            latest[key] = item
    return tuple(orjson.dumps(item) for item in latest.values())


def host_messages(host: str, now: float, interval: float) -> list[bytes]:
    """One write_kafka message (a one-element array) per series, for ``host`` at ``now``."""
    out = []
    for raw in capture_round():
        item = orjson.loads(raw)
        item.update(host=host, time=now, interval=interval)
        out.append(orjson.dumps([item]))
    return out


def notification(host: str, when: float, message: str = "CPU is hot") -> bytes:
    """A collectd 5.9+ (Alertmanager-shaped) threshold notification."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int((when % 1) * 1e9):09d}Z"
    return orjson.dumps(
        [
            {
                "labels": {"alertname": "collectd_cpu_percent", "instance": host, "cpu": "0", "type": "user", "severity": "FAILURE"},
                "annotations": {"summary": f"Host {host}, plugin cpu (instance 0) type percent (instance user): {message}"},
                "startsAt": stamp,
            }
        ]
    )


# -- processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Names:
    """Unique topic names and app id for one test on the shared broker."""

    app_id: str
    values: str
    notifications: str
    events: str
    dlq: str
    events_dlq: str

    @classmethod
    def unique(cls, prefix: str) -> Names:
        tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return cls(
            app_id=f"{tag}-app",
            values=f"{tag}-collectd",
            notifications=f"{tag}-notifications",
            events=f"{tag}-ves-events",
            dlq=f"{tag}-dlq",
            events_dlq=f"{tag}-ves-events-dlq",
        )

    @property
    def samples(self) -> str:
        return f"{self.app_id}-samples"

    def env(self) -> dict[str, str]:
        return {
            "VES_STREAMS_APP_ID": self.app_id,
            "VES_STREAMS_VALUES_TOPIC": self.values,
            "VES_STREAMS_NOTIFICATIONS_TOPIC": self.notifications,
            "VES_STREAMS_EVENTS_TOPIC": self.events,
            "VES_STREAMS_DLQ_TOPIC": self.dlq,
            "VES_STREAMS_EVENTS_DLQ_TOPIC": self.events_dlq,
        }


class Worker:
    """A ``faust -A ves_streams worker`` subprocess."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.web_port = free_port()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("VES_STREAMS_")}
        self.env = {
            **base,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), base.get("PYTHONPATH", "")])),
            "VES_STREAMS_DATA_DIR": str(workdir / f"{name}-data"),
            "VES_STREAMS_WEB_PORT": str(self.web_port),
            "VES_STREAMS_WEB_BIND": "127.0.0.1",  # what the tests ask (the default is the host's address)
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "ves_streams", "worker", "-l", "info", "--web-port", str(self.web_port)],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 2.0) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.web_port}{path}", timeout=timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"worker {self.name} exited ({self.proc.returncode if self.proc else '?'}):\n{self.log_tail()}")
            try:
                if self.get("/ready").status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise AssertionError(f"worker {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no leave-group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        text = [line for line in self.log_text().splitlines() if not line.lstrip().startswith(("|", "+", "〃"))]
        return "\n".join(text[-lines:])


# -- Kafka I/O ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp: int
    received: float

    def json(self) -> Any:
        return orjson.loads(self.value) if self.value is not None else None

    @property
    def domain(self) -> str:
        return self.headers.get("ves-domain", b"").decode()

    @property
    def event_id(self) -> str:
        return self.headers.get("ves-event-id", b"").decode()

    @property
    def interval_start(self) -> float | None:
        raw = self.headers.get("ves-streams-interval-start")
        return float(raw) if raw is not None else None


@dataclass
class TopicReader:
    """Records of some topics, collected from the beginning by a background consumer."""

    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self, where: Callable[[Record], bool] = lambda r: True) -> list[Record]:
        with self.lock:
            return [r for r in self.records if where(r)]

    def wait_for(
        self, done: Callable[[list[Record]], bool], timeout: float, where: Callable[[Record], bool] = lambda r: True
    ) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.snapshot(where)
            if done(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s; have {len(got)} matching records")
            time.sleep(0.1)


class KafkaIO:
    """aiokafka on a helper thread, driven from synchronous tests."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kafka-io", daemon=True)
        self.thread.start()
        self._producer: Any = None
        self._tasks: list[Future[Any]] = []
        self._consumers: list[Any] = []

    def _run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _ensure_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, max_request_size=16 * 1024 * 1024, acks="all"
            )
            await self._producer.start()
        return self._producer

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        """Produce and wait for the acknowledgement; returns the RecordMetadata."""

        async def send() -> Any:
            producer = await self._ensure_producer()
            return await producer.send_and_wait(topic, value, key=key)

        return self._run(send())

    def produce_many(self, topic: str, values: Iterable[bytes], key: bytes | None = None) -> None:
        async def send() -> None:
            producer = await self._ensure_producer()
            futures = [await producer.send(topic, v, key=key) for v in values]
            await asyncio.gather(*futures)

        self._run(send())

    def reader(self, topics: Sequence[str], *, read_committed: bool = False) -> TopicReader:
        from aiokafka import AIOKafkaConsumer

        reader = TopicReader()
        started = threading.Event()

        async def consume() -> None:
            consumer = AIOKafkaConsumer(
                *topics,
                bootstrap_servers=self.bootstrap,
                group_id=None,
                auto_offset_reset="earliest",
                isolation_level="read_committed" if read_committed else "read_uncommitted",
                metadata_max_age_ms=1000,
                fetch_max_wait_ms=100,
            )
            await consumer.start()
            self._consumers.append(consumer)
            started.set()
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.time()
                with reader.lock:
                    for tp, messages in batches.items():
                        for m in messages:
                            reader.records.append(
                                Record(tp.topic, tp.partition, m.offset, m.key, m.value,
                                       {k: v for k, v in (m.headers or ())}, m.timestamp, now)
                            )  # fmt: skip

        self._tasks.append(asyncio.run_coroutine_threadsafe(consume(), self.loop))
        if not started.wait(30):
            raise AssertionError(f"reader for {topics} did not start")
        return reader

    def close(self) -> None:
        async def shutdown() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            for consumer in self._consumers:
                try:
                    await consumer.stop()
                except Exception:
                    pass
            if self._producer is not None:
                await self._producer.stop()

        try:
            self._run(shutdown(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def measurement_windows(records: Iterable[Record]) -> dict[str, set[float]]:
    """host -> interval starts of its measurement events."""
    out: dict[str, set[float]] = {}
    for r in records:
        if r.domain == "measurement" and r.key is not None and r.interval_start is not None:
            out.setdefault(r.key.decode(), set()).add(r.interval_start)
    return out
