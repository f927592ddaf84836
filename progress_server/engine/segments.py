"""The plan of one download: which byte ranges it is cut into, who fetches each, how far.

Pure bookkeeping, no I/O. The segments always tile `[0, total)` in order. Each one knows
how far its bytes were received (`pos`) and how far they reached the `.part` file
(`written`); a connection owns at most one segment at a time. Work stealing is aria2's:
a connection that runs out of work takes an unowned segment if there is one, else cuts the
largest remaining one in two at the midpoint of what is left, as long as both halves stay
at least `min_size`; the owner of the cut segment simply stops earlier.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Segment:
    start: int
    # Exclusive; None while the total is unknown (a body without Content-Length).
    end: int | None
    pos: int
    written: int
    owner: int | None = None

    @property
    def remaining(self) -> int | None:
        return None if self.end is None else self.end - self.pos

    @property
    def finished(self) -> bool:
        return self.end is not None and self.pos >= self.end


# (start, end, written): what a journal keeps of each segment.
Span = tuple[int, int, int]


class SegmentPlan:
    def __init__(self, total: int | None, segments: list[Segment], min_size: int) -> None:
        self.total = total
        self.segments = segments
        self.min_size = max(1, min_size)

    @classmethod
    def single(cls, total: int | None, min_size: int, kept: int = 0) -> SegmentPlan:
        """One segment over the whole file, its first `kept` bytes already on disk."""
        return cls(total, [Segment(0, total, kept, kept)], min_size)

    @classmethod
    def restore(cls, total: int, spans: Iterable[Span], min_size: int) -> SegmentPlan | None:
        """The plan a journal describes, or None when the spans do not tile `[0, total)`."""
        segments: list[Segment] = []
        expected = 0
        for start, end, written in spans:
            if start != expected or not start <= written <= end or end <= start:
                return None
            segments.append(Segment(start, end, written, written))
            expected = end
        if expected != total or not segments:
            return None
        return cls(total, segments, min_size)

    # -- reading -------------------------------------------------------------------------

    @property
    def received(self) -> int:
        return sum(s.pos - s.start for s in self.segments)

    @property
    def complete(self) -> bool:
        return all(s.finished for s in self.segments)

    def spans(self) -> tuple[Span, ...]:
        """(start, end, written) of every segment; the total must be known."""
        spans = []
        for s in self.segments:
            assert s.end is not None
            spans.append((s.start, s.end, s.written))
        return tuple(spans)

    def layout(self) -> list[list[int]]:
        """What a multi-part progress bar draws: `[start, end, done]` of each segment, `done`
        the bytes of it received so far. Neighbouring finished segments read as one, so the
        list stays short however often work was stolen."""
        shown: list[list[int]] = []
        for s in self.segments:
            if s.end is None:
                continue
            done = s.pos - s.start
            last = shown[-1] if shown else None
            if last and s.finished and last[2] == last[1] - last[0] and last[1] == s.start:
                last[1] = s.end
                last[2] += done
            else:
                shown.append([s.start, s.end, done])
        return shown

    def written_prefix(self) -> int:
        """How many bytes from offset 0 on are written without a gap."""
        frontier = 0
        for s in self.segments:
            frontier = s.written
            if s.end is None or s.written < s.end:
                break
        return frontier

    def unfinished(self) -> list[Segment]:
        return [s for s in self.segments if not s.finished]

    def next_after(self, segment: Segment) -> Segment | None:
        index = self.segments.index(segment)
        return self.segments[index + 1] if index + 1 < len(self.segments) else None

    # -- changing ------------------------------------------------------------------------

    def split(self, segment: Segment, pieces: int) -> list[Segment]:
        """Cut what `segment` has left into up to `pieces` equal parts of at least
        `min_size`; `segment` keeps the first, the others are returned unowned."""
        remaining = segment.remaining
        if remaining is None or pieces < 2:
            return []
        count = min(pieces, remaining // self.min_size)
        if count < 2:
            return []
        size = remaining // count
        assert segment.end is not None
        bounds = [segment.pos + i * size for i in range(count)] + [segment.end]
        segment.end = bounds[1]
        added = [Segment(a, b, a, a) for a, b in itertools.pairwise(bounds[1:])]
        for new in added:
            self._insert(new)
        return added

    def unsplit(self, segment: Segment, added: list[Segment]) -> None:
        """Undo `split`: `segment` covers again what `added` (still unstarted) took."""
        for new in added:
            self.segments.remove(new)
        segment.end = added[-1].end

    def claim(self, owner: int) -> Segment | None:
        """The first unfinished segment nobody fetches, now `owner`'s."""
        for s in self.segments:
            if s.owner is None and not s.finished:
                s.owner = owner
                return s
        return None

    def steal(self, owner: int) -> Segment | None:
        """Cut the largest remaining segment at the midpoint of what it has left; the back
        half becomes `owner`'s. None when no cut leaves both halves at least `min_size`."""
        candidates = [s for s in self.segments if s.remaining is not None and not s.finished]
        if not candidates:
            return None
        victim = max(candidates, key=lambda s: s.remaining or 0)
        assert victim.end is not None
        middle = victim.pos + (victim.end - victim.pos) // 2
        if middle - victim.pos < self.min_size or victim.end - middle < self.min_size:
            return None
        new = Segment(middle, victim.end, middle, middle, owner)
        victim.end = middle
        self._insert(new)
        return new

    def absorb_next(self, segment: Segment) -> bool:
        """Grow `segment` over the next one when nobody has started that one: a connection
        whose response runs on past its segment can simply keep reading."""
        following = self.next_after(segment)
        if following is None or following.owner is not None or following.pos != following.start:
            return False
        segment.end = following.end
        self.segments.remove(following)
        return True

    def release(self, segment: Segment) -> None:
        segment.owner = None

    def end_unknown_total(self, segment: Segment) -> None:
        """A body of unknown length ended: what arrived is the whole file."""
        segment.end = segment.pos
        self.total = segment.pos

    def _insert(self, segment: Segment) -> None:
        starts = [s.start for s in self.segments]
        self.segments.insert(bisect.bisect_left(starts, segment.start), segment)
