"""Measurements and heartbeats: per-host state, rendered on every interval boundary.

Two kinds of record arrive, in order, on each partition of the samples topic:

* **values** (from ingest): the host's value lists are held in the state
  table in the window their collectd ``time`` falls in
  (:class:`~ves_streams.state.SampleStore`); one whose window was already
  rendered is late: counted (``ves_streams_late_samples_total``), not held;
* **ticks**: at every wall-clock interval boundary each worker's
  :func:`tick_loop` produces one tick into each samples partition it
  actively owns. Consuming a tick renders the window that just ended for
  every host of that partition, each window from its own samples: per
  series the newest value list stamped in the window or, without one, the
  newest before it while it is fresh (Barometer's cache); never one stamped
  after the window's end, however late the tick.

Rendering from a record of the partition, rather than straight from a timer,
is what makes the state handling correct: the tick is ordered after the
values produced before it; expiring samples deletes table keys inside the
stream (Faust writes the tombstone to the partition's changelog); and with
``exactly_once`` the events, the tombstones and the tick's offset commit in
one transaction.

Each partition's table keeps the end of the last window rendered (the
*marker*). A tick not newer than the marker is a duplicate and renders
nothing. A tick that finds windows missing since the marker -- the previous
owner died, or the partition had no owner during a rebalance -- renders up
to ``MAX_BACKFILL_WINDOWS`` of them too, from the recovered state, with
*their* deterministic eventIds: the collector sees every window, and a
window the dead worker had already sent arrives again with the same
eventId. The marker is written only after the window's events were
acknowledged by the broker.

Heartbeats go out from the same tick, per host that has current samples,
when the window contains a boundary of the heartbeat interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from ves_streams.wire import deadletter
from ves_streams.agents.pipeline import CHANGELOG_FLUSH_SECONDS, Pipeline
from ves_streams.collectd import MalformedInput, parse_value_lists
from ves_streams.identity import Interval, heartbeat_due, intervals_to_render, next_boundary
from ves_streams.stages.events import EventOutputs
from ves_streams.wire.samples import KIND_TICK, TICK_HEADERS, Tick, decode_tick, decode_trusted_value_lists, encode_tick, kind_of

if TYPE_CHECKING:
    from faust.types import Message

__all__ = [
    "IngestWait", "Tick", "boundaries_to_tick", "decode_tick", "encode_tick", "handle_samples", "register",
    "render_partition", "tick_loop", "wait_for_boundary", "wait_for_ingest",
]  # fmt: skip

log = logging.getLogger(__name__)

STAGE = "samples"


async def handle_samples(pipeline: Pipeline, message: Message) -> None:
    """One samples record: a tick renders, values update the state."""
    pipeline.ensure_index()
    source = deadletter.Source(message.topic, message.partition, message.offset)
    if kind_of(message.headers) == KIND_TICK:
        try:
            tick = decode_tick(message.value)
        except MalformedInput as exc:
            pipeline.render_priority.rendered(message.partition)
            await pipeline.dead_letter(deadletter.malformed_input(message.key, message.value, exc.reason, STAGE, source), STAGE)
            return
        await render_partition(pipeline, message.partition, tick, source)
        return
    value_lists = decode_trusted_value_lists(message.value)
    if value_lists is None:  # not as ingest writes it: the full parser, and its reason if malformed
        try:
            value_lists = parse_value_lists(message.value)
        except MalformedInput as exc:
            letter = deadletter.malformed_input(message.key, message.value, exc.reason, STAGE, source)
            await pipeline.dead_letter(letter, STAGE)
            return
    applied = pipeline.store.apply(message.partition, value_lists)
    if applied.late:
        _count_late(pipeline, message.partition, applied)
    await pipeline.write_state(message.partition)


#: At most one log line about late samples per this many seconds.
_LATE_LOG_EVERY = 60.0


def _count_late(pipeline: Pipeline, partition: int, applied: Any) -> None:
    """Count late value lists; name one host now and then, so an operator knows where to look."""
    pipeline.metrics.late_samples.inc(applied.late)
    now = time.monotonic()
    example = applied.late_example
    if example is None or now - pipeline.late_logged_at < _LATE_LOG_EVERY:
        return
    pipeline.late_logged_at = now
    log.warning(
        "partition %d: %d value lists arrived after their window was rendered and were dropped, e.g. host %r "
        "stamped %.3f (windows up to %.3f rendered): ingest far behind, or the host's clock behind ours",
        partition, applied.late, example.host, example.time, pipeline.store.marker(partition) or 0.0,
    )  # fmt: skip


async def render_partition(pipeline: Pipeline, partition: int, tick: Tick, source: deadletter.Source) -> None:
    """Render the windows a tick asks for, for every host of ``partition``."""
    try:
        await _render_partition(pipeline, partition, tick, source)
    finally:
        pipeline.render_priority.rendered(partition)


async def _render_partition(pipeline: Pipeline, partition: int, tick: Tick, source: deadletter.Source) -> None:
    await pipeline.flush_changelog()  # the state a window renders is on its way to the changelog first
    interval = pipeline.settings.interval
    windows = intervals_to_render(pipeline.store.marker(partition), tick.end, interval, pipeline.max_backfill)
    metrics = pipeline.metrics
    if not windows:
        metrics.windows.labels("duplicate").inc()
        return
    marker = pipeline.store.marker(partition)
    if marker is not None and len(windows) == 1 and windows[0].start > marker:
        metrics.windows.labels("skipped").inc(round((windows[0].start - marker) / interval))
        log.info(
            "partition %d: last window rendered %.0f s ago, more than %d intervals: resuming at the current window",
            partition, windows[0].start - marker, pipeline.max_backfill,
        )  # fmt: skip
    started = time.perf_counter()
    for i, window in enumerate(windows):
        pending = await _render_window(pipeline, partition, window, source)
        await pipeline.delivered(pending)
        pipeline.store.set_marker(partition, window.end)
        metrics.windows.labels("rendered" if i == len(windows) - 1 else "backfilled").inc()
    if len(windows) > 1:
        log.info(
            "partition %d: rendered %d missed windows before %.3f (taken over from another worker?)",
            partition, len(windows) - 1, windows[-1].end,
        )  # fmt: skip
    metrics.render_seconds.observe(time.perf_counter() - started)
    hosts, series = pipeline.index.size()
    metrics.hosts.set(hosts)
    metrics.series.set(series)


async def _render_window(pipeline: Pipeline, partition: int, window: Interval, source: deadletter.Source) -> list[Any]:
    store, renderer = pipeline.store, pipeline.renderer
    expired = store.expire(partition, window.end)
    if expired:
        log.debug("partition %d: %d series aged out at %.3f", partition, len(expired), window.end)
        await pipeline.write_state(partition)
    hb_boundary = heartbeat_due(window, renderer.heartbeat_interval) if renderer.heartbeat_interval else None
    window_outputs = EventOutputs()
    for host in pipeline.index.hosts(partition):
        samples = store.samples(partition, host, window.end)
        if not samples:
            continue
        made = []
        if renderer.has_measurements and _whole_window(pipeline, partition, host, window):
            rendered = renderer.measurements(host, samples, window)
            made.append(pipeline.outputs(rendered, stage="measurements", source=source, interval_start=window.start))
        if hb_boundary is not None:
            rendered = renderer.heartbeat(host, hb_boundary, window)
            made.append(pipeline.outputs(rendered, stage="heartbeat", source=source, interval_start=hb_boundary))
        for outputs in made:
            window_outputs.events += outputs.events
            window_outputs.dead_letters += outputs.dead_letters
    # the window's events go out together, a record batch per events partition (publish_events)
    return await pipeline.publish_outputs(window_outputs)


def _whole_window(pipeline: Pipeline, partition: int, host: str, window: Interval) -> bool:
    """False for the window in which a host (re)appeared: it holds only part of the host's series.

    Its measurements are rendered from the next window on, the first one the
    host reported through from start to end. (Heartbeats still go out: the
    host is alive.)
    """
    first = pipeline.index.first_seen(partition, host)
    if first is not None and first > window.start:
        pipeline.metrics.partial_windows.inc()
        return False
    return True


#: How often a waiting tick re-checks ingest's progress, and how long a partition whose
#: fetch position is at the end must stay quiet before its missing offsets are taken as
#: skipped (transaction markers, records the broker compacted away) rather than pending.
_WAIT_POLL = 0.1
_QUIET = 0.5
#: How often a waiting tick asks the ingest group for the other workers' committed offsets.
_OTHERS_POLL = 0.25
#: How often a tick waiting out an outage asks again.
_REFUSED_POLL = 0.5


@dataclass(frozen=True)
class IngestWait:
    """What :func:`wait_for_ingest` found: the partitions still behind, and whether writes were refused."""

    behind: list[Any]
    #: the cluster refused writes (ingest's batch waited for its acknowledgement longer than an
    #: interval) or could not say where the partitions end: behind by an outage, not by load
    refused: bool = False


async def wait_for_ingest(pipeline: Pipeline, deadline: float) -> IngestWait:
    """Wait until ingest has handled every record the collectd partitions held when called.

    Returns the input partitions still behind at ``deadline`` (wall clock), or
    none once caught up. This worker's own input partitions are followed
    record by record (what its ingest handled); the partitions other workers
    own, by the ingest group's committed offsets: a worker that died holds
    its partitions, unconsumed, until the group's session timeout moves them,
    and a tick that did not wait for them rendered the window without the
    samples they held (the soak lost a window of every host at each SIGKILL
    that way). A partition nobody ever committed is not waited for (nothing
    says where its consumer stands). There is no quiet rule for them, as
    there is for this worker's own: a dead worker's partition is exactly one
    whose commit stands still below its end, and collectd's topic has no
    transaction markers or compacted gaps that would keep a live one there.

    Every question to the broker is bounded: while the partitions' leaders
    cannot be reached, aiokafka retries ``end_offsets`` for up to its request
    timeout (40 s), and a tick held that long found more missed windows than
    it may backfill (the two-brokers-down drill lost five windows per host
    that way). A question not answered within an interval, or an ingest batch
    that has waited that long for its acknowledgement, returns at once with
    ``refused`` set: the cluster is refusing writes, and
    :func:`wait_for_boundary` decides how long to wait for it.
    """
    ingest = pipeline.ingest
    if ingest is None:
        return IngestWait([])
    tps = ingest.assigned()
    owned = set(tps)
    others = [tp for tp in ingest.input_partitions() if tp not in owned]
    if not tps and not others:
        return IngestWait([])
    # an answer or an acknowledgement this late means an outage, not load
    refused_after = max(1.0, pipeline.settings.interval)
    own_ends, others_ends = await asyncio.gather(
        _bounded(ingest.end_offsets(tps), refused_after), _bounded(ingest.end_offsets(others), refused_after)
    )
    if own_ends is None:  # no leader answers: an outage, however long it has lasted
        return IngestWait(tps, refused=True)
    if others_ends is None:  # another worker's leaders away: that worker's own ticks see it
        others = []
    ends = {**own_ends, **(others_ends or {})}
    app = pipeline.app
    quiet_since: dict[Any, tuple[int, float]] = {}
    others_checked = 0.0
    while True:
        behind = []
        now = time.monotonic()
        revoked = [tp for tp in tps if tp not in ingest.assigned()]
        if revoked:  # another worker owns them now: followed through its commits, like the others
            tps = [tp for tp in tps if tp not in revoked]
            others += revoked
            others_checked = 0.0
        for tp in tps:
            end = ends.get(tp)
            done = ingest.handled.get(tp, -1)
            if end is None or done >= end:
                continue
            try:
                position = await asyncio.wait_for(ingest.position(tp), max(0.1, min(5.0, deadline - time.time())))
            except asyncio.TimeoutError:
                position = None
            if position is not None and position >= end:
                since = quiet_since.get(tp)
                if since is None or since[0] != done:
                    quiet_since[tp] = (done, now)
                elif now - since[1] >= _QUIET:
                    continue  # everything fetched and nothing handled for a while: nothing pending
            behind.append(tp)
        if not behind and others and now - others_checked >= _OTHERS_POLL:
            others_checked = now
            ask_for = min(refused_after, max(0.1, deadline - time.time()))
            others = await _others_behind(ingest, others, ends, ask_for)
            behind = list(others)
        elif others:
            behind = behind or list(others)
        if behind and ingest.producing_for() > refused_after:
            return IngestWait(behind, refused=True)
        if not behind or time.time() >= deadline or app.should_stop or app.rebalancing:
            return IngestWait(behind)
        await asyncio.sleep(_WAIT_POLL)


async def _bounded(question: Awaitable[dict[Any, int]], timeout: float) -> dict[Any, int] | None:
    """``question``'s answer, or None when the broker did not give one within ``timeout``."""
    try:
        return await asyncio.wait_for(question, timeout)
    except (asyncio.TimeoutError, KafkaError):
        return None


async def _others_behind(ingest: Any, others: list[Any], ends: dict[Any, int], timeout: float) -> list[Any]:
    """Those of ``others`` (partitions other workers own) whose committed offset is still below ``ends``.

    A group that cannot be asked (its coordinator away) holds no tick: the
    refusal is seen through this worker's own partitions, and an unanswered
    question here would only delay every window.
    """
    committed = await _bounded(ingest.group_committed(others), timeout)
    if committed is None:
        log.debug("cannot read the ingest group's committed offsets within %.1f s", timeout)
        return []
    return [tp for tp in others if tp in committed and committed[tp] < ends.get(tp, 0)]


async def wait_for_boundary(pipeline: Pipeline, boundary: float) -> list[Any]:
    """Wait for ingest at ``boundary``; return the partitions still behind when the wait ends.

    Ingest that is behind by load gets ``max_backfill - 1`` intervals: that
    far behind it is not catching up, and the state is rendered as it
    stands. Ingest that is behind because the cluster refuses writes is
    waited for as long as the refusal lasts, plus one interval once it ended,
    for the producers upstream (collectd's librdkafka keeps retrying what it
    holds) to deliver the samples they kept, and then the partitions' ends
    are read again. A tick sent during the outage would be delivered before
    those samples and render their window without them.
    """
    interval = pipeline.settings.interval
    hold = max(0, pipeline.max_backfill - 1) * interval
    app = pipeline.app
    deadline = boundary + hold
    refused_since: float | None = None
    while True:
        found = await wait_for_ingest(pipeline, deadline)
        if app.should_stop or app.rebalancing:
            return found.behind
        if found.refused:
            if refused_since is None:
                refused_since = time.time()
                log.warning("the cluster refuses writes: the render tick for %.3f waits for it", boundary)
            await asyncio.sleep(_REFUSED_POLL)
            continue
        if refused_since is not None:
            log.info("writes accepted again after %.0f s: the render tick for %.3f waits one interval for "
                     "the samples held upstream", time.time() - refused_since, boundary)  # fmt: skip
            refused_since = None
            await asyncio.sleep(interval)
            deadline = time.time() + hold
            continue
        return found.behind


def boundaries_to_tick(waited_for: float, now: float, interval: float, max_backfill: int) -> list[float]:
    """The boundaries to tick after waiting for ``waited_for`` until ``now``, oldest first.

    The one waited for, and the latest; after a wait longer than
    ``max_backfill`` intervals (only an outage is waited out that long), the
    latest ``max_backfill + 1`` boundaries one by one too, so that the windows
    since the cluster returned are rendered rather than skipped as a gap too
    long to backfill.
    """
    latest = round(next_boundary(now, interval) - interval, 6)
    if latest <= waited_for:
        return [waited_for]
    gap = int(round((latest - waited_for) / interval))
    if gap <= max_backfill:
        return [waited_for, latest]
    return [waited_for] + [round(latest - i * interval, 6) for i in range(max_backfill, -1, -1)]


async def tick_loop(pipeline: Pipeline) -> None:
    """Forever: at each interval boundary, send a tick to each actively owned samples partition.

    A tick waits until this worker's ingest has handled every collectd record
    that was in its partitions at the boundary (:func:`wait_for_boundary`), so
    that a window is rendered from the samples sent during it even when ingest
    lags behind (a backlog after a restart or a takeover, a burst, a slow
    machine, an outage of the cluster): late rather than lost. While ingest
    stays behind, boundaries pass without ticks; the ticks sent once it
    caught up render the windows in between as missed ones (up to
    ``max_backfill``, :func:`boundaries_to_tick`).

    Ticks are produced outside any transaction (they are idempotent: a
    duplicate renders nothing), straight to the partition.
    """
    app = pipeline.app
    interval = pipeline.settings.interval
    topic = pipeline.topics.names.samples
    producer = app.producer
    await producer.maybe_start()
    log.info("render ticks every %gs to the active partitions of %s", interval, topic)
    while not app.should_stop:
        end = next_boundary(time.time(), interval)
        await asyncio.sleep(max(0.0, end - time.time()))
        if app.should_stop:
            break
        if app.rebalancing:
            # The partitions are moving; their new owners tick from the next boundary
            # and render this window as a missed one.
            continue
        try:
            behind = await wait_for_boundary(pipeline, end)
        except asyncio.CancelledError:
            raise
        except Exception:  # consumer not started or broker away: tick on the wall clock
            log.debug("cannot tell how far ingest is behind", exc_info=True)
            behind = []
        if app.should_stop:
            break
        if app.rebalancing:
            continue
        waited = time.time() - end
        pipeline.metrics.render_wait.observe(max(0.0, waited))
        if behind:
            log.warning(
                "ingest still behind on %s %.0f s after the boundary %.3f: rendering the state as it stands",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in behind), waited, end,
            )  # fmt: skip
        elif waited > interval:
            log.info("render tick for %.3f waited %.1f s for ingest to catch up", end, waited)
        try:
            partitions = pipeline.active_samples_partitions()
        except Exception:
            log.debug("no assignment yet", exc_info=True)
            continue
        values = [encode_tick(Tick(end=b, interval=interval))
                  for b in boundaries_to_tick(end, time.time(), interval, pipeline.max_backfill)]  # fmt: skip
        # ingest waits for these renders (render_priority.py); said before the first tick can come back
        pipeline.render_priority.ticked(partitions, len(values))
        try:
            for partition in partitions:  # complete batches leave at once: no producer linger on every window
                await pipeline.send_to_partition(topic, partition, [(b"", v, TICK_HEADERS) for v in values])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker is away: the next tick renders this window as a missed one
            pipeline.render_priority.forget()
            log.warning("could not send the render tick for %.3f: %s: %s", end, type(exc).__name__, exc)


def register(pipeline: Pipeline) -> Any:
    app = pipeline.app

    @app.agent(pipeline.topics.samples, name="ves_streams.measurements")
    async def measurements(stream: Any) -> None:
        async for event in stream.events():
            await pipeline.guard(STAGE, event.message, handle_samples)

    @app.task
    async def render_ticks() -> None:
        await tick_loop(pipeline)

    @app.task
    async def flush_changelog() -> None:
        while not app.should_stop:
            await asyncio.sleep(CHANGELOG_FLUSH_SECONDS)
            try:
                await pipeline.flush_changelog()
            except asyncio.CancelledError:
                raise
            except Exception:  # the producer is restarting: the records are lost like a failed write
                log.warning("queueing state changelog records failed", exc_info=True)

    return measurements
