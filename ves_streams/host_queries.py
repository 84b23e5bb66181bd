"""Interactive queries: which hosts does a worker hold, and where is host X?

What Kafka Streams calls interactive queries, over the state the processing
workers already keep (the host index of their active samples partitions):

* ``GET /hosts?limit=N`` -- this worker's hosts, sorted by name, each with
  its partition, the time of its newest sample, its live series and the end
  of the last window rendered for its partition; at most ``limit`` (default
  :data:`DEFAULT_LIMIT`, at most :data:`MAX_LIMIT`), ``truncated`` says
  whether there were more;
* ``GET /hosts/{name}`` -- the same for one host, from *any* worker: the
  host's partition is computed as ingest computes it, and when another
  worker actively owns that partition (Faust's assignment, the members' web
  URLs) the request is forwarded to it. The answer names the worker that
  holds the host (``worker``) and the one that was asked (``asked``). An
  unknown host is a 404 with a JSON reason; a partition without an owner
  (a rebalance) is a 503.

The views read the index only; they never touch Kafka, and a forwarded
request is not forwarded again. With ``VES_STREAMS_WEB_TOKEN`` they ask for
it, pass it on when forwarding, and forward only to a plain URL a group
member announced (:mod:`ves_streams.web_access`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ves_streams.secret import Secret
from ves_streams.state import HostIndex
from ves_streams.web_access import forward_headers, forwardable, refused

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "HostDirectory", "register_host_views"]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
#: Seconds a forwarded request may take before the asking worker answers 504.
FORWARD_TIMEOUT = 5.0
#: Query parameter marking a request one worker forwarded to another.
FORWARDED = "forwarded"


@dataclass
class HostDirectory:
    """What the views read: the index and where each partition lives. No Faust, no Kafka here."""

    index: HostIndex
    #: builds the index from the table when a rebalance invalidated it
    ensure_index: Callable[[], None]
    active_partitions: Callable[[], Sequence[int]]
    partition_of: Callable[[str], int]
    #: partition -> web URL of its active owner (Faust's assignment)
    owners: Callable[[], dict[int, str]]
    #: this worker's URL as its group knows it; read when asked (``faust worker --web-port`` sets it late)
    own_url: Callable[[], str]
    #: why the state cannot be read now (recovering, rebalancing), or None
    unavailable: Callable[[], str | None] = lambda: None
    #: the bearer token the views ask for (None: none)
    token: Secret | None = None

    @property
    def url(self) -> str:
        return self.own_url()

    def host(self, partition: int, name: str) -> dict[str, Any] | None:
        """The host's entry, or None when this worker's partition does not hold it."""
        value_lists = self.index.value_lists(partition, name)
        if not value_lists:
            return None
        return {
            "host": name,
            "partition": partition,
            "last_sample": max(vl.time for vl in value_lists),
            "series": len(value_lists),
            "last_window": self.index.marker(partition),
        }

    def hosts(self, limit: int) -> dict[str, Any]:
        """This worker's hosts, sorted, at most ``limit``."""
        self.ensure_index()
        partitions = sorted(self.active_partitions())
        names = sorted((name, p) for p in partitions for name in self.index.hosts(p))
        return {
            "worker": self.url,
            "partitions": partitions,
            "count": len(names),
            "truncated": len(names) > limit,
            "hosts": [entry for name, p in names[:limit] if (entry := self.host(p, name)) is not None],
        }

    def locate(self, name: str) -> tuple[int, str | None]:
        """``(partition, owner URL)`` of host ``name``; the owner is None while nobody owns the partition."""
        partition = self.partition_of(name)
        if partition in self.active_partitions():
            return partition, self.url
        return partition, self.owners().get(partition)

    def local_answer(self, name: str, partition: int) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` for a host whose partition this worker owns."""
        self.ensure_index()
        entry = self.host(partition, name)
        if entry is None:
            return 404, {"error": f"unknown host {name!r}: no current samples in its partition {partition}",
                         "host": name, "partition": partition, "worker": self.url}  # fmt: skip
        return 200, {**entry, "worker": self.url}


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {value}")
    return value


def register_host_views(app: Any, directory: HostDirectory) -> None:
    """Add ``/hosts`` and ``/hosts/{name}`` to the worker's web server (see the module docstring)."""

    @app.page("/hosts")
    async def hosts(self: Any, request: Any) -> Any:
        denied = refused(self, request, directory.token)
        if denied is not None:
            return denied
        problem = directory.unavailable()
        if problem:
            return self.json({"error": problem, "worker": directory.url}, status=503)
        try:
            limit = _limit(request.query.get("limit"))
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return self.json(directory.hosts(limit))

    @app.page("/hosts/{name}")
    async def host(self: Any, request: Any, name: str) -> Any:
        denied = refused(self, request, directory.token)
        if denied is not None:
            return denied
        partition, owner = directory.locate(name)
        forwarded = request.query.get(FORWARDED) is not None
        if owner == directory.url:
            problem = directory.unavailable()
            if problem:
                return self.json({"error": problem, "host": name, "partition": partition, "worker": directory.url}, status=503)
            status, body = directory.local_answer(name, partition)
            return self.json({**body, "asked": directory.url}, status=status)
        if owner is None or forwarded:
            reason = ("no worker owns it now (rebalancing?)" if owner is None
                      else f"this worker does not own it (forwarded here, owner {owner})")  # fmt: skip
            return self.json({"error": f"host {name!r} is in partition {partition}: {reason}",
                              "host": name, "partition": partition, "asked": directory.url}, status=503)  # fmt: skip
        if not forwardable(owner):
            return self.json({"error": f"host {name!r} is in partition {partition}, whose owner announced "
                                       f"{owner!r}, which is not a plain http(s)://host:port: not forwarded",
                              "host": name, "partition": partition, "asked": directory.url}, status=502)  # fmt: skip
        status, body = await _forward(owner, name, directory.token)
        if isinstance(body, dict):
            body["asked"] = directory.url
        return self.json(body, status=status)


async def _forward(owner: str, name: str, token: Secret | None = None) -> tuple[int, Any]:
    """Ask the owning worker; ``(status, body)``, or a 502/504 naming it when it does not answer."""
    import asyncio
    from urllib.parse import quote

    import aiohttp

    url = f"{owner.rstrip('/')}/hosts/{quote(name, safe='')}"
    try:
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url, params={FORWARDED: "1"}, headers=forward_headers(token)) as response:
                return response.status, await response.json(content_type=None)
    except asyncio.TimeoutError:
        return 504, {"error": f"the owner of host {name!r}, {owner}, did not answer within {FORWARD_TIMEOUT:g} s",
                     "host": name, "worker": owner}  # fmt: skip
    except (aiohttp.ClientError, ValueError) as exc:
        return 502, {"error": f"asking the owner of host {name!r}, {owner}, failed: {type(exc).__name__}: {exc}",
                     "host": name, "worker": owner}  # fmt: skip
