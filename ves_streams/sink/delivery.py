"""Deliver one batch: retries, failover to the backup URL, and event-by-event fallback.

:meth:`BatchDelivery.deliver` takes a sealed :class:`~ves_streams.sink.batching.Batch`
and does not return until every record in it is either accepted by a
collector or refused with a reason for the dead-letter topic (or the caller
says the batch is no longer wanted: a consumer rebalance). What it guarantees:

* **Transient failures never lose or reorder events.** The same request is
  retried (same body, same order) after the :class:`RetryPolicy`'s wait, on
  the URL the :class:`EndpointSchedule` picks; forever unless
  ``max_attempts`` is set, in which case the records are refused as
  ``exhausted``.
* **A refused batch costs only its bad events.** ONAP refuses a whole
  ``eventList`` for one bad event, so when a batch of more than one event is
  refused (any permanent 4xx) its events are re-sent one by one as single
  events, in order; only those refused alone are dead-lettered.
* **No batch blocks its hosts forever.** An answer that may be about the
  request's content (413, or a 5xx other than 502/503/504: ONAP answers 500
  when DMaaP refuses a message) is retried like any failure, but once the
  collector is seen taking other requests (the latest outcome of another
  request, heard since this one began, is an accept), or the batch was
  answered so :data:`SPLIT_AFTER` times, a batch of several events is split
  into single events, sent host by host (each host's events in order,
  :data:`SPLIT_PARALLEL` hosts at a time) so the other hosts' events go
  past a poisoned one. A single event so answered :data:`POISON_AFTER`
  times while the collector is seen taking other requests (its siblings
  count, from the batch's first attempt) is refused as ``poisoned`` with
  the answer as its reason. While a request is so answered the handler
  lets one more request go, as a probe. When every request fails (an
  outage), the latest other outcome is a failure and no attempt counts:
  nothing is dead-lettered, everything waits.
* **A refusal about the collector's configuration holds, never
  dead-letters** (:mod:`ves_streams.sink.refusals`): an answer naming one
  (ONAP's "No domain defined for stream id", "Operation not permitted",
  an unserved API version), or a batch of several whose every event, sent
  alone, is refused the same way while the collector took none of the
  domain's other requests, holds the domain: its requests are retried
  with backoff (the retry is the probe), nothing is dead-lettered or
  committed, :meth:`BatchDelivery.held` says why (``/ready``), one ERROR
  line says what to do, and the first accepted request of the domain
  releases it.
* **Waiting never blocks the loop.** Waits go through the injected ``wait``
  coroutine (the service keeps its consumer group membership alive there);
  cancelling ``deliver`` cancels the wait.

Clocks, randomness and the wait are injected so tests can drive it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ves_streams.sink import metrics
from ves_streams.sink.batching import Batch
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.concurrency import AdaptiveConcurrency, ConcurrencyLimits
from ves_streams.sink.config import CollectorConfig
from ves_streams.sink.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from ves_streams.sink.records import SinkRecord
from ves_streams.sink.refusals import configuration_error, refusal_signature
from ves_streams.sink.retry import (
    EndpointSchedule,
    RetryPolicy,
    classify_response,
    is_content_refusal,
    is_endpoint_error,
)

__all__ = ["POISON_AFTER", "SPLIT_AFTER", "SPLIT_PARALLEL", "BatchDelivery", "DeliveryReport", "Refusal"]

logger = logging.getLogger(__name__)

#: While one request keeps failing, log a retry line at most this often (seconds).
_RETRY_LOG_EVERY = 10.0
#: A batch answered with a content refusal this many times is split into single events, accepted others or not.
SPLIT_AFTER = 3
#: A single event answered with a content refusal this many times while the collector accepted others is refused.
POISON_AFTER = 5
#: Hosts of a split batch whose single events are sent at once.
SPLIT_PARALLEL = 4


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record that will not be delivered: why, and the collector's answer if there was one."""

    record: SinkRecord
    #: ``refused`` (a 4xx for this event), ``poisoned`` (see the module docstring) or ``exhausted`` (max attempts).
    kind: str
    message: str
    status: int | None
    body: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The fate of every record of a batch: accepted, or refused (to dead-letter)."""

    delivered: tuple[SinkRecord, ...]
    refused: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class _Accepted:
    url: str


@dataclass(frozen=True, slots=True)
class _Exhausted:
    error: TransientDeliveryError
    attempts: int


@dataclass(frozen=True, slots=True)
class _Split:
    """A batch the collector singled out: to be sent again as single events."""

    error: TransientDeliveryError


@dataclass(frozen=True, slots=True)
class _Poisoned:
    """A single event the collector keeps refusing while it accepts others."""

    error: TransientDeliveryError
    attempts: int


_Outcome = _Accepted | PermanentDeliveryError | _Exhausted | _Split | _Poisoned


class BatchDelivery:
    """Sends batches with retries and failover; see the module docstring.

    One instance lives as long as the sink service, so the endpoint schedule
    (is the primary down?) carries over from batch to batch.
    """

    def __init__(
        self,
        collector: CollectorConfig,
        policy: RetryPolicy,
        client: VesHttpClient,
        *,
        wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        concurrency: AdaptiveConcurrency | None = None,
    ) -> None:
        self.collector = collector
        #: how many requests may be in flight; every attempt's round trip and outcome is reported to it
        self.concurrency = concurrency if concurrency is not None else AdaptiveConcurrency(ConcurrencyLimits(maximum=1))
        self.policy = policy
        self.client = client
        self.schedule = EndpointSchedule(collector.url, collector.backup_url, policy.failback_after)
        self._wait = wait
        self._clock = clock
        self._wallclock = wallclock
        self._random = random
        #: when the collector began failing every request (monotonic), None while it answers
        self._failing_since: float | None = None
        #: the latest outcomes of the two requests heard from last (token, accepted, when): is the collector
        #: taking *other* requests while it refuses this one?
        self._recent: list[tuple[object, bool, float]] = []
        #: requests answered with a content refusal and not finished; each opens a probe permit (:meth:`suspected`)
        self._suspects: set[object] = set()
        #: called when the first request becomes suspect, so the handler can start a probe request
        self.on_suspect: Callable[[], None] | None = None
        #: domains held by a refusal about the collector's configuration: (what it means, its answer, since)
        self._held: dict[str, tuple[str, str, float]] = {}
        #: when a request of each domain was last accepted
        self._domain_accepted: dict[str, float] = {}

    def suspected(self) -> bool:
        """True while a request is answered with a content refusal: one more request may go, as a probe.

        Whether the collector refuses this request's content or everything
        can only be told by another request; the handler lets one more
        request start beyond its limit while this holds (bounded: one, not
        one per suspect, so an outage answering 500 adds one request).
        """
        return bool(self._suspects)

    def held(self) -> dict[str, str]:
        """The domains whose delivery is held by the collector's configuration, each with why (for ``/ready``)."""
        return {domain: f"{meaning} (collector answered {answer})" for domain, (meaning, answer, _) in self._held.items()}

    def failing_for(self) -> float:
        """Seconds every request has failed (no answer, or a transient error); 0 while the collector answers.

        Spans batches: a sink that has retried one batch for ten minutes has
        been failing for ten minutes. An accepted or a refused request (the
        collector answered) ends it.
        """
        since = self._failing_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    async def deliver(self, batch: Batch, *, wanted: Callable[[], bool] = lambda: True) -> DeliveryReport | None:
        """Deliver ``batch``; None if ``wanted()`` turned False before it was done (nothing is reported then)."""
        started = self._clock()
        #: while held: the batch's refusal that holds it, and how many times it was re-sent as a probe
        held: tuple[int | None, str] | None = None
        probes = 0
        while True:
            outcome = await self._send(batch, wanted)
            if outcome is None:
                return None
            if isinstance(outcome, _Accepted):
                self._accepted(batch)
                return DeliveryReport(batch.records, ())
            if isinstance(outcome, _Exhausted):
                return DeliveryReport((), tuple(self._refusal(r, "exhausted", outcome.error) for r in batch.records))
            if isinstance(outcome, _Split):
                logger.warning(
                    "collector keeps answering %s to a batch of %d %s events; sending them one by one, host by "
                    "host, so that one event it cannot take blocks no other host",
                    outcome.error.status,
                    len(batch),
                    batch.domain,
                )
                return await self._deliver_by_host(batch, wanted, started)
            if isinstance(outcome, _Poisoned):
                return DeliveryReport((), (self._poisoned(batch.records[0], outcome),))
            if len(batch) == 1:
                return DeliveryReport((), (self._refusal(batch.records[0], "refused", outcome),))
            signature = refusal_signature(outcome.status, outcome.body)
            if held != signature or batch.domain not in self._held:
                report = await self._one_by_one(batch, outcome, wanted)
                if report is None:
                    return None
                # the same refusal for every event, while the collector took none of the domain's others
                if not _refused_alike(batch, report) or self._domain_accepted.get(batch.domain, -math.inf) >= started:
                    return report
                held, probes = signature, 0
                self._hold(
                    batch.domain,
                    f"the collector refused each of {len(batch)} {batch.domain} events the same way, so the "
                    "refusal is about its configuration, not the events",
                    outcome,
                )
            probes += 1
            if not await self._wait_while(wanted, self.policy.delay(probes, _HOLD, self._random)):
                return None

    async def _one_by_one(
        self, batch: Batch, refusal: PermanentDeliveryError, wanted: Callable[[], bool]
    ) -> DeliveryReport | None:
        """A refused batch's events sent again one by one, in order: which of them does the collector refuse?"""
        logger.warning(
            "collector refused a batch of %d %s events with %s; re-sending them one by one "
            "so only the refused ones are dead-lettered",
            len(batch),
            batch.domain,
            refusal.status,
        )
        delivered: list[SinkRecord] = []
        refused: list[Refusal] = []
        for single in batch.one_by_one():
            result = await self._send(single, wanted)
            if result is None:
                return None
            self._settle_single(single, result, delivered, refused)
        return DeliveryReport(tuple(delivered), tuple(refused))

    async def _wait_while(self, wanted: Callable[[], bool], seconds: float) -> bool:
        """Wait ``seconds`` (if still wanted); False when no longer wanted."""
        if not wanted():
            return False
        if seconds > 0:
            await self._wait(seconds)
        return wanted()

    async def _deliver_by_host(self, batch: Batch, wanted: Callable[[], bool], started: float) -> DeliveryReport | None:
        """Each host's events as single requests, in order; :data:`SPLIT_PARALLEL` hosts at a time.

        A single's evidence that the collector takes other requests counts
        from the batch's first attempt (``started``): its siblings accepted
        while it is refused are that evidence.
        """
        chains: dict[bytes | None, list[Batch]] = {}
        for single in batch.one_by_one():
            chains.setdefault(single.records[0].key, []).append(single)
        gate = asyncio.Semaphore(SPLIT_PARALLEL)
        delivered: list[SinkRecord] = []
        refused: list[Refusal] = []

        async def chain(singles: list[Batch]) -> bool:
            async with gate:
                for single in singles:
                    result = await self._send(single, wanted, since=started)
                    if result is None:
                        return False
                    self._settle_single(single, result, delivered, refused)
            return True

        finished = await asyncio.gather(*(chain(singles) for singles in chains.values()))
        if not all(finished):
            return None
        order = {id(record): index for index, record in enumerate(batch.records)}
        delivered.sort(key=lambda record: order[id(record)])
        refused.sort(key=lambda refusal: order[id(refusal.record)])
        return DeliveryReport(tuple(delivered), tuple(refused))

    def _settle_single(
        self, single: Batch, result: _Outcome, delivered: list[SinkRecord], refused: list[Refusal]
    ) -> None:
        record = single.records[0]
        if isinstance(result, _Accepted):
            self._accepted(single)
            delivered.append(record)
        elif isinstance(result, _Exhausted):
            refused.append(self._refusal(record, "exhausted", result.error))
        elif isinstance(result, _Poisoned):
            refused.append(self._poisoned(record, result))
        elif isinstance(result, PermanentDeliveryError):
            refused.append(self._refusal(record, "refused", result))
        else:  # a single event is never split
            raise AssertionError(f"unexpected outcome for a single event: {result!r}")

    # -- one request, retried ---------------------------------------------

    async def _send(self, batch: Batch, wanted: Callable[[], bool], *, since: float | None = None) -> _Outcome | None:
        """Send ``batch`` as one request, retried; ``since``: when others' accepts begin to count as evidence."""
        body = batch.body()
        kind = "single" if batch.single else "batch"
        metrics.BATCH_EVENTS.observe(len(batch))
        metrics.BATCH_BYTES.observe(len(body))
        token = object()
        started = self._clock() if since is None else since
        try:
            return await self._attempts(batch, wanted, body, kind, token, started)
        finally:
            if token in self._suspects:
                self._suspects.discard(token)

    async def _attempts(
        self, batch: Batch, wanted: Callable[[], bool], body: bytes, kind: str, token: object, started: float
    ) -> _Outcome | None:
        """Attempt ``body`` until accepted, refused, split, poisoned, exhausted or unwanted (None)."""
        attempts = 0
        first_failure: float | None = None
        last_log = -float("inf")
        content_refusals = singled_out = 0
        while True:
            if not wanted():
                return None
            base = self.schedule.choose(self._clock())
            endpoint = "primary" if base == self.schedule.primary else "backup"
            url = self.collector.single_url(base) if batch.single else self.collector.batch_url(base)
            error: TransientDeliveryError | PermanentDeliveryError | None
            try:
                answer = await self.client.post(url, body)
            except TransientDeliveryError as exc:
                error = exc
                metrics.HTTP_RESPONSES.labels(code="none", endpoint=endpoint).inc()
                self.concurrency.attempted(None, back_pressure=True, now=self._clock())
            else:
                metrics.HTTP_RESPONSES.labels(code=str(answer.status), endpoint=endpoint).inc()
                metrics.REQUEST_LATENCY.labels(endpoint=endpoint).observe(answer.elapsed)
                error = classify_response(
                    answer.status,
                    body=answer.body,
                    url=url,
                    retry_after=answer.retry_after,
                    now_epoch=self._wallclock(),
                )
                transient = isinstance(error, TransientDeliveryError)
                self.concurrency.attempted(
                    None if transient else answer.elapsed, back_pressure=transient, now=self._clock()
                )
            self._heard(token, error is None)
            if error is None:
                self._domain_accepted[batch.domain] = self._clock()
                self._release(batch.domain)
                self._failing_since = None
                self.schedule.succeeded(base)
                metrics.BATCHES.labels(kind=kind, outcome="accepted").inc()
                self._set_endpoint(endpoint)
                if attempts:
                    logger.info(
                        "collector %s accepted %d %s event(s) after %d failed attempt(s) over %.1fs",
                        endpoint,
                        len(batch),
                        batch.domain,
                        attempts,
                        self._clock() - (first_failure or self._clock()),
                    )
                return _Accepted(url)
            if isinstance(error, PermanentDeliveryError):
                self._failing_since = None
                self.schedule.succeeded(base)
                meaning = configuration_error(error.status, error.body)
                if meaning is None:
                    metrics.BATCHES.labels(kind=kind, outcome="refused").inc()
                    return error
                self._hold(batch.domain, meaning, error)
                error = TransientDeliveryError(str(error), url=error.url, status=error.status, body=error.body)
            attempts += 1
            if is_content_refusal(error.status):
                content_refusals += 1
                singled_out += 1 if self._others_accepted(token, started) else 0
                if token not in self._suspects:
                    self._suspects.add(token)
                    if len(self._suspects) == 1 and self.on_suspect is not None:
                        self.on_suspect()
                if not batch.single and (singled_out or content_refusals >= SPLIT_AFTER):
                    metrics.BATCHES.labels(kind=kind, outcome="split").inc()
                    return _Split(error)
                if batch.single and singled_out >= POISON_AFTER:
                    metrics.BATCHES.labels(kind=kind, outcome="refused").inc()
                    return _Poisoned(error, attempts)
            now = self._clock()
            first_failure = now if first_failure is None else first_failure
            held = batch.domain in self._held
            if self._failing_since is None and not held:
                self._failing_since = now
            metrics.BATCHES.labels(kind=kind, outcome="retried").inc()
            metrics.RETRIES.labels(reason="configuration" if held else _retry_reason(error)).inc()
            if not held:
                self.schedule.failed(base, now, self.policy.retry_after(error))
            if self.policy.exhausted(attempts) and not held:
                logger.error(
                    "giving up on %d %s event(s) after %d attempts (sink retry max); dead-lettering them: %s",
                    len(batch),
                    batch.domain,
                    attempts,
                    error,
                )
                return _Exhausted(error, attempts)
            following = self.schedule.choose(now)
            failover = following != base and self.schedule.is_up(following, now)
            delay = 0.0 if failover else self.policy.delay(attempts, error, self._random)
            if now - last_log >= _RETRY_LOG_EVERY or failover:
                last_log = now
                log = logger.error if is_endpoint_error(error.status) else logger.warning
                log(
                    "delivery of %d %s event(s) to the %s collector failed (attempt %d): %s; %s",
                    len(batch),
                    batch.domain,
                    endpoint,
                    attempts,
                    error,
                    "trying the backup URL now" if failover else f"retrying in {delay:.2f}s",
                )
            if delay > 0:
                await self._wait(delay)

    # -- bookkeeping ------------------------------------------------------

    def _hold(self, domain: str, meaning: str, error: DeliveryError) -> None:
        """Hold ``domain``: its requests are retried, never dead-lettered, until one is accepted; logged once."""
        if domain in self._held:
            return
        answer = f"{error.status}: {_printable(error.body or '')[:300]}"
        self._held[domain] = (meaning, answer, self._clock())
        metrics.HELD.labels(domain=domain).set(1)
        logger.error(
            "holding delivery of %s events: %s (collector answered %s). Nothing is dead-lettered or committed "
            "meanwhile (Kafka keeps the events); delivery resumes by itself once the collector accepts them",
            domain,
            meaning,
            answer,
        )

    def _release(self, domain: str) -> None:
        held = self._held.pop(domain, None)
        if held is None:
            return
        metrics.HELD.labels(domain=domain).set(0)
        logger.warning(
            "the collector accepts %s events again after %.0f s held (%s); delivery resumed",
            domain,
            self._clock() - held[2],
            held[0],
        )

    def _heard(self, token: object, accepted: bool) -> None:
        """Note the outcome of an attempt of request ``token`` (kept: the latest of two requests)."""
        recent = [entry for entry in self._recent if entry[0] is not token]
        self._recent = [(token, accepted, self._clock()), *recent[:1]]

    def _others_accepted(self, token: object, since: float) -> bool:
        """True when the latest outcome of another request was an accept, heard after ``since``.

        After ``since`` (the request's first attempt): an accept from before
        it says nothing about how the collector answers now. The latest, not
        any: while other requests fail too, this is an outage.
        """
        for other, accepted, when in self._recent:
            if other is not token:
                return accepted and when >= since
        return False

    def _accepted(self, batch: Batch) -> None:
        now = self._wallclock()
        for record in batch.records:
            metrics.DELIVERED.labels(domain=record.domain).inc()
            if record.timestamp_ms is not None:
                metrics.END_TO_END_LATENCY.observe(max(0.0, now - record.timestamp_ms / 1000.0))

    @staticmethod
    def _refusal(record: SinkRecord, kind: str, error: DeliveryError) -> Refusal:
        body = error.body if isinstance(error, (PermanentDeliveryError, TransientDeliveryError)) else None
        return Refusal(record, kind, str(error), error.status, body, error.url)

    @staticmethod
    def _poisoned(record: SinkRecord, outcome: _Poisoned) -> Refusal:
        error = outcome.error
        message = (
            f"collector answered {error.status} to this event {outcome.attempts} times while it accepted "
            f"other requests; dead-lettered so the events behind it are not blocked: {error}"
        )
        return Refusal(record, "poisoned", message, error.status, error.body, error.url)

    def _set_endpoint(self, endpoint: str) -> None:
        metrics.ENDPOINT_ACTIVE.labels(endpoint=endpoint).set(1)
        metrics.ENDPOINT_ACTIVE.labels(endpoint="backup" if endpoint == "primary" else "primary").set(0)


def _retry_reason(error: TransientDeliveryError) -> str:
    if error.status is None:
        return "network"
    if error.status == 429:
        return "throttled"
    if is_endpoint_error(error.status):
        return "endpoint"
    return "unavailable"


#: the error a held batch's probes back off with (no Retry-After: the policy's own backoff)
_HOLD = TransientDeliveryError("held: the collector's configuration refuses the events")


def _refused_alike(batch: Batch, report: DeliveryReport) -> bool:
    """True when every event of a batch of several was refused alone, and all the same way."""
    if len(batch) < 2 or report.delivered or len(report.refused) != len(batch):
        return False
    if any(refusal.kind != "refused" for refusal in report.refused):
        return False
    return len({refusal_signature(r.status, r.body) for r in report.refused}) == 1


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text.strip())
