"""CombinedProgress: the bytes of every requested format of one media as one transfer.

yt-dlp downloads "bv*+ba" as two files one after the other, each reporting its own bytes
and total, and its totals are often estimates that grow as fragments arrive. Shown as is,
the bar would fall back to zero when the audio starts and wobble with every estimate (a
classic youtube-dl complaint). Here the parts are added up, parts not started yet count
with their expected size, and the reported total is held back just enough that the
percentage never decreases; at the end it is the exact sum of the bytes on disk.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PartSize:
    """What is known of one requested format before its download starts."""

    size: int | None = None  # filesize, else filesize_approx
    tbr: float | None = None  # total bitrate (kbit/s), to guess a size from a sibling's


@dataclass
class _Part:
    expected: PartSize
    downloaded: int = 0
    total: int | None = None
    started: bool = False
    done: bool = False


class CombinedProgress:
    def __init__(self, parts: list[PartSize], floor: float = 0.0) -> None:
        """`floor`: the fraction an earlier run of the same media already showed, so a
        resumed run goes on from there instead of from its own first estimate."""
        self._parts = [_Part(p) for p in parts] or [_Part(PartSize())]
        self.downloaded = 0
        self.total: int | None = None
        self._fraction = min(1.0, max(0.0, floor))

    @property
    def fraction(self) -> float:
        """The highest downloaded/total shown so far (0 to 1)."""
        return self._fraction

    @property
    def percentage(self) -> float | None:
        if self.total is None:
            return None
        return 100.0 if self.total <= 0 else min(100.0, 100.0 * self.downloaded / self.total)

    def update(
        self, part: int, downloaded: int, total: int | None, *, finished: bool = False
    ) -> bool:
        """One progress report of part `part`; True when the combined figures changed."""
        if not 0 <= part < len(self._parts):
            part = len(self._parts) - 1
        current = self._parts[part]
        current.started = True
        current.downloaded = max(0, downloaded)
        if total is not None and total > 0:
            current.total = total
        if finished:
            current.done = True
            current.total = current.downloaded
        # A part that starts is proof the ones before it are done (yt-dlp runs them in order).
        for earlier in self._parts[:part]:
            if earlier.started and not earlier.done:
                earlier.done = True
                earlier.total = earlier.downloaded
        return self._recompute()

    def _recompute(self) -> bool:
        before = (self.downloaded, self.total)
        self.downloaded = max(self.downloaded, sum(p.downloaded for p in self._parts))
        raw = self._raw_total()
        if raw is None:
            # Unknown after known: keep the last total rather than flip back to "unknown".
            total = None if self.total is None else max(self.total, self.downloaded)
        else:
            total = max(raw, self.downloaded)
            if total and self.downloaded / total < self._fraction:
                # Held back so downloaded/total stays at the fraction already shown.
                total = max(self.downloaded, int(self.downloaded / self._fraction))
        self.total = total
        if total:
            self._fraction = max(self._fraction, min(1.0, self.downloaded / total))
        return (self.downloaded, self.total) != before

    def _raw_total(self) -> int | None:
        sizes: list[int | None] = []
        for part in self._parts:
            if part.done:
                sizes.append(part.downloaded)
            elif part.started and part.total is not None:
                sizes.append(part.total)
            else:
                sizes.append(part.expected.size or self._guess(part))
        if any(size is None for size in sizes):
            return None
        return sum(size for size in sizes if size is not None)

    def _guess(self, part: _Part) -> int | None:
        """A size from a sibling's known size scaled by the bitrates, when both are known."""
        if not part.expected.tbr:
            return None
        for other in self._parts:
            known = other.total if other.started else other.expected.size
            if other is not part and known and other.expected.tbr:
                return int(known * part.expected.tbr / other.expected.tbr)
        return None
