"""Prometheus metrics, one registry per app (nothing global, so tests can run many apps).

Most figures are read from their owners at scrape time (the scheduler, the event bus, the
loop-lag monitor, the WebSocket hub); the few that are flows are counted from the events
this server published, so metrics cannot disagree with them.

In cluster mode every node has its own /metrics: the flows count this node's work only, the
task counts are the cluster's (every node sees every task), and every sample carries a
`node` label so figures scraped from several nodes stay apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from progress_server.events import EventBus
from progress_server.models import Event, EventName, TaskState
from progress_server.scheduler import Scheduler
from progress_server.store import Store

CONTENT_TYPE = CONTENT_TYPE_LATEST
_PREFIX = "progress_server_"
# SQLite commits with synchronous=FULL take a few ms on a disk, far more on a busy one.
_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LoopLag(Protocol):
    """The loop-lag monitor's figures (progress_server.looplag)."""

    @property
    def worst_seconds(self) -> float: ...

    def worst_recent_seconds(self) -> float: ...


class SocketStats(Protocol):
    """What the WebSocket side reports: open sockets, frames sent, frames dropped."""

    @property
    def connections(self) -> int: ...

    @property
    def frames_sent(self) -> int: ...

    @property
    def frames_dropped(self) -> int: ...


class Metrics:
    def __init__(
        self,
        scheduler: Scheduler,
        bus: EventBus,
        store: Store,
        loop_lag: LoopLag | None = None,
        sockets: SocketStats | None = None,
        node: str | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.bus = bus
        self.store = store
        self.loop_lag = loop_lag
        self.sockets = sockets
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.bytes_downloaded = 0
        self.retries: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        # Bytes each running task had at its last progress event; a task seen for the first
        # time (or restarted from zero) sets its base without counting, so bytes that a
        # previous run of the server fetched are not counted twice.
        self._last_bytes: dict[str, int] = {}
        histogram = Histogram(
            _PREFIX + "sqlite_write_seconds",
            "Seconds from a SQLite write's request to its commit (writes ready together "
            "share one group commit).",
            labelnames=["node"] if node else [],
            buckets=_WRITE_BUCKETS,
            registry=self.registry,
        )
        self.write_seconds = histogram.labels(node=node) if node else histogram
        self._observe = self.write_seconds.observe
        self.registry.register(_Collector(self))
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.bus.subscribe_own(self._on_event)
        self.store.write_observers.append(self._observe)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._observe in self.store.write_observers:
            self.store.write_observers.remove(self._observe)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _on_event(self, event: Event) -> None:
        if event.name is EventName.PROGRESS:
            now = int(event.body.get("progress", {}).get("downloaded_bytes") or 0)
            before = self._last_bytes.get(event.task_id)
            if before is not None and now > before:
                self.bytes_downloaded += now - before
            self._last_bytes[event.task_id] = now
            return
        if event.name is EventName.STARTED:
            # Counted from what the task held when it started: its first progress frame
            # may come only at its end.
            held = self.bus.snapshots.get(event.task_id)
            kept = held.progress.downloaded_bytes if held is not None else 0
            self._last_bytes[event.task_id] = 0 if event.body.get("restarted_from_zero") else kept
        elif event.name in (EventName.RETRYING, EventName.ERROR):
            error_type = str(event.body.get("error", {}).get("type", "unknown"))
            if event.name is EventName.RETRYING:
                self.retries[error_type] += 1
            else:
                self.failures[error_type] += 1
        if event.state is not TaskState.DOWNLOADING:
            self._last_bytes.pop(event.task_id, None)


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.m.node
        for family in self._families():
            if node:
                family.samples = [
                    sample._replace(labels={"node": node, **sample.labels})
                    for sample in family.samples
                ]
            yield family

    def _families(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        m = self.m
        by_state = GaugeMetricFamily(
            _PREFIX + "tasks", "Tasks by state.", labels=["state"]
        )  # fmt: skip
        counts = Counter(snapshot.state for snapshot in m.bus.snapshots.all())
        for state in TaskState:
            by_state.add_metric([state.value], counts[state])
        yield by_state
        yield GaugeMetricFamily(
            _PREFIX + "active_downloads",
            "Transfers running now (holding a download slot).",
            value=m.scheduler.active_downloads,
        )
        yield CounterMetricFamily(
            _PREFIX + "downloaded_bytes",
            "Bytes received from origins by this process.",
            value=m.bytes_downloaded,
        )
        yield _labelled_counter(
            "retries", "Failed attempts that were retried, by error type.", m.retries
        )
        yield _labelled_counter(
            "task_failures", "Tasks that ended failed, by error type.", m.failures
        )
        yield CounterMetricFamily(
            _PREFIX + "events_published", "Events published on the bus.", value=m.bus.published
        )
        yield CounterMetricFamily(
            _PREFIX + "events_persisted",
            "Events written to SQLite before publication.",
            value=m.bus.persisted,
        )
        yield GaugeMetricFamily(
            _PREFIX + "sqlite_last_write_seconds",
            "Seconds from the last SQLite write's request to its commit.",
            value=m.store.last_write_seconds,
        )
        if m.loop_lag is not None:
            yield GaugeMetricFamily(
                _PREFIX + "event_loop_lag_seconds",
                "Worst event-loop lag over the last minute.",
                value=m.loop_lag.worst_recent_seconds(),
            )
            yield GaugeMetricFamily(
                _PREFIX + "event_loop_lag_max_seconds",
                "Worst event-loop lag since start.",
                value=m.loop_lag.worst_seconds,
            )
        if m.sockets is not None:
            yield GaugeMetricFamily(
                _PREFIX + "websocket_connections",
                "Open WebSocket connections.",
                value=m.sockets.connections,
            )
            yield CounterMetricFamily(
                _PREFIX + "websocket_frames_sent",
                "Frames sent to WebSocket clients.",
                value=m.sockets.frames_sent,
            )
            yield CounterMetricFamily(
                _PREFIX + "websocket_frames_dropped",
                "Progress frames replaced by newer ones because a client read too slowly.",
                value=m.sockets.frames_dropped,
            )


def _labelled_counter(name: str, documentation: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(_PREFIX + name, documentation, labels=["error_type"])
    for error_type, count in sorted(counts.items()):
        family.add_metric([error_type], count)
    return family
