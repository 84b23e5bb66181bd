"""The collector's HTTP side: an aiohttp application and the loop that serves it.

Routes:

* ``POST [/<prefix>]/eventListener/v{5,7}[/<topic>]`` with ``{"event": ...}``
* ``POST [/<prefix>]/eventListener/v{5,7}/eventBatch`` with ``{"eventList": [...]}``
* ``GET /healthcheck`` -> 200, ``GET /_stats`` -> counters (and injected faults)
* ``POST /_control`` (only with ``--control``) -> see :mod:`ves_streams.dev.collector.faults`

An event request goes through, in order: Basic auth (401), injected delay
and status, ``Content-Type: application/json``, JSON parsing, the VES rules
of :mod:`ves_streams.dev.collector.listener` (400), injected event-id refusals
(400); then its events are recorded and the answer is ``202`` with no body.
"""

from __future__ import annotations

import asyncio
import hmac
import signal
import sys
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from aiohttp import BasicAuth, web

from ves_streams.dev.collector.config import BasicAuthCredentials, CollectorConfig
from ves_streams.dev.collector.errors import ControlError
from ves_streams.dev.collector.faults import CollectorStats, FaultInjector, retry_after_header
from ves_streams.dev.collector.listener import (
    RequestRefused,
    accept_request,
    event_ids,
    listener_path,
    parse_body,
    policy_exception,
    service_exception,
)
from ves_streams.dev.collector.recorder import EventRecorder

__all__ = ["CollectorState", "COLLECTOR", "create_app", "serve"]

#: Largest request body accepted (aiohttp's default of 1 MiB is small for batches).
MAX_BODY_BYTES = 64 * 1024 * 1024

#: How long a stop waits for requests in flight (an injected delay may hold some).
SHUTDOWN_GRACE_SECONDS = 3.0


@dataclass
class CollectorState:
    """Everything the handlers share; one per application."""

    config: CollectorConfig
    recorder: EventRecorder
    faults: FaultInjector = field(default_factory=FaultInjector)
    stats: CollectorStats = field(default_factory=CollectorStats)


COLLECTOR = web.AppKey("collector", CollectorState)


def _check_auth(request: web.Request, auth: BasicAuthCredentials | None) -> None:
    """Refuse with 401 unless the request carries the configured user and password (constant-time compare)."""
    if auth is None:
        return
    header = request.headers.get("Authorization")
    reason = None
    if header is None:
        reason = "missing Authorization header"
    else:
        try:
            given = BasicAuth.decode(header, encoding="utf-8")
        except ValueError:
            reason = "Authorization header is not valid Basic auth"
        else:
            user_ok = hmac.compare_digest(given.login.encode(), auth.username.encode())
            password_ok = hmac.compare_digest(given.password.encode(), auth.password.reveal().encode())
            if not (user_ok and password_ok):
                reason = "wrong username or password"
    if reason is not None:
        raise RequestRefused(
            401,
            policy_exception("POL2000", "Unauthorized user"),
            reason,
            headers={"WWW-Authenticate": 'Basic realm="VES collector", charset="UTF-8"'},
        )


async def _apply_faults(state: CollectorState) -> None:
    if state.faults.delay > 0:
        await asyncio.sleep(state.faults.delay)
    fault = state.faults.take_status()
    if fault is None:
        return
    headers = {} if fault.retry_after is None else {"Retry-After": retry_after_header(fault.retry_after)}
    if fault.status == 503:
        body = service_exception("SVC1000", "No server resources (internal processing queue full)")
    else:
        body = service_exception(
            "SVC2000", "The following service error occurred: %1. Error code is %2",
            ["injected by /_control", str(fault.status)],
        )
    raise RequestRefused(fault.status, body, f"injected {fault.status} (/_control)", headers=headers)


def _check_content_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise RequestRefused(
            400,
            service_exception("SVC0002", "Bad Parameter: %1", ["Incorrect request Content-Type: use application/json"]),
            f"Content-Type {request.content_type!r}, not application/json",
        )


class _TextRefusal(RequestRefused):
    """A refusal whose body is plain text, not a VES ``requestError`` (as some of ONAP's are)."""

    def __init__(self, status: int, text: str, content_type: str) -> None:
        super().__init__(status, {}, text)
        self.text = text
        self.content_type = content_type


def _refuse_as_configured(faults: FaultInjector, version: str, events: list[dict[str, Any]]) -> None:
    """Answer as ONAP's collector does when its configuration refuses the request (``onap_refusal``)."""
    domains = {str(e.get("commonEventHeader", {}).get("domain")) for e in events}
    kind = faults.configuration_refusal(domains)
    if kind == "no_stream":
        raise RequestRefused(
            400,
            service_exception(
                "SVC2000", "The following service error occurred: %1. Error code is %2",
                ["No domain defined for stream id", "400"],
            ),
            f"no stream id for domain(s) {', '.join(sorted(domains))} (onap_refusal)",
        )
    if kind == "http_with_auth":
        raise _TextRefusal(400, "Operation not permitted", "text/plain")
    if kind == "api_version":
        raise _TextRefusal(400, f"API version {version} is not supported", "application/json")


def _refusal_response(request: web.Request, refusal: RequestRefused, faults: FaultInjector) -> web.Response:
    """The error answer, misbehaving as ``/_control`` asked (charset, padding, echoed credentials)."""
    if isinstance(refusal, _TextRefusal):
        return web.Response(
            body=refusal.text.encode("utf-8"), status=refusal.status,
            headers={"Content-Type": f"{refusal.content_type}; charset=utf-8"},
        )
    answer: dict[str, Any] = dict(refusal.body)
    if faults.echo_auth:
        header = request.headers.get("Authorization", "")
        try:
            given = BasicAuth.decode(header, encoding="utf-8") if header else None
        except ValueError:
            given = None
        answer["echo"] = {
            "authorization": header,
            "credentials": f"{given.login}:{given.password}" if given is not None else "",
            "password": given.password if given is not None else "",
        }
    text = _dumps(answer).encode("utf-8")
    if faults.body_bytes > len(text):
        text += b" " * (faults.body_bytes - len(text))  # trailing whitespace: still the same JSON
    headers = dict(refusal.headers)
    headers["Content-Type"] = f"application/json; charset={faults.charset or 'utf-8'}"
    return web.Response(body=text, status=refusal.status, headers=headers)


async def _event_request(request: web.Request) -> web.Response:
    state = request.app[COLLECTOR]
    number = state.recorder.next_request()
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if peer:
        state.stats.connections.add(f"{peer[0]}:{peer[1]}")
    body: Any = None
    raw: bytes | None = None
    ids: list[str] = []
    try:
        _check_auth(request, state.config.auth)
        await _apply_faults(state)
        _check_content_type(request)
        path = listener_path(request.match_info["version"], request.match_info.get("rest"))
        raw = await request.read()
        body = parse_body(raw)
        ids = event_ids(body)
        # Schema validation of a big batch takes a while (about 1 ms per
        # measurement event); in a thread, /healthcheck and /_control still answer.
        events = await asyncio.to_thread(accept_request, path, body)
        _refuse_as_configured(state.faults, request.match_info["version"], events)
        refused_ids = state.faults.rejected_ids(ids)
        if refused_ids:
            reason = f"eventId {', '.join(refused_ids)} refused by /_control"
            status = state.faults.reject_status
            if status >= 500:
                answer = service_exception("SVC1000", "The following service error occurred: %1", [reason])
            else:
                answer = service_exception("SVC0002", "Bad Parameter: %1", [reason])
            raise RequestRefused(status, answer, reason)
    except RequestRefused as refusal:
        state.stats.answered(refusal.status)
        state.stats.events_refused += len(ids)
        unparsed = raw.decode("utf-8", "replace") if body is None and raw is not None else None
        state.recorder.refused(
            number, request.path, refusal.status, refusal.reason, body=body, raw=unparsed, event_ids=ids
        )
        return _refusal_response(request, refusal, state.faults)
    state.recorder.accepted(number, request.path, events)
    state.stats.accepted(events)
    state.stats.answered(202)
    return web.Response(status=202)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _healthcheck(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _stats(request: web.Request) -> web.Response:
    state = request.app[COLLECTOR]
    snapshot = state.stats.snapshot()
    if state.config.control:
        snapshot["faults"] = state.faults.snapshot()
    return web.json_response(snapshot, dumps=_dumps)


async def _control(request: web.Request) -> web.Response:
    state = request.app[COLLECTOR]
    try:
        command = orjson.loads(await request.read())
        faults = state.faults.apply(command)
    except orjson.JSONDecodeError as exc:
        return web.json_response({"error": f"body is not JSON: {exc}"}, status=400)
    except ControlError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if not state.config.quiet:
        print(f"control  {_dumps(command)} -> {_dumps(faults)}", flush=True)
    return web.json_response({"faults": faults}, dumps=_dumps)


async def _control_state(request: web.Request) -> web.Response:
    return web.json_response({"faults": request.app[COLLECTOR].faults.snapshot()}, dumps=_dumps)


def create_app(config: CollectorConfig, recorder: EventRecorder) -> web.Application:
    """The collector application; ``recorder`` must be open while it serves."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[COLLECTOR] = CollectorState(config=config, recorder=recorder)
    for prefix in ("", "/{prefix:.+}"):
        app.router.add_post(prefix + "/eventListener/{version}", _event_request)
        app.router.add_post(prefix + "/eventListener/{version}/{rest}", _event_request)
    app.router.add_get("/healthcheck", _healthcheck)
    app.router.add_get("/_stats", _stats)
    if config.control:
        app.router.add_post("/_control", _control)
        app.router.add_get("/_control", _control_state)
    return app


def _describe(config: CollectorConfig, address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    parts = [
        f"VES collector listening on {config.scheme}://{host}:{port}",
        "(event listener v5 and v7",
        f"record: {config.record or 'off'}",
        f"refused: {config.record_rejected or 'off'}",
        f"auth: basic, user {config.auth.username!r}" if config.auth else "auth: off",
        f"tls: {('on, client certificates required' if config.tls_client_ca else 'on') if config.tls_cert else 'off'}",
        f"control: {'on' if config.control else 'off'})",
    ]
    return parts[0] + " " + "; ".join(parts[1:])


async def serve(config: CollectorConfig, *, out: IO[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then finish requests in flight (briefly) and close the record files.

    The first line printed names the URL with the port actually bound, so
    ``--port 0`` can be used by tests.
    """
    out = out if out is not None else sys.stdout
    ssl_context = config.ssl_context()
    recorder = EventRecorder(config.record, config.record_rejected, quiet=config.quiet, out=out)
    recorder.open()
    runner = web.AppRunner(create_app(config, recorder), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        address = runner.addresses[0] if runner.addresses else (config.host, config.port)
        out.write(_describe(config, address) + "\n")
        out.flush()
        await stop.wait()
        out.write("VES collector stopping\n")
        out.flush()
    finally:
        await runner.cleanup()
        recorder.close()
