"""``GET /alarms``: the active alarms, asked of any worker.

Each worker's fault stage keeps the alarms of the notifications partitions
it owns (:mod:`ves_streams.stages.alarms`). Those partitions belong to the
fault stage's own consumer group, whose members' web addresses Kafka does
not share, so the question cannot be forwarded to one partition's owner as
``GET /hosts/{name}`` is. Instead the worker asked answers with its own
alarms and those of every other processing worker it knows (the members of
Faust's group, from the last assignment), each asked with ``?forwarded=1``
so it answers for itself only. Every alarm shows its host and names,
``eventId`` (of its first matching rule; ``eventIds`` all), ``onset`` and
``last`` (epoch seconds), ``severity`` (collectd's) and ``sequence`` (of its
latest event). ``workers`` says which workers answered; one that did not is
named with the reason, and its alarms are missing from the list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ves_streams.secret import Secret
from ves_streams.stages.alarms import AlarmState
from ves_streams.web_access import forward_headers, forwardable, refused

__all__ = ["register_alarm_views"]

log = logging.getLogger(__name__)

#: Seconds another worker may take to answer before it is reported as not answering.
FORWARD_TIMEOUT = 5.0
FORWARDED = "forwarded"


def register_alarm_views(
    app: Any,
    active: Callable[[], list[AlarmState]],
    peers: Callable[[], Iterable[str]],
    own_url: Callable[[], str],
    token: Secret | None = None,
) -> None:
    """Add ``GET /alarms`` to the worker's web server (see the module docstring); ``token``: the bearer token asked for."""

    @app.page("/alarms")
    async def alarms(self: Any, request: Any) -> Any:
        denied = refused(self, request, token)
        if denied is not None:
            return denied
        url = own_url()
        mine = [state.to_json() | {"worker": url} for state in active()]
        if request.query.get(FORWARDED) is not None:
            return self.json({"worker": url, "alarms": mine})
        workers: dict[str, str] = {url: "ok"}
        try:
            others = sorted({p.rstrip("/") for p in peers() if forwardable(p)} - {url})
        except Exception as exc:  # no assignment yet (starting, rebalancing): answer for this worker
            log.info("GET /alarms: the other workers are not known now: %s", exc)
            others, workers["others"] = [], f"not known now: {type(exc).__name__}"
        answers = await asyncio.gather(*(_ask(other, token) for other in others))
        listed = list(mine)
        for other, (problem, found) in zip(others, answers):
            workers[other] = problem or "ok"
            listed += found
        listed.sort(key=lambda a: (a["host"], a["plugin"], a["plugin_instance"], a["type"], a["type_instance"]))
        return self.json({"worker": url, "count": len(listed), "alarms": listed, "workers": workers})


async def _ask(worker: str, token: Secret | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """``(problem or None, alarms)`` of another worker."""
    import aiohttp

    try:
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{worker}/alarms", params={FORWARDED: "1"}, headers=forward_headers(token)) as response:
                body = await response.json(content_type=None)
                if response.status != 200 or not isinstance(body, dict):
                    return f"answered {response.status}", []
                return None, list(body.get("alarms") or [])
    except asyncio.TimeoutError:
        return f"no answer within {FORWARD_TIMEOUT:g} s", []
    except (aiohttp.ClientError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}", []
