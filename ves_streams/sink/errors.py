"""The sink's one exception hierarchy, and the scrubbing every message goes through.

Every error the sink raises or logs is a :class:`SinkError`. Delivery errors
say whether retrying can help (``retriable``, as aiokafka's errors do), so the
retry loop never has to inspect messages or status codes twice:

* :class:`TransientDeliveryError`: the collector could not take the events
  *now* (refused connection, timeout, 5xx, 408, 429). It carries the server's
  ``retry_after`` hint when there was one, like quix-streams'
  ``SinkBackpressureError``. The events are retried, never dropped.
* :class:`PermanentDeliveryError`: the collector understood the request and
  refused the events (4xx other than 408/429). Retrying the same bytes cannot
  help; the events go to the dead-letter topic with ``status`` and ``body``.

Guarantee: no message built here contains a credential. URLs lose their
userinfo (``https://user:pw@host`` becomes ``https://***@host``) and every
known secret string is replaced by ``***`` (:func:`ves_streams.secret.scrub`,
shared with the Kafka access check). Response
bodies are truncated so a huge HTML error page cannot flood a log line or a
Kafka header.
"""

from __future__ import annotations

from typing import ClassVar

from ves_streams.secret import scrub, scrub_url

__all__ = [
    "BODY_EXCERPT_CHARS",
    "SinkError",
    "SinkConfigError",
    "DeliveryError",
    "TransientDeliveryError",
    "PermanentDeliveryError",
    "scrub",
    "scrub_url",
    "truncate",
]

#: How much of a collector's response body is kept in errors and DLQ headers.
BODY_EXCERPT_CHARS = 1024

def truncate(text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"...[{len(text) - limit} more chars]"


class SinkError(Exception):
    """Base class of every error raised by :mod:`ves_streams.sink`."""

    #: True when repeating the same operation later may succeed.
    retriable: ClassVar[bool] = False


class SinkConfigError(SinkError):
    """A sink setting is invalid; the message names the setting and what to do."""


class DeliveryError(SinkError):
    """Delivering events to the VES collector failed."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(scrub(message))
        #: The collector URL tried, without userinfo.
        self.url = scrub_url(url) if url is not None else None
        #: HTTP status, or None when no response arrived.
        self.status = status


class TransientDeliveryError(DeliveryError):
    """The collector could not accept the events now; retry later.

    ``retry_after`` is the server's hint in seconds (from ``Retry-After``),
    or None when the retry policy's own backoff applies.
    """

    retriable: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message, url=url, status=status)
        self.retry_after = retry_after
        #: the collector's answer (scrubbed, truncated) when there was one: the reason if it is dead-lettered
        self.body = None if body is None else truncate(scrub(body))


class PermanentDeliveryError(DeliveryError):
    """The collector refused the events; sending the same bytes again cannot help.

    ``body`` is the (scrubbed, truncated) response body, kept for the
    dead-letter record so an operator can see why.
    """

    def __init__(self, message: str, *, status: int, body: str, url: str | None = None) -> None:
        super().__init__(message, url=url, status=status)
        self.status: int = status
        self.body = truncate(scrub(body))
