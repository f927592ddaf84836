"""Hooks: the operator's command and webhook, run when a task completes or finally fails.

Hooks listen on the event bus, so they hear of an outcome only after it is stored and
announced: they can never delay the completion event, and each delivery runs as its own
background task, so a slow receiver never holds up the next download. What came of each
delivery is stored as a `download.hook` event in the task's history; the task's state is
never touched, so a failing hook never fails a download.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from progress_server.events import EventBus
from progress_server.models import Event, EventName, TaskState
from progress_server.notifications.command import hook_environment, run_command
from progress_server.notifications.hookresult import HookOutcome
from progress_server.notifications.webhook import WebhookSender
from progress_server.settings import Settings
from progress_server.store import Store

log = logging.getLogger(__name__)

# Commands running at once: a burst of completions must not become a burst of processes.
MAX_COMMANDS = 4


def is_final_outcome(event: Event) -> bool:
    # A retried attempt is download.retrying; download.error is the end. The state check also
    # keeps out a history's older retryable download.error (sent with state downloading).
    return event.name is EventName.COMPLETED or (
        event.name is EventName.ERROR and event.state is TaskState.FAILED
    )


def _program_anchored(argv: tuple[str, ...]) -> tuple[str, ...]:
    """A relative program path ("./notify.sh") made absolute against the server's working
    directory: commands run in the downloads folder, where it would not be found."""
    if argv and "/" in argv[0]:
        return (str(Path(argv[0]).absolute()), *argv[1:])
    return argv


class Hooks:
    def __init__(self, settings: Settings, store: Store, bus: EventBus) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.command = _program_anchored(settings.on_complete)
        self.webhook = (
            WebhookSender(
                settings.webhook_url,
                settings.webhook_secret,
                settings.hook_timeout,
                settings.retry_base_delay,
                settings.retry_max_delay,
            )
            if settings.webhook_url
            else None
        )
        self._jobs: set[asyncio.Task[None]] = set()
        self._command_slots = asyncio.Semaphore(MAX_COMMANDS)
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        if not self.command and self.webhook is None:
            return
        if self.command and shutil.which(self.command[0]) is None:
            log.warning("--on-complete: %s is not an executable on PATH", self.command[0])
        if self.webhook is not None:
            if not self.settings.webhook_secret:
                log.warning("--webhook without --webhook-secret: deliveries are not signed")
            await self.webhook.start()
        # Own events only: in a cluster, the node that ran the task runs its hooks, once.
        self._unsubscribe = self.bus.subscribe_own(self._on_event)

    async def stop(self) -> None:
        """Stop listening; deliveries still running are abandoned (and their commands killed)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if self.webhook is not None:
            await self.webhook.close()

    def _on_event(self, event: Event) -> None:
        if not is_final_outcome(event):
            return
        if self.command:
            self._spawn(self._run_command(event), event, "command")
        if self.webhook is not None:
            self._spawn(self.webhook.send(event), event, "webhook")

    def _spawn(
        self,
        delivery: Awaitable[HookOutcome],
        event: Event,
        kind: Literal["command", "webhook"],
    ) -> None:
        job = asyncio.create_task(
            self._deliver(delivery, event, kind), name=f"hook-{kind}-{event.seq}"
        )
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _run_command(self, event: Event) -> HookOutcome:
        task = await self.store.get_task(event.task_id)
        downloads = self.settings.downloads_dir
        env = hook_environment(event, task, downloads)
        async with self._command_slots:
            return await run_command(self.command, env, downloads, self.settings.hook_timeout)

    async def _deliver(
        self, delivery: Awaitable[HookOutcome], event: Event, kind: Literal["command", "webhook"]
    ) -> None:
        try:
            outcome = await delivery
        except Exception as exc:
            log.exception("hook for task %s crashed", event.task_id)
            outcome = HookOutcome(kind, False, 1, f"internal error: {type(exc).__name__}")
        level = logging.INFO if outcome.ok else logging.WARNING
        log.log(
            level,
            "task %s %s hook %s after %d attempt(s): %s",
            event.task_id,
            outcome.kind,
            "delivered" if outcome.ok else "failed",
            outcome.attempts,
            outcome.message,
        )
        await self._record(event, outcome)

    async def _record(self, source: Event, outcome: HookOutcome) -> None:
        snapshot = self.bus.snapshots.get(source.task_id)
        if snapshot is None:
            return  # the task was deleted meanwhile; there is no history to add to
        # The task's current state, not the source event's: it may have been retried since.
        await self.bus.publish(
            EventName.HOOK,
            source.task_id,
            source.owner_key_id,
            snapshot.state,
            {"hook": {**outcome.to_wire(), "for_seq": source.seq}},
            persist=self.store.insert_event,
        )
