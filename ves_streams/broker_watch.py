"""Is the Kafka cluster answering? Asked every few seconds, read by ``/ready``.

The worker itself rides out a broker outage (the stage loops hold their
batch and keep polling; Faust's consumer reconnects), so nothing in it
fails when the broker goes: its ``/ready`` used to stay 200 while it could
do nothing. :class:`BrokerWatch` keeps one admin client (built from the
worker's :class:`~ves_streams.runtime.kafka.KafkaConnection`, so with its
TLS and SASL) and asks the cluster to describe itself every
``session_timeout / 3`` seconds; the worker is not ready while no broker
has answered for longer than the session timeout, the time after which the
group coordinator would give this worker's partitions away as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ves_streams.runtime.kafka import KafkaConnection

__all__ = ["BrokerWatch"]

log = logging.getLogger(__name__)


class BrokerWatch:
    """Asks the cluster every ``period`` seconds; :meth:`readiness` says whether it answered lately."""

    def __init__(self, connection: KafkaConnection, session_timeout: float, *, period: float | None = None) -> None:
        self.connection = connection
        self.session_timeout = session_timeout
        self.period = period if period is not None else max(0.5, min(5.0, session_timeout / 3))
        #: when a broker last answered (monotonic); the worker waited for one before it started
        self.last_answer = time.monotonic()
        self._admin: Any = None
        self._reported = False

    def unanswered_for(self) -> float:
        """Seconds since a broker last answered."""
        return max(0.0, time.monotonic() - self.last_answer)

    def readiness(self) -> str | None:
        """Why not ready (no broker answered for longer than the session timeout), or None."""
        silent = self.unanswered_for()
        if silent <= self.session_timeout:
            return None
        return (f"no Kafka broker at {self.connection.bootstrap_servers} has answered for {silent:.0f} s "
                f"(longer than the session timeout, {self.session_timeout:g} s)")  # fmt: skip

    async def ask(self) -> bool:
        """One question to the cluster; True when a broker answered within :attr:`period`."""
        timeout = max(0.5, self.period)
        try:
            if self._admin is None:
                from aiokafka.admin import AIOKafkaAdminClient

                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.connection.bootstrap_servers,
                    request_timeout_ms=int(timeout * 1000),
                    **self.connection.client_kwargs(),
                )
                self._admin = admin
                await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(self._admin.describe_cluster(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no answer, whatever the reason: a fresh client asks next time
            await self._close_admin()
            if not self._reported and self.readiness() is not None:
                self._reported = True
                log.warning("Kafka broker at %s not answering for %.0f s: not ready (%s)",
                            self.connection.bootstrap_servers, self.unanswered_for(), type(exc).__name__)  # fmt: skip
            return False
        self.last_answer = time.monotonic()
        if self._reported:
            self._reported = False
            log.info("Kafka broker at %s answers again", self.connection.bootstrap_servers)
        return True

    async def run(self) -> None:
        """Ask every :attr:`period` until cancelled (the worker runs this as a Faust task)."""
        try:
            while True:
                await self.ask()
                await asyncio.sleep(self.period)
        finally:
            await self._close_admin()

    async def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
