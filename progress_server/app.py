"""create_app(settings) -> web.Application, whose start-up opens what the server needs and
closes it again, also when a step fails. Nothing is built at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol, TypeVar

import aiohttp
from aiohttp import web

from progress_server.appkeys import (
    BUS,
    KEYRING,
    LOGIN_LIMITER,
    LOOP_LAG,
    MEDIA_TOOLS,
    METRICS,
    QUERIES,
    SCHEDULER,
    SESSIONS,
    SETTINGS,
    STORE,
    WS_HUB,
)
from progress_server.auth import FailedLoginLimiter, KeyRing
from progress_server.engine import Downloader
from progress_server.events import EventBus
from progress_server.fanout import Hub
from progress_server.looplag import LoopLagMonitor
from progress_server.media import source as media_source
from progress_server.metrics import Metrics
from progress_server.netpolicy import PolicyResolver, policy_for
from progress_server.node import NodeUnavailable, opened_node
from progress_server.notifications.hooks import Hooks
from progress_server.processing.build import build_pipeline
from progress_server.processing.tools import detect_media_tools
from progress_server.scheduler import Scheduler
from progress_server.sessions import SessionStore
from progress_server.settings import Settings
from progress_server.snapshots import SnapshotCache
from progress_server.web.auth import auth_middleware
from progress_server.web.errors import error_middleware
from progress_server.web.page import setup_templates
from progress_server.web.routes import setup_routes
from progress_server.web.sessions import session_middleware
from progress_server.web.ws import close_sockets

MAX_REQUEST_LINE = 32 * 1024
log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, session_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
        # A batch poll of 200 task ids is a 9 KB request line: past aiohttp's default 8190
        # bytes its parser would answer a plain-text 400 before our JSON errors could.
        handler_args={"max_line_size": MAX_REQUEST_LINE, "max_field_size": MAX_REQUEST_LINE},
    )
    app[SETTINGS] = settings
    app[LOGIN_LIMITER] = FailedLoginLimiter()
    app.cleanup_ctx.append(resources)
    # aiohttp runs on_shutdown before it waits for handlers and before cleanup_ctx teardown:
    # open WebSockets are closed with 1001 there, so their handlers return at once.
    app.on_shutdown.append(close_sockets)
    setup_templates(app)
    setup_routes(app)
    return app


def client_session(settings: Settings) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.connect_timeout,
        # Waiting for headers or one read; a slow or stalled body is the downloader's
        # StallWatchdog's job (--stall-timeout, --min-speed).
        sock_read=settings.read_timeout,
    )
    # Every connection resolves through the network policy, so a name is checked on the
    # addresses it is actually connected to (--deny-private-networks).
    resolver = PolicyResolver(policy_for(settings))
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, resolver=resolver)
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=connector,
        auto_decompress=False,
        # Read buffers sized for bulk transfer; the default 64 KiB limit costs throughput.
        read_bufsize=1024 * 1024,
        headers={"User-Agent": "progress-server"},
    )


class StartupError(Exception):
    """The server could not start; the message says why, for the operator."""


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


@asynccontextmanager
async def started(service: S) -> AsyncIterator[S]:
    """`service`, started; stopped on the way out, also when its start failed half way."""
    try:
        await service.start()
        yield service
    finally:
        await service.stop()


@asynccontextmanager
async def opened_client_session(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    session = client_session(settings)
    try:
        yield session
    finally:
        await session.close()


async def resources(app: web.Application) -> AsyncIterator[None]:
    """Everything the app opens: opened in order, closed in reverse at shutdown.

    aiohttp closes nothing when a start-up step fails, so the exit stack does: whatever was
    opened before the failing step is closed again before the error goes out.
    """
    async with AsyncExitStack() as stack:
        try:
            await open_resources(app, stack)
        except (OSError, NodeUnavailable) as exc:
            raise StartupError(f"could not start: {exc}") from exc
        yield


async def open_resources(app: web.Application, stack: AsyncExitStack) -> None:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    loop_lag = app[LOOP_LAG] = LoopLagMonitor()
    # Alone on SQLite, or one node of a cluster: the one place the two differ.
    node = await stack.enter_async_context(opened_node(settings))
    store = app[STORE] = node.store
    bus = app[BUS] = EventBus(store, SnapshotCache(), node.log)
    await stack.enter_async_context(started(bus))
    hub = app[WS_HUB] = Hub(bus, settings.ws_queue_limit)
    stack.push_async_callback(hub.stop)
    keyring = app[KEYRING] = await stack.enter_async_context(started(KeyRing(store)))
    # A revoked key's open sockets close at once, wherever the revocation came from.
    hub.watch_keys(keyring)
    app[SESSIONS] = await stack.enter_async_context(
        started(SessionStore(store, shared=node.shared_sessions))
    )
    session = await stack.enter_async_context(opened_client_session(settings))
    # Looked for once: a missing ffmpeg is warned about once, here, and requests are
    # checked against this answer.
    media_tools = app[MEDIA_TOOLS] = detect_media_tools()
    if missing := media_source.startup_warning():
        # Once, here: without the [media] extra, "source": "media" answers 422.
        log.warning("%s", missing)
    scheduler = app[SCHEDULER] = Scheduler(
        settings,
        store,
        bus,
        Downloader(settings, session),
        build_pipeline(settings, media_tools),
        node.coordinator(bus),
    )
    app[QUERIES] = scheduler.queries
    await stack.enter_async_context(started(Hooks(settings, store, bus)))
    metrics = app[METRICS] = Metrics(
        scheduler, bus, store, loop_lag=loop_lag, sockets=hub, node=node.label
    )
    metrics.start()
    stack.callback(metrics.stop)
    await stack.enter_async_context(started(scheduler))
    # Measured from here to the start of shutdown: neither start-up (migrations, thread
    # start-up) nor the teardown is serving anyone.
    loop_lag.start()
    stack.push_async_callback(loop_lag.stop)
