"""What a refusal means: the collector's own configuration, or the events refused.

A VES collector answers 400 both for an invalid event and for faults of its
own configuration, and the two need opposite handling: an invalid event is
dead-lettered alone, while a configuration fault would dead-letter every
event there is (ONAP answers a domain missing from its stream-id map with
the same 400 for every event of that domain). So a refusal is held to be
the collector's configuration, and delivery of its domain is *held*
(retried as for an outage, nothing dead-lettered, nothing committed) when:

* the answer names one (:func:`configuration_error`): ONAP's ``SVC2000``
  "No domain defined for stream id", "Operation not permitted" (plain HTTP
  to a collector whose auth is on), "API version ... is not supported" or
  "Incorrect request api version"; or
* every event of a batch of several, re-sent one by one, is refused the
  same way (:func:`refusal_signature`): one bad event among good ones is
  refused alone, so a refusal shared by every event is not about the events.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re

__all__ = ["configuration_error", "refusal_signature"]

#: (pattern in the answer, what it means and what to do), checked in order, case-insensitively.
_CONFIGURATION_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"no domain defined for stream id", re.IGNORECASE),
        "the collector has no stream for this domain (ONAP SVC2000 'No domain defined for stream id'): "
        "add the domain to collector.dmaap.streamid in the collector's collector.properties",
    ),
    (
        re.compile(r"operation not permitted", re.IGNORECASE),
        "the collector refuses plain HTTP because its authentication is on ('Operation not permitted'): "
        "point VES_STREAMS_COLLECTOR_URL at its https:// port",
    ),
    (
        re.compile(r"api version \S* ?is not supported|incorrect request api version", re.IGNORECASE),
        "the collector does not serve this VES API version: set VES_STREAMS_VES_VERSION (or the URL's "
        "/eventListener/vN) to a version it serves (collector.service.api.version.supported)",
    ),
)

_SPACE = re.compile(r"\s+")


def configuration_error(status: int, body: str) -> str | None:
    """What the answer says is wrong with the collector's configuration, and what to do; None if nothing.

    Only refusals (4xx) are read: a 5xx is retried anyway.
    """
    if not 400 <= status < 500:
        return None
    for pattern, meaning in _CONFIGURATION_ERRORS:
        if pattern.search(body):
            return meaning
    return None


def refusal_signature(status: int | None, body: str | None) -> tuple[int | None, str]:
    """What two refusals must share to be "the same way": the status and the body, whitespace folded."""
    return status, _SPACE.sub(" ", (body or "").strip())[:500]
