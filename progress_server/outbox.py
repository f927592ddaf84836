"""One WebSocket's own bounded, ordered queue of outgoing frames.

It holds what the socket must send before the live events it has not read yet from the
shared log (progress_server/fanout.py): answers to the client's actions, replay markers,
and, once the socket lags too far behind the log, the events it missed. Nothing that puts
a frame in ever waits; the socket's sender task takes them out. Memory is bounded by
`limit` frames whatever the client does:

- A progress frame replaces the task's progress frame still waiting in the queue (the
  newest progress per task is all a late reader needs), and moves to the end, so frames
  always leave in `seq` order: a client may resume from the last `seq` it saw.
- A lifecycle frame (or any other) is never replaced or dropped. It also seals the task's
  waiting progress frame, so a progress frame queued before `download.completed` (the
  100 % one) still goes out before it.
- When a frame that needs a new slot does not fit, `put` answers False: the caller closes
  the socket (1013) and the client comes back with `after_seq`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

# A batch stretching over more events than this is from a reader that fell behind: only the
# newest progress per task goes out (`coalesced`), so a late batch stays small.
COALESCE_OVER = 64


@dataclass(frozen=True, slots=True)
class Frame:
    """An outgoing text frame (UTF-8 JSON), encoded once and shared by every socket that sends it.

    `owner` is the owning key of an event's task; `progress` frames may be coalesced per
    `task_id`; `action` frames are not sent but run, in order, by the
    sender when it reaches them (a replay, a switch of mode).
    """

    data: bytes = b""
    seq: int = 0
    task_id: str | None = None
    owner: int = 0
    progress: bool = False
    action: Callable[[], object] | None = None


class Outbox:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        # A dict keeps insertion order; deleting a key and inserting a new one moves a
        # frame to the end in O(1).
        self._frames: dict[int, Frame] = {}
        self._open_progress: dict[str, int] = {}
        self._keys = itertools.count()
        # Progress frames replaced by a newer one of the same task before being sent (metrics).
        self.superseded = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: Frame) -> bool:
        """Queue a frame; False when it does not fit (nothing is queued then)."""
        task_id = frame.task_id
        if frame.progress and task_id is not None:
            waiting = self._open_progress.get(task_id)
            if waiting is not None:
                del self._frames[waiting]
                self.superseded += 1
            elif len(self._frames) >= self.limit:
                return False
            key = next(self._keys)
            self._open_progress[task_id] = key
        else:
            if len(self._frames) >= self.limit:
                return False
            if task_id is not None:
                self._open_progress.pop(task_id, None)
            key = next(self._keys)
        self._frames[key] = frame
        return True

    def take_all(self) -> list[Frame]:
        frames = list(self._frames.values())
        self._frames.clear()
        self._open_progress.clear()
        return frames

    def clear(self) -> None:
        self.take_all()


def coalesced(frames: list[Frame]) -> list[Frame]:
    """The frames with each task's superseded progress left out, by the rules of the
    Outbox: a progress frame is dropped when a newer one of its task follows with no other
    frame of that task in between. Order is kept."""
    kept: list[Frame] = []
    newer_progress: set[str | None] = set()
    for frame in reversed(frames):
        if frame.progress:
            if frame.task_id in newer_progress:
                continue
            newer_progress.add(frame.task_id)
        else:
            newer_progress.discard(frame.task_id)
        kept.append(frame)
    kept.reverse()
    return kept
