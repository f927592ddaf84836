"""One connection of a download: a request for a byte range, and its body into the `.part`.

Redirects are followed here, one hop at a time, so the network policy sees every URL
before it is fetched. The body is read losslessly: when a connection breaks, aiohttp's
StreamReader raises the payload error *before* it hands out what it had already buffered
(up to twice `read_bufsize`), so after any read error the buffered bytes are taken out
directly (`salvage`) and written like the rest. The next request for that segment then
starts exactly where the bytes stopped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from progress_server.engine.errors import DownloadError
from progress_server.engine.headers import content_range, int_or_none, strong_etag
from progress_server.engine.partfile import BlockWriter, PartFile, PrefixHasher
from progress_server.engine.segments import Segment, SegmentPlan
from progress_server.engine.throttle import Throttle
from progress_server.models import ErrorType
from progress_server.netpolicy import NetworkPolicy

# A read at least this long found bytes already waiting (asyncio reads up to 256 KiB).
FULL_READ_BYTES = 128 * 1024
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


async def open_response(
    session: aiohttp.ClientSession, policy: NetworkPolicy, url: str | URL, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    """GET `url`, following at most MAX_REDIRECTS redirects, each hop checked first.
    The caller owns the response: it must release or close it."""
    try:
        current = URL(url)
    except ValueError as exc:
        raise DownloadError(ErrorType.INVALID_URL, f"invalid URL: {exc}") from exc
    for _ in range(MAX_REDIRECTS + 1):
        policy.check_url(current)
        response = await session.get(
            current, headers=headers, allow_redirects=False, auto_decompress=False
        )
        location = response.headers.get("Location")
        if response.status not in REDIRECT_STATUS or not location:
            return response
        response.release()
        try:
            current = current.join(URL(location))
        except ValueError as exc:
            raise DownloadError(
                ErrorType.INVALID_URL, "the origin redirected to an invalid URL"
            ) from exc
    raise DownloadError(
        ErrorType.HTTP_ERROR, f"more than {MAX_REDIRECTS} redirects (a redirect loop?)"
    )


@dataclass(frozen=True)
class Answer:
    """What a response's status and headers say about the file it carries."""

    status: int
    length: int | None
    etag: str | None
    last_modified: str | None
    # From Content-Range: first byte, last byte + 1, whole size.
    first: int | None
    stop: int | None
    total: int | None
    encoded: bool
    ranges_refused: bool

    @classmethod
    def of(cls, response: aiohttp.ClientResponse) -> Answer:
        headers = response.headers
        first, last, total = content_range(headers.get("Content-Range"))
        encoding = headers.get("Content-Encoding", "").strip().lower()
        return cls(
            status=response.status,
            length=int_or_none(headers.get("Content-Length")),
            etag=strong_etag(headers.get("ETag")),
            last_modified=headers.get("Last-Modified"),
            first=first,
            stop=None if last is None else last + 1,
            total=total,
            encoded=encoding not in ("", "identity"),
            ranges_refused=headers.get("Accept-Ranges", "").strip().lower() == "none",
        )

    @property
    def validator(self) -> str | None:
        """What If-Range must name to continue these bytes: the strong ETag, else the date."""
        return self.etag or self.last_modified

    def shown_range(self, response: aiohttp.ClientResponse) -> str:
        return response.headers.get("Content-Range") or "no Content-Range"


def salvage(content: aiohttp.StreamReader) -> bytes:
    """The bytes aiohttp had buffered when the connection broke. Its read methods raise the
    stored error first and would never hand these out; without them every drop would cost
    up to two read buffers, fetched again."""
    try:
        if not content._buffer:
            return b""
        return content._read_nowait(-1)
    except Exception:  # an aiohttp without these internals: lose the buffer, not the task
        return b""


async def _next_chunk(content: aiohttp.StreamReader, limit: int | None) -> bytes:
    """The next bytes of a body; b"" at its end. Unthrottled, one received buffer at a
    time: readany() would join everything buffered into one new bytes object, a copy of
    every byte that the vectored write does not need."""
    if limit:
        return await content.read(limit)
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if chunk or not end_of_http_chunk:
            return chunk


def _body_without_read_timeout(response: aiohttp.ClientResponse) -> None:
    """Stop aiohttp's per-read timer for the body: it re-arms a timer on every buffer
    received, and a stalled body is the watchdogs' job (stall and read timeouts). The
    headers were still waited for under the read timeout."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = None


class Connection:
    """Streams response bodies into segments of the `.part` file, one segment at a time."""

    def __init__(
        self,
        ident: int,
        part: PartFile,
        hasher: PrefixHasher,
        throttle: Throttle,
        on_bytes: Callable[[int], Awaitable[None]],
    ) -> None:
        self.ident = ident
        self.received = 0
        # Reads, and those that came back full: when most do, bytes were already waiting
        # for us (the origin is faster than we take them), and more connections would not
        # help. A connection the origin holds back returns what trickled in since.
        self.reads = 0
        self.full_reads = 0
        self.writer = BlockWriter(part, hasher)
        self._throttle = throttle
        self._on_bytes = on_bytes

    async def stream(
        self,
        response: aiohttp.ClientResponse,
        segment: Segment,
        plan: SegmentPlan,
        response_stop: int | None,
        on_written: Callable[[int], None],
    ) -> bool:
        """Write the body into `segment` until the segment is done (growing it over
        unstarted neighbours while the body runs on) or the body ends. True when the body
        was read to its end, so the connection can go back to the pool."""
        self.writer.bind(segment.pos, on_written)
        try:
            to_the_end = await self._read_body(response, segment, plan, response_stop)
            # The last block's write error must surface here: the segment is only done
            # once its bytes reached the file.
            await self.writer.flush()
            await self.writer.drain()
        finally:
            await self.writer.close()
        return to_the_end

    async def _read_body(
        self,
        response: aiohttp.ClientResponse,
        segment: Segment,
        plan: SegmentPlan,
        response_stop: int | None,
    ) -> bool:
        _body_without_read_timeout(response)
        content = response.content
        limit = self._throttle.slice_bytes if self._throttle.limited else None
        while self._room(segment, plan, response_stop):
            try:
                chunk = await _next_chunk(content, limit)
            except BaseException:
                kept = await self._accept(salvage(content), segment, plan, response_stop)
                if kept:
                    await self._on_bytes(kept)
                raise
            if not chunk:
                return True
            self.reads += 1
            if len(chunk) >= FULL_READ_BYTES:
                self.full_reads += 1
            accepted = await self._accept(chunk, segment, plan, response_stop)
            if limit:
                # Paid for before it counts: a reading never runs a slice ahead of the
                # limit (the bytes are in the file already, so a stop loses none).
                await self._throttle.take(len(chunk))
            if accepted:
                await self._on_bytes(accepted)
        return response_stop is not None and segment.pos == response_stop

    def _room(self, segment: Segment, plan: SegmentPlan, response_stop: int | None) -> bool:
        """Whether the segment can take more of this body."""
        if segment.end is None or segment.pos < segment.end:
            return True
        runs_on = response_stop is None or response_stop > segment.end
        return runs_on and plan.absorb_next(segment)

    async def _accept(
        self, data: bytes, segment: Segment, plan: SegmentPlan, response_stop: int | None
    ) -> int:
        """Write what of `data` belongs to this connection's segments; how much that was."""
        accepted = 0
        while data:
            if segment.end is not None and segment.pos >= segment.end:
                if not self._room(segment, plan, response_stop):
                    break  # the rest belongs to a segment another connection fetches
                continue
            room = None if segment.end is None else segment.end - segment.pos
            piece = data if room is None or len(data) <= room else data[:room]
            # Counted before the write is awaited: a steal while it waits must cut the
            # segment after this piece, or its tail would be fetched (and counted) twice.
            segment.pos += len(piece)
            self.received += len(piece)
            accepted += len(piece)
            data = data[len(piece) :]
            await self.writer.add(piece)
        return accepted
