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
not stored one by one (as on SQLite); they take seqs from the same counter, a batch at a
time, and travel in their NOTIFY payload, so other nodes can relay them live.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import asyncpg

from progress_server.models import Event, EventName, Progress, TaskState

if TYPE_CHECKING:
    from progress_server.store.postgres_rows import Connection

# NOTIFY channels. EVENTS carries the seq of a stored event; PROGRESS a whole progress event.
EVENTS_CHANNEL = "progress_server_events"
PROGRESS_CHANNEL = "progress_server_progress"

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. A progress event is a few
# hundred, so a batch is split into chunks under this; a single event over it is refused.
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

# k seqs at once for a batch of progress events, and one notification carrying them all:
# "<first seq> <json array>", the i-th event's seq being first + i.
_NEXT_PROGRESS = """
WITH next AS (
    UPDATE event_seq SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq
)
SELECT last_seq, pg_notify($2, (last_seq - $1 + 1)::text || ' ' || $3) FROM next
"""


def _event_params(draft: Event) -> list[object]:
    return [
        draft.task_id,
        draft.owner_key_id,
        str(draft.name),
        str(draft.state),
        json.dumps(draft.body),
        draft.timestamp,
        EVENTS_CHANNEL,
    ]


async def append_event(db: Connection, draft: Event) -> Event:
    """Store `draft` under the next seq; in a transaction of the caller's, make it the last
    statement before COMMIT. Returns the event with its seq (`draft.seq` is ignored)."""
    seq = await db.fetchval(_APPEND, *_event_params(draft))
    return replace(draft, seq=int(seq))


async def append(pool: asyncpg.Pool[asyncpg.Record], draft: Event) -> Event:
    """Store one event on its own (no task change goes with it)."""
    # One statement in its own implicit transaction: the counter is locked only while the
    # server runs it and commits, never across a network round trip.
    async with pool.acquire() as db:
        return await append_event(db, draft)


@dataclass(frozen=True)
class GuardedAppend:
    """What append_guarded stored: the event with its seq, and the row the guard returned."""

    event: Event
    row: asyncpg.Record


async def append_guarded(
    db: Connection, guard: str, guard_params: Sequence[object], draft: Event
) -> GuardedAppend | None:
    """Run `guard` (an INSERT or UPDATE of one task, with RETURNING) and, only if it matched
    a row, store `draft` under the next seq: one statement, so one implicit transaction
    whose locks are held for no network round trip. Returns None if the guard matched
    nothing (and then nothing changed and no seq was taken).

    The guard's parameters are $1..$k; the counter is locked after the guard's row, the
    lock order every append keeps.
    """
    first = len(guard_params) + 1
    task_id, owner, name, state, body, at, channel = (f"${first + i}" for i in range(7))
    sql = f"""
WITH guard AS ({guard}),
next AS (
    UPDATE event_seq SET last_seq = last_seq + 1
    WHERE id = 1 AND EXISTS (SELECT 1 FROM guard) RETURNING last_seq
), stored AS (
    INSERT INTO events (seq, task_id, owner_key_id, event, state, body, created_at)
    SELECT last_seq, {task_id}, {owner}, {name}, {state}, {body}::json, {at} FROM next
    RETURNING seq
)
SELECT guard.*, stored.seq AS appended_seq, pg_notify({channel}, stored.seq::text)
FROM guard CROSS JOIN stored
"""
    row = await db.fetchrow(sql, *guard_params, *_event_params(draft))
    if row is None:
        return None
    return GuardedAppend(replace(draft, seq=int(row["appended_seq"])), row)


@dataclass(frozen=True)
class RelayedProgress:
    """A progress event as another node relays it: the event and the figures behind it."""

    event: Event
    progress: Progress


async def publish_progress(
    pool: asyncpg.Pool[asyncpg.Record], batch: Sequence[tuple[Event, Progress]]
) -> list[Event]:
    """Give progress events the next seqs and send them to every node, without storing
    them. A batch costs one commit per notification-sized chunk, not one per event: the
    counter row is shared by the whole cluster, and every commit on it queues the others."""
    sent: list[Event] = []
    for chunk in _chunks(batch):
        payload = json.dumps([_progress_item(d, p) for d, p in chunk], separators=(",", ":"))
        async with pool.acquire() as db:
            last = await db.fetchval(_NEXT_PROGRESS, len(chunk), PROGRESS_CHANNEL, payload)
        first = int(last) - len(chunk) + 1
        sent.extend(replace(draft, seq=first + i) for i, (draft, _) in enumerate(chunk))
    return sent


def _progress_item(draft: Event, progress: Progress) -> dict[str, object]:
    return {
        "task_id": draft.task_id,
        "owner_key_id": draft.owner_key_id,
        "event": str(draft.name),
        "state": str(draft.state),
        "timestamp": draft.timestamp,
        "body": draft.body,
        "downloaded_bytes": progress.downloaded_bytes,
        "total_bytes": progress.total_bytes,
        "speed_bps": progress.speed_bps,
    }


def _chunks(
    batch: Sequence[tuple[Event, Progress]],
) -> Iterator[Sequence[tuple[Event, Progress]]]:
    """Split a batch so each chunk's payload stays under PostgreSQL's NOTIFY limit."""
    chunk: list[tuple[Event, Progress]] = []
    size = 2  # the brackets of the JSON array
    for item in batch:
        item_size = len(json.dumps(_progress_item(*item), separators=(",", ":")).encode()) + 1
        if item_size + 2 > MAX_PAYLOAD_BYTES:
            raise ValueError(f"progress event for {item[0].task_id} too large to relay")
        if chunk and size + item_size > MAX_PAYLOAD_BYTES:
            yield chunk
            chunk, size = [], 2
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def parse_progress(payload: str) -> list[RelayedProgress]:
    """The inverse of what publish_progress sends: `<first seq> <json array>`."""
    first_text, _, body = payload.partition(" ")
    first = int(first_text)
    relayed = []
    for i, data in enumerate(json.loads(body)):
        event = Event(
            seq=first + i,
            name=EventName(data["event"]),
            task_id=data["task_id"],
            owner_key_id=data["owner_key_id"],
            state=TaskState(data["state"]),
            timestamp=data["timestamp"],
            body=data["body"],
        )
        progress = Progress(data["downloaded_bytes"], data["total_bytes"], data["speed_bps"])
        relayed.append(RelayedProgress(event, progress))
    return relayed
