"""The cluster's event log: one `seq` for every node, strictly increasing in commit order.

A plain sequence hands numbers out in call order: if a transaction takes seq 7 and commits
after another took 8 and committed, a reader asking for `seq > 6` between the two commits
gets 8, moves on, and never sees 7. Here each append takes its seq by updating the one row
of `event_seq` inside the transaction that stores the event. The row lock queues appends,
so the next seq is only handed out once the previous one committed (or rolled back, giving
its number back): seq order is commit order, and `seq > last` never skips an event.

Lock order, to keep appends free of deadlocks: a transaction changes its task row first and
the counter last, just before COMMIT, which also keeps the counter locked only briefly.

Every append NOTIFYs its seq (delivered when the transaction commits, in commit order): a
wake-up for the nodes, never the data, which they read from `events`. Progress events are
not stored one by one (as on SQLite); they take a seq from the same counter and travel in
their NOTIFY payload, so other nodes can relay them live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from progress_server.models import Event, EventName, Progress, TaskState

if TYPE_CHECKING:
    import asyncpg

    from progress_server.store.postgres import Connection

# NOTIFY channels. EVENTS carries the seq of a stored event; PROGRESS a whole progress event.
EVENTS_CHANNEL = "progress_server_events"
PROGRESS_CHANNEL = "progress_server_progress"

# PostgreSQL drops a NOTIFY payload over 8000 bytes with an error; a progress event is a
# few hundred, so only a runaway body could reach this, and it is refused before sending.
MAX_PAYLOAD_BYTES = 7900

# One statement: the counter, the row and the wake-up, so the counter's row lock is held
# for one round trip plus the COMMIT.
_APPEND = """
WITH next AS (
    UPDATE event_seq SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq
), stored AS (
    INSERT INTO events (seq, task_id, owner_key_id, event, state, body, created_at)
    SELECT last_seq, $1, $2, $3, $4, $5::json, $6 FROM next
    RETURNING seq
)
SELECT seq, pg_notify($7, seq::text) FROM stored
"""

_NEXT_PROGRESS = """
WITH next AS (
    UPDATE event_seq SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq
)
SELECT last_seq, pg_notify($1, last_seq::text || ' ' || $2) FROM next
"""


async def append_event(db: Connection, draft: Event) -> Event:
    """Store `draft` under the next seq, inside the caller's transaction; the caller's
    last statement before COMMIT. Returns the event with its seq (`draft.seq` is ignored)."""
    seq = await db.fetchval(
        _APPEND,
        draft.task_id,
        draft.owner_key_id,
        str(draft.name),
        str(draft.state),
        json.dumps(draft.body),
        draft.timestamp,
        EVENTS_CHANNEL,
    )
    return replace(draft, seq=int(seq))


async def append(pool: asyncpg.Pool[asyncpg.Record], draft: Event) -> Event:
    """Store one event on its own (no task change goes with it)."""
    async with pool.acquire() as db, db.transaction():
        return await append_event(db, draft)


@dataclass(frozen=True)
class RelayedProgress:
    """A progress event as another node relays it: the event and the figures behind it."""

    event: Event
    progress: Progress


async def publish_progress(
    pool: asyncpg.Pool[asyncpg.Record], draft: Event, progress: Progress
) -> Event:
    """Give a progress event the next seq and send it to every node, without storing it."""
    payload = _progress_payload(draft, progress)
    async with pool.acquire() as db:
        seq = await db.fetchval(_NEXT_PROGRESS, PROGRESS_CHANNEL, payload)
    return replace(draft, seq=int(seq))


def _progress_payload(draft: Event, progress: Progress) -> str:
    # The seq is not known yet: the statement puts it in front ("<seq> <json>").
    payload = json.dumps(
        {
            "task_id": draft.task_id,
            "owner_key_id": draft.owner_key_id,
            "event": str(draft.name),
            "state": str(draft.state),
            "timestamp": draft.timestamp,
            "body": draft.body,
            "downloaded_bytes": progress.downloaded_bytes,
            "total_bytes": progress.total_bytes,
            "speed_bps": progress.speed_bps,
        },
        separators=(",", ":"),
    )
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"progress event for {draft.task_id} too large to relay")
    return payload


def parse_progress(payload: str) -> RelayedProgress:
    """The inverse of what publish_progress sends: `<seq> <json>`."""
    seq_text, _, body = payload.partition(" ")
    data = json.loads(body)
    event = Event(
        seq=int(seq_text),
        name=EventName(data["event"]),
        task_id=data["task_id"],
        owner_key_id=data["owner_key_id"],
        state=TaskState(data["state"]),
        timestamp=data["timestamp"],
        body=data["body"],
    )
    progress = Progress(data["downloaded_bytes"], data["total_bytes"], data["speed_bps"])
    return RelayedProgress(event, progress)
