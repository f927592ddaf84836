"""A fault-injecting HTTP origin for tests and benchmarks.

`Origin` is a small aiohttp app on 127.0.0.1 whose `/file` route serves deterministic
pseudo-random bytes (`payload`) and misbehaves on request: throttling (per response or per
TCP connection), dropped connections, stalls, error statuses, lying lengths, redirects,
changing validators, ranges honoured only once, 429 for connections over a limit, gzip.
Every fault is chosen by query parameters, so a test only has to build a URL. It counts
the body bytes it sent and the responses in flight, per path.

This module is imported by bench/ scripts as well, so it must not import pytest.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import random
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict
from yarl import URL

# --------------------------------------------------------------------------------------
# Deterministic payload
# --------------------------------------------------------------------------------------

_BLOCK = 1024 * 1024
# Each 1 MiB block is the seed's buffer rotated by a different amount, so bytes at
# different offsets differ and a resume at the wrong offset changes the sha256.
_ROTATE = 7919


@functools.lru_cache(maxsize=32)
def _doubled_block(seed: int) -> bytes:
    # Stored twice over so that any rotation of the block is one contiguous slice.
    block = random.Random(seed).randbytes(_BLOCK)
    return block + block


def payload_slice(start: int, stop: int, seed: int = 0) -> bytes:
    """Bytes `[start, stop)` of the (conceptually infinite) payload stream for `seed`."""
    if stop <= start:
        return b""
    doubled = _doubled_block(seed)
    pieces: list[bytes] = []
    pos = start
    while pos < stop:
        block_index, inner = divmod(pos, _BLOCK)
        take = min(stop - pos, _BLOCK - inner)
        base = (block_index * _ROTATE) % _BLOCK + inner
        pieces.append(doubled[base : base + take])
        pos += take
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def iter_payload(size: int, seed: int = 0, start: int = 0, chunk: int = _BLOCK) -> Iterator[bytes]:
    """Yield `payload(size, seed)[start:]` in pieces of at most `chunk` bytes."""
    pos = start
    while pos < size:
        end = min(pos + chunk, size)
        yield payload_slice(pos, end, seed)
        pos = end


def payload(size: int, seed: int = 0) -> bytes:
    """The whole file served by `/file?size=SIZE&seed=SEED` (materialised in memory)."""
    return payload_slice(0, size, seed)


@functools.lru_cache(maxsize=4)
def gzip_payload(size: int, seed: int = 0) -> bytes:
    """The bytes `/file?size=SIZE&seed=SEED&gzip=1` sends: the payload, gzip-encoded."""
    return gzip.compress(payload(size, seed), compresslevel=1, mtime=0)


@functools.lru_cache(maxsize=256)
def payload_sha256(size: int, seed: int = 0) -> str:
    """Hex sha256 of `payload(size, seed)`, computed without materialising it."""
    digest = hashlib.sha256()
    doubled = memoryview(_doubled_block(seed))
    pos = 0
    while pos < size:
        # Whole blocks are hashed straight from the cached buffer, avoiding copies.
        block_index = pos // _BLOCK
        take = min(size - pos, _BLOCK)
        base = (block_index * _ROTATE) % _BLOCK
        digest.update(doubled[base : base + take])
        pos += take
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestLog:
    method: str
    path: str
    query: dict[str, str]
    # Case-insensitive, so `log.headers.get("range")` works however the client spelt it.
    headers: CIMultiDictProxy[str]
    # Raw path plus query string: the "logical URL" that per-URL fault counters use.
    path_qs: str

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")


# --------------------------------------------------------------------------------------
# Query parameters of /file
# --------------------------------------------------------------------------------------


def _int(query: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = query.get(name)
    return default if value is None or value == "" else int(value)


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "0").lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class _FileParams:
    size: int
    seed: int
    chunk: int
    rate: float | None
    no_length: bool
    no_range: bool
    change_etag: bool
    change_content: bool
    drop_after: int | None
    drop_times: int | None
    stall_after: int | None
    stall: float
    stall_times: int | None
    status: int | None
    fail_times: int | None
    retry_after: str | None
    short: int | None
    lie_length: int | None
    redirect: int
    redirect_loop: bool
    redirect_status: int
    disposition: str | None
    content_type: str
    conn_rate: float | None
    range_once: bool
    busy_over: int | None
    change_after: int | None
    gzip: bool

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> _FileParams:
        rate = query.get("rate")
        return cls(
            size=_int(query, "size", 1024 * 1024) or 0,
            seed=_int(query, "seed", 0) or 0,
            chunk=max(1, _int(query, "chunk", 65536) or 65536),
            rate=float(rate) if rate else None,
            no_length=_flag(query, "no_length"),
            no_range=_flag(query, "no_range"),
            change_etag=_flag(query, "change_etag"),
            change_content=_flag(query, "change_content"),
            drop_after=_int(query, "drop_after"),
            drop_times=_int(query, "drop_times"),
            stall_after=_int(query, "stall_after"),
            stall=float(query.get("stall") or 0),
            stall_times=_int(query, "stall_times"),
            status=_int(query, "status"),
            fail_times=_int(query, "fail_times"),
            retry_after=query.get("retry_after"),
            short=_int(query, "short"),
            lie_length=_int(query, "lie_length"),
            redirect=_int(query, "redirect", 0) or 0,
            redirect_loop=_flag(query, "redirect_loop"),
            redirect_status=_int(query, "redirect_status", 302) or 302,
            disposition=query.get("disposition"),
            content_type=query.get("content_type") or "application/octet-stream",
            conn_rate=float(query["conn_rate"]) if query.get("conn_rate") else None,
            range_once=_flag(query, "range_once"),
            busy_over=_int(query, "busy_over"),
            change_after=_int(query, "change_after"),
            gzip=_flag(query, "gzip"),
        )


class _Unsatisfiable(Exception):
    pass


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Half-open `(start, stop)` for a single byte range, or None to ignore the header.

    Multi-range and malformed headers are ignored (a full 200 is a valid answer to
    those); a well-formed range that starts past the end raises `_Unsatisfiable`.
    """
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or size == 0:
                raise _Unsatisfiable
            return max(size - suffix, 0), size
        start = int(first)
        stop = None if last == "" else int(last) + 1
    except ValueError:
        return None
    if start < 0 or (stop is not None and stop <= start):
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, size if stop is None else min(stop, size)


def _query_without(query: Mapping[str, str], *names: str) -> MultiDict[str]:
    return MultiDict((k, v) for k, v in query.items() if k not in names)


# A fixed, old Last-Modified; versions (see change_etag) add seconds to it.
_LAST_MODIFIED_EPOCH = 1_700_000_000


@dataclass
class _ConnectionBudget:
    """Bytes one TCP connection sent, and since when it counts, for `conn_rate`."""

    since: float
    sent: int = 0


# --------------------------------------------------------------------------------------
# The origin
# --------------------------------------------------------------------------------------


class Origin:
    """Fault-injecting origin; see the module docstring and `_serve_file` for the knobs."""

    def __init__(
        self, media_dir: Path | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.media_dir = media_dir
        self.host = host
        self.port = port
        self.requests: list[RequestLog] = []
        # All keyed by the raw path+query: a retry of the same URL shares the counter.
        self._hits: Counter[str] = Counter()
        self._drops: Counter[str] = Counter()
        self._stalls: Counter[str] = Counter()
        self._ranged: Counter[str] = Counter()
        # Per path: body bytes written, responses being sent now, and the most at once.
        self.sent: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight: Counter[str] = Counter()
        # Over all paths: responses being sent now, and the most at once.
        self.total_in_flight = 0
        self.peak_total_in_flight = 0
        # Per path: requests turned away by busy_over.
        self.turned_away: Counter[str] = Counter()
        self._budgets: weakref.WeakKeyDictionary[asyncio.BaseTransport, _ConnectionBudget] = (
            weakref.WeakKeyDictionary()
        )
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._record(request, handler)

        app = web.Application(middlewares=[record])
        app.router.add_get("/file", self._serve_file)
        app.router.add_get("/file/{name}", self._serve_file)
        app.router.add_get("/redirect/{hops}/{tail:.+}", self._redirect_hop)
        app.router.add_get("/media/{name}", self._serve_media)
        # A short shutdown timeout keeps teardown fast when a response is mid-stall.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- helpers for tests -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/file", /, **params: str | int | float | bool) -> str:
        """`http://127.0.0.1:PORT{path}?{params}`; booleans become 1/0. `path` is positional
        only, so a parameter dict (`**SLOW`) can never be taken for the path."""
        query = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in params.items()}
        return str(URL.build(scheme="http", host=self.host, port=self.port, path=path, query=query))

    def requests_for(self, path: str, method: str | None = None) -> list[RequestLog]:
        """Logged requests whose path (or path+query, if `path` contains '?') matches."""
        field = "path_qs" if "?" in path else "path"
        return [
            r
            for r in self.requests
            if getattr(r, field) == path and (method is None or r.method == method.upper())
        ]

    def count(self, path: str, method: str | None = None) -> int:
        return len(self.requests_for(path, method))

    def reset(self) -> None:
        """Forget logged requests and fault counters (faults with *_times re-arm)."""
        self.requests.clear()
        self._hits.clear()
        self._drops.clear()
        self._stalls.clear()
        self._ranged.clear()
        self.sent.clear()
        self.peak_in_flight.clear()
        self.peak_total_in_flight = 0
        self.turned_away.clear()

    # -- handlers --------------------------------------------------------------------

    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(
            RequestLog(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                path_qs=request.path_qs,
            )
        )
        self._hits[request.path_qs] += 1
        return await handler(request)

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        """Serve `payload(size, seed)`, applying the faults named in the query.

        Counters for `fail_times`, `drop_times` and `stall_times` are per raw
        path+query; `fail_times` counts every request (HEAD too), while the drop and
        stall counters only count responses in which that fault actually fired.
        `busy_over=N` answers 429 (with `retry_after`) while N responses for the path are
        already being sent; `range_once` honours only the first ranged request of the
        URL; `change_after=N` serves a new version (new bytes, new validators) from the
        (N+1)th request on; `conn_rate` throttles each TCP connection, across requests.
        """
        p = _FileParams.parse(request.query)
        key = request.path_qs
        nth = self._hits[key]  # 1-based number of this request for this URL

        if p.redirect_loop:
            tail = request.path.lstrip("/")
            return self._redirect(request, f"/redirect/loop/{tail}", request.query, p)
        if p.redirect > 0:
            rest = _query_without(request.query, "redirect")
            if p.redirect == 1:
                return self._redirect(request, request.path, rest, p)
            tail = request.path.lstrip("/")
            return self._redirect(request, f"/redirect/{p.redirect - 1}/{tail}", rest, p)

        if p.status is not None and (p.fail_times is None or nth <= p.fail_times):
            extra = {"Retry-After": p.retry_after} if p.retry_after else {}
            return web.Response(status=p.status, text=f"injected {p.status}\n", headers=extra)
        if p.busy_over is not None and self.in_flight[request.path] >= p.busy_over:
            extra = {"Retry-After": p.retry_after} if p.retry_after else {}
            self.turned_away[request.path] += 1
            return web.Response(status=429, text="too many connections\n", headers=extra)

        seed, version = p.seed, 0
        if p.change_content:
            seed, version = p.seed + nth, nth
        elif p.change_etag:
            version = nth
        elif p.change_after is not None and nth > p.change_after:
            seed, version = p.seed + 1, 1
        etag = f'"{seed}-{p.size}-{version}{"-gz" if p.gzip else ""}"'
        last_modified = formatdate(_LAST_MODIFIED_EPOCH + version, usegmt=True)
        headers = CIMultiDict[str]({"ETag": etag, "Last-Modified": last_modified})
        headers["Content-Type"] = p.content_type
        if p.disposition is not None:
            headers["Content-Disposition"] = p.disposition
        if p.gzip:
            encoded = gzip_payload(p.size, seed)
            headers["Content-Encoding"] = "gzip"
            size = len(encoded)

            def piece(a: int, b: int) -> bytes:
                return encoded[a:b]
        else:
            size = p.size

            def piece(a: int, b: int) -> bytes:
                return payload_slice(a, b, seed)

        status, start, stop = 200, 0, size
        range_header = request.headers.get("Range")
        if p.range_once and range_header is not None and self._ranged[key] >= 1:
            range_header = None  # "Range ignored after the first ranged request"
        if not p.no_range:
            headers["Accept-Ranges"] = "bytes"
            if range_header is not None and _if_range_matches(
                request.headers.get("If-Range"), etag, last_modified
            ):
                try:
                    parsed = _parse_range(range_header, size)
                except _Unsatisfiable:
                    headers["Content-Range"] = f"bytes */{size}"
                    return web.Response(status=416, headers=headers)
                if parsed is not None:
                    self._ranged[key] += 1
                    status, (start, stop) = 206, parsed
                    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        body_len = stop - start

        # `cut`: body offset at which the connection is closed without a proper end.
        cut: int | None = None
        declared = body_len
        if p.short is not None:
            cut = max(body_len - p.short, 0)
        if p.lie_length is not None:
            declared = p.lie_length
            cut = min(declared, body_len if cut is None else cut)
        is_get = request.method == "GET"
        if (
            is_get
            and p.drop_after is not None
            and p.drop_after < body_len
            and (p.drop_times is None or self._drops[key] < p.drop_times)
        ):
            self._drops[key] += 1
            cut = p.drop_after if cut is None else min(cut, p.drop_after)
        stall_at: int | None = None
        if (
            is_get
            and p.stall_after is not None
            and p.stall_after < body_len
            and (p.stall_times is None or self._stalls[key] < p.stall_times)
        ):
            self._stalls[key] += 1
            stall_at = p.stall_after

        resp = web.StreamResponse(status=status, headers=headers)
        if not p.no_length:
            resp.content_length = declared
        if cut is not None:
            resp.force_close()
        path = request.path
        self.in_flight[path] += 1
        self.peak_in_flight[path] = max(self.peak_in_flight[path], self.in_flight[path])
        self.total_in_flight += 1
        self.peak_total_in_flight = max(self.peak_total_in_flight, self.total_in_flight)
        try:
            await resp.prepare(request)
            if not is_get:
                await resp.write_eof()
                return resp
            limit = body_len if cut is None else cut
            await self._send_body(request, resp, p, piece, start, limit, stall_at)
        finally:
            self.in_flight[path] -= 1
            self.total_in_flight -= 1

        if cut is not None:
            # Flush headers even when nothing was written, then hang up. close() (not
            # abort()) lets queued bytes out first, so the client gets exactly `cut`.
            await resp.write(b"")
            if request.transport is not None:
                request.transport.close()
            # aiohttp's write_eof on the closed transport fails quietly as a disconnect.
            return resp
        await resp.write_eof()
        return resp

    async def _send_body(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        p: _FileParams,
        piece: Callable[[int, int], bytes],
        start: int,
        limit: int,
        stall_at: int | None,
    ) -> None:
        """Write body bytes `[start, start + limit)` in chunks, throttled and stalled."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = self._budget(request, p, started)
        pos = 0
        while pos < limit:
            if stall_at is not None and pos >= stall_at:
                stall_at = None
                await asyncio.sleep(p.stall)
            # Chunks end exactly at the stall point so it happens after stall_after bytes.
            end = min(pos + p.chunk, limit)
            if stall_at is not None and pos < stall_at < end:
                end = stall_at
            await resp.write(piece(start + pos, start + end))
            self.sent[request.path] += end - pos
            if budget is not None:
                budget.sent += end - pos
            pos = end
            if pos >= limit:
                break  # no throttle sleep after the last byte: the response is over
            ahead = 0.0
            if p.rate:
                ahead = pos / p.rate - (loop.time() - started)
            if budget is not None and p.conn_rate:
                ahead = max(ahead, budget.sent / p.conn_rate - (loop.time() - budget.since))
            if ahead > 0:
                await asyncio.sleep(ahead)

    def _budget(self, request: web.Request, p: _FileParams, now: float) -> _ConnectionBudget | None:
        if not p.conn_rate or request.transport is None:
            return None
        budget = self._budgets.get(request.transport)
        if budget is None:
            budget = self._budgets[request.transport] = _ConnectionBudget(now)
        # Time the connection sat idle between requests is not saved up as a burst.
        budget.since = max(budget.since, now - budget.sent / p.conn_rate)
        return budget

    def _redirect(
        self,
        request: web.Request,
        path: str,
        query: Mapping[str, str],
        p: _FileParams,
    ) -> web.Response:
        location = request.url.with_path(path).with_query(query)
        return web.Response(status=p.redirect_status, headers={"Location": str(location)})

    async def _redirect_hop(self, request: web.Request) -> web.Response:
        """`/redirect/{k}/{tail}` goes to `/redirect/{k-1}/{tail}`, and from k=1 to `/{tail}`.

        `/redirect/loop/{tail}` goes back to `/{tail}` with the query untouched, which
        (with redirect_loop=1 in it) redirects here again: a two-URL loop.
        """
        hops = request.match_info["hops"]
        tail = request.match_info["tail"]
        p = _FileParams.parse(request.query)
        if hops == "loop" or int(hops) <= 1:
            return self._redirect(request, f"/{tail}", request.query, p)
        return self._redirect(request, f"/redirect/{int(hops) - 1}/{tail}", request.query, p)

    async def _serve_media(self, request: web.Request) -> web.StreamResponse:
        if self.media_dir is None:
            raise web.HTTPNotFound(text="Origin has no media_dir\n")
        name = request.match_info["name"]
        path = (self.media_dir / name).resolve()
        if path.parent != self.media_dir.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)


def _if_range_matches(if_range: str | None, etag: str, last_modified: str) -> bool:
    # RFC 9110 13.1.5: strong comparison only; a weak tag or other date never matches.
    if if_range is None:
        return True
    value = if_range.strip()
    return value == etag if value.startswith('"') else value == last_modified
