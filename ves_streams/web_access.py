"""Who may ask a worker's web server what, and where it may forward a question.

The worker's web server serves two kinds of view. Probes and scrapes
(``/health``, ``/ready``, ``/metrics``) stay open: kubelets and Prometheus
ask them. Interactive queries (``/hosts``, ``/hosts/{name}``, ``/alarms``)
tell which hosts and alarms exist and make a worker send requests on the
asker's behalf, so with ``VES_STREAMS_WEB_TOKEN`` set they ask for it as a
bearer token (401 otherwise), and a worker that forwards one passes it on.
A question is forwarded only to a URL a member of this app's consumer group
announced, and only when that URL is a plain ``http(s)://host:port`` (no
credentials, path or query a member could smuggle in).

Faust's own ``/router`` and ``/table`` views are off (``create_app``): they
answered table lookups to anyone who reached the port.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from ves_streams.secret import Secret

__all__ = ["bearer_matches", "forward_headers", "forwardable", "refused"]


def bearer_matches(token: Secret | None, header: str | None) -> bool:
    """True when no token is asked for, or ``header`` is ``Bearer <token>`` (compared in constant time)."""
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer ") :].strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, token.reveal().encode("utf-8", "surrogateescape"))


def refused(view: Any, request: Any, token: Secret | None) -> Any:
    """A 401 for ``request`` when it lacks the token, else None (``view`` is the Faust view answering)."""
    if bearer_matches(token, request.headers.get("Authorization")):
        return None
    response = view.json({"error": "this query needs VES_STREAMS_WEB_TOKEN as a bearer token"}, status=401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="ves-streams"'
    return response


def forward_headers(token: Secret | None) -> dict[str, str]:
    """The headers a forwarded query carries: the token, when one is asked for."""
    return {"Authorization": f"Bearer {token.reveal()}"} if token is not None else {}


def forwardable(url: str) -> bool:
    """True for a plain ``http(s)://host:port`` (a trailing ``/`` allowed), what workers announce."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port is not None
        and parts.username is None
        and parts.password is None
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
    )
