"""HTTP(S) to the VES collector with ``requests``, without ever blocking the event loop.

``requests`` is synchronous, so every request runs on a worker thread of a
pool owned by :class:`VesHttpClient` (one thread per request the sink may
have in flight: ``max_requests``), and the coroutine awaits it. Each thread
has its own ``requests.Session`` (connection pool, Basic auth, TLS
settings), created on that thread and only used there, so requests in
flight at once use connections of their own. Which requests may be in
flight together (per-host order) is the delivery handler's business.

Not the loop's default executor: Faust and aiokafka may use it too, and a
collector stuck until its timeout must not starve them.

Cancelling :meth:`VesHttpClient.post` (the service stopping) returns at once;
the request already on the wire finishes on the worker thread within the
configured timeouts and its answer is dropped (the events were not
committed, so they are delivered again after a restart: at-least-once).

What :meth:`post` guarantees: it returns an :class:`HttpAnswer` for any HTTP
response (classifying it is :func:`ves_streams.sink.retry.classify_response`'s
job) and raises :class:`TransientDeliveryError` for every failure without a
response (refused, reset, timeout, TLS failure), with the message scrubbed
of the password and URL userinfo. Redirects are not followed: a POST
redirected to a GET would silently lose events.

Every part of an answer is untrusted input (a proxy, a misconfigured or a
hostile collector may say anything):

* the body is read up to :data:`RESPONSE_BODY_LIMIT` bytes (a VES
  ``requestError`` is a few hundred; what a dead-letter reason needs is
  kept), and a body longer than that is not drained: its connection is
  closed rather than returned to the pool (:attr:`HttpAnswer.truncated`);
* the body is decoded with its declared charset when Python knows it as a
  text encoding, else as UTF-8; undecodable bytes become U+FFFD, never an
  exception;
* the password, its Basic encoding and URL userinfo are masked
  (:meth:`~ves_streams.sink.config.CollectorConfig.secrets`) before the
  body leaves this module, so a collector echoing the ``Authorization``
  header cannot put it into a log line or a dead-letter header.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import os
import threading
import time
from dataclasses import dataclass
from functools import partial

import requests

from ves_streams.sink.config import CollectorConfig
from ves_streams.sink.errors import SinkConfigError, TransientDeliveryError, scrub

__all__ = ["HttpAnswer", "VesHttpClient", "RESPONSE_BODY_LIMIT", "decode_body"]

#: Bytes of a response body read and kept; VES answers are small JSON.
RESPONSE_BODY_LIMIT = 16 * 1024

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What the collector answered: status, the start of the body, the Retry-After header."""

    status: int
    body: str
    retry_after: str | None
    elapsed: float
    #: True when the body was longer than :data:`RESPONSE_BODY_LIMIT` (only its start is in ``body``)
    truncated: bool = False


class VesHttpClient:
    """POSTs VES request bodies to collector URLs; see the module docstring.

    Use :meth:`start` before :meth:`post` and :meth:`close` at the end (the
    sink service does both in ``on_start``/``on_stop``).
    """

    def __init__(self, config: CollectorConfig, *, extra_secrets: tuple[str, ...] = (), max_requests: int = 1) -> None:
        if max_requests < 1:
            raise SinkConfigError(f"the HTTP client needs at least one thread, got {max_requests}")
        self.config = config
        self.max_requests = max_requests
        self._secrets = config.secrets() + extra_secrets
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE /
        # CURL_CA_BUNDLE override a session-level ``verify`` (requests#3829).
        self._verify: str | bool = config.ca_bundle if config.ca_bundle else True
        self._cert: str | tuple[str, str] | None = (
            (config.client_cert, config.client_key) if config.client_key else config.client_cert
        ) if config.client_cert else None

    def check_files(self) -> None:
        """Raise :class:`SinkConfigError` when a configured CA bundle, cert or key file is missing."""
        for name, path in (
            ("CA bundle (VES_STREAMS_COLLECTOR_CA_BUNDLE)", self.config.ca_bundle),
            ("client cert (VES_STREAMS_COLLECTOR_CLIENT_CERT)", self.config.client_cert),
            ("client key (VES_STREAMS_COLLECTOR_CLIENT_KEY)", self.config.client_key),
        ):
            if path and not os.path.exists(path):
                raise SinkConfigError(f"collector {name} {path!r}: no such file")

    async def start(self) -> None:
        """Check TLS files and start the worker threads' pool (threads start as requests need them)."""
        self.check_files()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.max_requests, thread_name_prefix="ves-sink-http"
            )

    async def close(self) -> None:
        """Stop the worker threads (without waiting for requests in flight) and close the sessions."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.shutdown(wait=False, cancel_futures=False)
        # closing a session a thread is still using only closes its idle connections
        self._close_sessions()

    async def post(self, url: str, body: bytes) -> HttpAnswer:
        """POST ``body`` to ``url``; an answer for any HTTP status, TransientDeliveryError otherwise."""
        if self._executor is None:
            raise RuntimeError("VesHttpClient.post() before start()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._post_blocking, url, body))

    # -- the worker thread ------------------------------------------------

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            with self._lock:
                return self._new_session()
        return session

    def _new_session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            cfg = self.config
            session = requests.Session()
            if cfg.username is not None:
                password = cfg.password.reveal() if cfg.password is not None else ""
                session.auth = requests.auth.HTTPBasicAuth(cfg.username, password)
            self._local.session = session
            self._sessions.append(session)
        return session

    def _close_sessions(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
            self._local = threading.local()
        for session in sessions:
            session.close()

    def _post_blocking(self, url: str, body: bytes) -> HttpAnswer:
        cfg = self.config
        started = time.monotonic()
        try:
            response = self._session().post(
                url,
                data=body,
                headers=_HEADERS,
                timeout=(cfg.connect_timeout, cfg.timeout),
                verify=self._verify,
                cert=self._cert,
                allow_redirects=False,
                stream=True,
            )
            try:
                raw, truncated = _read_limited(response)
            finally:
                # a body read to its end leaves the connection to the pool; one cut short is closed
                # (requests closes the raw stream when the content was not consumed)
                response.close()
        except requests.exceptions.SSLError as exc:
            raise self._transient("TLS with the collector failed", url, exc) from None
        except requests.exceptions.Timeout as exc:
            raise self._transient(
                f"collector did not answer in time (connect {cfg.connect_timeout}s, read {cfg.timeout}s)", url, exc
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise self._transient("cannot reach the collector", url, exc) from None
        except requests.exceptions.RequestException as exc:
            raise self._transient("request to the collector failed", url, exc) from None
        except OSError as exc:
            raise self._transient("request to the collector failed", url, exc) from None
        text = decode_body(raw, response.encoding)
        return HttpAnswer(
            status=response.status_code,
            body=scrub(text, self._secrets),
            retry_after=response.headers.get("Retry-After"),
            elapsed=time.monotonic() - started,
            truncated=truncated,
        )

    def _transient(self, what: str, url: str, exc: BaseException) -> TransientDeliveryError:
        detail = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
        return TransientDeliveryError(f"{what}: {detail}", url=url)


def _read_limited(response: requests.Response) -> tuple[bytes, bool]:
    """The body's first :data:`RESPONSE_BODY_LIMIT` bytes, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=4096):
        chunks.append(chunk)
        size += len(chunk)
        if size > RESPONSE_BODY_LIMIT:
            return b"".join(chunks)[:RESPONSE_BODY_LIMIT], True
    return b"".join(chunks), False


def decode_body(raw: bytes, charset: str | None) -> str:
    """``raw`` as text: in ``charset`` if Python knows it as a text encoding, else UTF-8; never raises.

    A declared charset is the collector's word, not a fact: an unknown name
    (``x-unknown``), a codec that is not a text encoding (``rot13``,
    ``base64``) or bytes that do not fit it fall back to UTF-8 with
    replacement characters.
    """
    encoding = "utf-8"
    if charset:
        try:
            info = codecs.lookup(charset.strip())
        except (LookupError, ValueError, TypeError):
            info = None
        if info is not None and getattr(info, "_is_text_encoding", True):
            encoding = info.name
    try:
        return raw.decode(encoding, errors="replace")
    except (LookupError, ValueError, TypeError):
        return raw.decode("utf-8", errors="replace")
