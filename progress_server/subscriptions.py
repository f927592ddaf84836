"""What a socket is told when it subscribes: the current snapshot of what it follows and,
with `after_seq`, the persisted events it missed, read from the history page by page.

Answers to `subscribe`:
- a task: `{"event": "subscribed", "task_id", "state", "progress", "timestamp", "seq"}`,
  the task's current snapshot; `seq` is the last seq the snapshot accounts for. A failed
  task's carries the record's `error`, a completed one's its `result`.
- `"*"`: the same shape with `"state": null, "progress": null`, plus `"tasks"`: one
  `{task_id, state, progress, timestamp}` per unfinished task (pending, downloading,
  processing, paused) the key may see. Finished tasks are left out so the frame stays
  small on a server with a long history; their outcome is in the history.
- With `after_seq`, the replayed events come first and the `subscribed` frame follows
  them, so `seq` never goes backwards on the wire.

A subscription with `after_seq` puts a replay marker in the socket's outbox at the moment
it registers; when the sender reaches the marker it sends the persisted events in
`(after_seq, S]` from the history, where S is the bus's last seq at registration, and then
carries on with the hub's log, which from there on holds exactly the live events after S.
Every persisted event ≤ S is stored before registration (the bus persists before it counts
an event as published) and every event > S reaches the log afterwards, so the replay joins
the live stream with no gap and no duplicate, however many events arrive while it runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from progress_server.auth import Principal
from progress_server.events import EventBus
from progress_server.models import polling_wire
from progress_server.wsframes import event_frame

REPLAY_PAGE = 500

# What to read from the history for a subscription: the keyword filters of `bus.history`.
Scope = dict[str, Any]


def subscribed_answer(
    bus: EventBus, who: Principal, target: str, upto: int
) -> tuple[dict[str, Any], Scope] | None:
    """The `subscribed` answer for `target` as of seq `upto`, and the history scope a
    replay reads; None when `who` may not see such a task (or there is none)."""
    if target == "*":
        tasks = [
            polling_wire(s.task_id, s.state, s.progress, s.changed_at)
            for s in bus.snapshots.values()
            if who.may_see(s.owner_key_id) and not s.state.is_final
        ]
        answer = {
            "event": "subscribed",
            "task_id": "*",
            "state": None,
            "progress": None,
            "seq": upto,
            "tasks": tasks,
        }
        return answer, {"owner_key_id": who.owner_filter}
    snapshot = bus.snapshots.get(target)
    if snapshot is None or not who.may_see(snapshot.owner_key_id):
        return None
    wire = polling_wire(target, snapshot.state, snapshot.progress, snapshot.changed_at)
    answer = {"event": "subscribed", **wire, **snapshot.outcome, "seq": upto}
    return answer, {"task_ids": [target]}


async def replay(
    bus: EventBus,
    after_seq: int,
    upto: int,
    scope: Scope,
    send: Callable[[list[bytes]], Awaitable[None]],
) -> None:
    """Send the persisted events in `(after_seq, upto]` within `scope`, a page at a time."""
    after = after_seq
    while after < upto:
        events = await bus.history(after, limit=REPLAY_PAGE, **scope)
        await send([event_frame(e).data for e in events if e.seq <= upto])
        if len(events) < REPLAY_PAGE or events[-1].seq >= upto:
            return
        after = events[-1].seq
