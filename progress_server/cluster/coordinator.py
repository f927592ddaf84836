"""ClusterCoordinator: which tasks this node runs, claimed from the queue every node shares,
and the lease and fenced writes of each run.

The node claims work when woken (a task was queued or a slot freed, here or on another node,
as the event feed tells) and on a one-second tick (a dead node's lease runs out silently),
up to its own --max-concurrent; the claim query keeps --max-per-host across the cluster. A
heartbeat renews the leases every third of --lease-timeout. A run whose lease is lost (the
renewal says so, a fenced write fails, a user's action elsewhere ended it, the task was
deleted) is stopped at once and writes nothing more; one whose lease ran out by this node's
own clock (a freeze, an unreachable database) stops before its next write. While the
database is unreachable /healthz answers 503 and the node claims nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, TypeVar

from progress_server import transitions
from progress_server.cluster.actions import take_over
from progress_server.cluster.buslog import ClusterLog
from progress_server.cluster.claims import TaskLeases
from progress_server.coordination import Launcher, LeaseLost, RunLease, StoreWrites, TaskWrites
from progress_server.errors import Conflict
from progress_server.events import EventBus
from progress_server.models import Event, EventName, Task, TaskState
from progress_server.settings import Settings
from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_rows import DATABASE_ERRORS
from progress_server.store.rows import TaskChange

if TYPE_CHECKING:
    from progress_server.runner import TaskRun

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIM_TICK_SECONDS = 1.0
HEALTH_CHECK_SECONDS = 1.0
# Events after which a claim may succeed that could not before: work was queued, or a task
# stopped holding a transfer slot somewhere in the cluster.
_FREES_CAPACITY = frozenset(TaskState) - {TaskState.PENDING, TaskState.DOWNLOADING}
_CHANGES_STATE = frozenset(EventName) - {EventName.PROGRESS, EventName.HOOK}
# Events only a user's action writes: the node running the task must stop its run.
_ENDS_A_RUN = frozenset({EventName.CANCELLED, EventName.PAUSED})


class ClusterRunLease:
    """One run's claim on its task: the epoch its writes are fenced by, and the moment (by
    this node's monotonic clock, which runs on through a freeze) its lease runs out."""

    def __init__(self, leases: TaskLeases, task_id: str, epoch: int, deadline: float) -> None:
        self._leases = leases
        self.task_id = task_id
        self.epoch = epoch
        self.deadline = deadline
        self.lost = False

    def check(self) -> None:
        if self.lost or time.monotonic() >= self.deadline:
            raise LeaseLost(self.task_id)

    async def confirm(self) -> None:
        self.check()
        await self._fenced(self._leases.confirm(self.task_id, self.epoch))
        self.check()

    async def write(
        self, change: TaskChange, draft: Event | None = None, *, release: bool = False
    ) -> Event | None:
        self.check()
        return await self._fenced(
            self._leases.write(self.task_id, self.epoch, change, draft, release=release)
        )

    async def _fenced(self, write: Awaitable[T]) -> T:
        try:
            return await write
        except LeaseLost:
            self.lost = True
            raise
        except DATABASE_ERRORS as exc:
            # Whether it was stored is unknown, and a write must not be told twice: the run
            # stops here, and once its lease runs out the task is claimed again and goes on
            # from its `.part` file (a stored end is not claimed again).
            log.warning(
                "task %s: database unreachable (%s); the run stops, the task goes on once"
                " its lease runs out",
                self.task_id,
                exc,
            )
            self.lost = True
            raise LeaseLost(self.task_id) from exc


class ClusterWrites(StoreWrites[PostgresStore]):
    """Task writes in a cluster: a run's fenced by its lease, a user's action guarded by
    the transition table (it takes the task over from whichever node runs it)."""

    async def transition(
        self, task: Task, draft: Event, change: TaskChange, lease: RunLease | None
    ) -> Event:
        state = change.state
        assert isinstance(state, TaskState), "a transition names its state"
        if isinstance(lease, ClusterRunLease):
            # A run lets go of its task in the write that ends it.
            stored = await lease.write(change, draft, release=state.is_final)
            assert stored is not None
            return stored
        allowed = [s for s in TaskState if transitions.may_follow(s, state)]
        taken = await take_over(self._store, task.task_id, allowed, change, draft)
        if taken is None:
            now = await self._store.get_task(task.task_id)
            shown = "gone" if now is None else now.state.value
            raise Conflict(f"the task changed meanwhile and is {shown} now")
        return taken

    async def update(self, task: Task, change: TaskChange, lease: RunLease | None) -> None:
        if isinstance(lease, ClusterRunLease):
            await lease.write(change)
        else:
            await self._store.update_task(task.task_id, change)


class ClusterCoordinator:
    def __init__(
        self,
        settings: Settings,
        store: PostgresStore,
        bus: EventBus,
        log_: ClusterLog,
        node_id: str,
    ) -> None:
        self._settings = settings
        self._store = store
        self._bus = bus
        self._log = log_
        self.node_id = node_id
        self._leases = TaskLeases(store, node_id, settings.lease_timeout)
        self._writes = ClusterWrites(store)
        self._launcher: Launcher | None = None
        self._held: dict[str, ClusterRunLease] = {}
        self._wake = asyncio.Event()
        self._jobs: list[asyncio.Task[None]] = []
        self._reachable = True

    @property
    def writes(self) -> TaskWrites:
        return self._writes

    @property
    def database_reachable(self) -> bool:
        return self._reachable

    def health_fields(self) -> dict[str, str]:
        return {
            "node": self.node_id,
            "database": "ok" if self._reachable else "unreachable",
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, launcher: Launcher, unfinished: Sequence[Task]) -> None:
        # `unfinished` is left alone: a task another node runs is its node's until its
        # lease runs out, and then the claims hand it to someone.
        self._launcher = launcher
        self._bus.subscribe(self._on_event)
        self._log.watch_deletions(self._known_tasks, self._task_deleted)
        self._jobs = [
            asyncio.create_task(self._claim_forever(), name="cluster-claims"),
            asyncio.create_task(self._heartbeat_forever(), name="cluster-heartbeat"),
            asyncio.create_task(self._watch_database(), name="cluster-health"),
        ]

    async def stop(self, stopped: Sequence[TaskRun]) -> None:
        for job in self._jobs:
            job.cancel()
        for job in self._jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        ours = [(run, lease) for run in stopped if (lease := _live_lease(run)) is not None]
        try:
            await self._leases.save_snapshots(
                (run.snapshot_row(), lease.epoch)
                for run, lease in ours
                if run.task.state is TaskState.DOWNLOADING
            )
            # Given back, not left to run out: another node may go on at once.
            await self._leases.release({lease.task_id: lease.epoch for _, lease in ours})
        except DATABASE_ERRORS as exc:
            log.warning("could not give back this node's tasks (%s); their leases run out", exc)

    # -- the Coordinator's queue -----------------------------------------------------------

    def queue(self, task: Task) -> None:
        self.wake()

    def unqueue(self, task_id: str) -> Task | None:
        return None

    def queued(self, task_id: str) -> Task | None:
        return None

    def wake(self) -> None:
        self._wake.set()

    def slot_freed(self, run: TaskRun) -> None:
        self.wake()

    def run_ended(self, run: TaskRun) -> None:
        if self._held.get(run.task.task_id) is run.lease:
            del self._held[run.task.task_id]
        self.wake()

    async def save_snapshots(self, runs: Sequence[TaskRun]) -> None:
        rows = [
            (run.snapshot_row(), lease.epoch)
            for run in runs
            if (lease := _live_lease(run)) is not None
        ]
        try:
            lost = await self._leases.save_snapshots(rows)
        except DATABASE_ERRORS as exc:
            log.warning("could not save progress snapshots: %s", exc)
            return
        for task_id in lost:
            self._lose(task_id)

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        # A transaction-scoped advisory lock: released with the transaction, however the
        # holder ends, even if its node dies.
        async with self._store.pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", name)
            yield

    # -- claims, heartbeat, health ---------------------------------------------------------

    async def _claim_forever(self) -> None:
        while True:
            ticked = False
            try:
                async with asyncio.timeout(CLAIM_TICK_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                ticked = True
            self._wake.clear()
            launcher = self._launcher
            if launcher is None or not launcher.accepting or not self._reachable:
                continue
            full = launcher.active_downloads >= self._settings.max_concurrent
            if full and not ticked:
                # Every event of the cluster wakes this loop; with no free slot only an
                # orphaned processing task could be claimed, and the tick looks for those.
                continue
            try:
                await self._claim_what_fits(launcher)
            except DATABASE_ERRORS as exc:
                log.warning("could not claim work: %s", exc)
            except Exception:  # the loop must outlive any one failure
                log.exception("claiming work failed")

    async def _claim_what_fits(self, launcher: Launcher) -> None:
        settings = self._settings
        while launcher.accepting:
            transfers = launcher.active_downloads < settings.max_concurrent
            sent = time.monotonic()
            claim = await self._leases.claim_next(settings.max_per_host, transfers=transfers)
            if claim is None:
                return
            task_id = claim.task.task_id
            lease = ClusterRunLease(
                self._leases, task_id, claim.epoch, sent + settings.lease_timeout
            )
            self._held[task_id] = lease
            log.debug("task %s claimed at epoch %d", task_id, claim.epoch)
            launcher.launch(claim.task, lease)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_timeout / 3)
            held = {task_id: lease for task_id, lease in self._held.items() if not lease.lost}
            if not held:
                continue
            sent = time.monotonic()
            try:
                lost = await self._leases.renew({t: lease.epoch for t, lease in held.items()})
            except DATABASE_ERRORS as exc:
                log.warning("could not renew leases: %s", exc)
                continue
            except Exception:  # the loop must outlive any one failure
                log.exception("renewing leases failed")
                continue
            for task_id, lease in held.items():
                if task_id in lost:
                    self._lose(task_id)
                else:
                    lease.deadline = sent + self._settings.lease_timeout

    async def _watch_database(self) -> None:
        while True:
            try:
                async with asyncio.timeout(max(HEALTH_CHECK_SECONDS * 2, 2.0)):
                    await self._store.pool.fetchval("SELECT 1")
                reachable = True
            except Exception:  # whatever stops a "SELECT 1" means: not reachable
                reachable = False
            if reachable != self._reachable:
                self._reachable = reachable
                if reachable:
                    log.info("database reachable again; claiming work")
                    self.wake()
                else:
                    log.warning("database unreachable; claiming no work until it answers")
            await asyncio.sleep(HEALTH_CHECK_SECONDS)

    # -- runs this node lost -------------------------------------------------------------

    def _lose(self, task_id: str) -> None:
        """The task is no longer this node's: its run stops and writes nothing more."""
        lease = self._held.get(task_id)
        if lease is None or lease.lost:
            return
        lease.lost = True
        self._abandon(task_id)

    def _abandon(self, task_id: str) -> None:
        if self._launcher is not None:
            job = asyncio.create_task(self._launcher.abandon(task_id), name=f"abandon-{task_id}")
            self._jobs.append(job)
            job.add_done_callback(self._forget_job)

    def _forget_job(self, job: asyncio.Task[None]) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def _on_event(self, event: Event) -> None:
        if event.name in _ENDS_A_RUN and event.task_id in self._held:
            # A user's action on another node ended the run (its write already fenced this
            # run's writes off in the database). The run stops; the bytes it holds still go
            # to its part file, as when the task is paused on this node: nobody else runs
            # the task until it is resumed.
            self._abandon(event.task_id)
        if event.name is EventName.QUEUED or (
            event.name in _CHANGES_STATE
            and not event.is_progress
            and event.state in _FREES_CAPACITY
        ):
            self.wake()

    def _known_tasks(self) -> set[str]:
        return {snapshot.task_id for snapshot in self._bus.snapshots.values()}

    def _task_deleted(self, task_id: str) -> None:
        self._bus.snapshots.remove(task_id)
        self._lose(task_id)


def _live_lease(run: TaskRun) -> ClusterRunLease | None:
    lease = run.lease
    return lease if isinstance(lease, ClusterRunLease) and not lease.lost else None
