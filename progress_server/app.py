"""create_app(settings) -> web.Application. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from progress_server.appkeys import (
    BUS,
    CLIENT_SESSION,
    KEYRING,
    LOGIN_LIMITER,
    LOOP_LAG,
    MEDIA_TOOLS,
    METRICS,
    SCHEDULER,
    SESSIONS,
    SETTINGS,
    STORE,
    WS_HUB,
)
from progress_server.auth import FailedLoginLimiter, KeyRing
from progress_server.downloader import Downloader
from progress_server.events import EventBus
from progress_server.fanout import Hub
from progress_server.looplag import LoopLagMonitor
from progress_server.metrics import Metrics
from progress_server.netpolicy import PolicyResolver, policy_for
from progress_server.notifications.hooks import Hooks
from progress_server.processing.build import build_pipeline
from progress_server.processing.tools import detect_media_tools
from progress_server.scheduler import Scheduler
from progress_server.sessions import SessionStore
from progress_server.settings import Settings
from progress_server.snapshots import SnapshotCache
from progress_server.store import Store
from progress_server.web.auth import auth_middleware
from progress_server.web.errors import error_middleware
from progress_server.web.page import setup_templates
from progress_server.web.routes import setup_routes
from progress_server.web.ws import close_sockets

MAX_REQUEST_LINE = 32 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
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


async def resources(app: web.Application) -> AsyncIterator[None]:
    """Everything the app opens, opened in order and closed in reverse, in one place."""
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    loop_lag = LoopLagMonitor()
    app[LOOP_LAG] = loop_lag
    store = Store(settings.db_path)
    await store.open()
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    hub = Hub(bus, settings.ws_queue_limit)
    app[WS_HUB] = hub
    keyring = KeyRing(store)
    await keyring.start()
    sessions = SessionStore(store)
    await sessions.load()
    session = client_session(settings)
    # Looked for once: a missing ffmpeg is warned about once, here, and requests are
    # checked against this answer.
    media_tools = detect_media_tools()
    app[MEDIA_TOOLS] = media_tools
    scheduler = Scheduler(
        settings,
        store,
        bus,
        Downloader(settings, session),
        build_pipeline(settings, media_tools),
    )
    hooks = Hooks(settings, store, bus)
    await hooks.start()
    app[STORE] = store
    app[BUS] = bus
    app[KEYRING] = keyring
    app[SESSIONS] = sessions
    app[CLIENT_SESSION] = session
    app[SCHEDULER] = scheduler
    metrics = Metrics(scheduler, bus, store, loop_lag=loop_lag, sockets=hub)
    app[METRICS] = metrics
    metrics.start()
    await scheduler.start()
    # Measured from here: start-up (migrations, thread start-up) is not serving anyone.
    loop_lag.start()
    try:
        yield
    finally:
        await hub.stop()
        await scheduler.stop()
        await hooks.stop()
        metrics.stop()
        await keyring.stop()
        await session.close()
        await store.close()
        await loop_lag.stop()
