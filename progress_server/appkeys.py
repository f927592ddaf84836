"""Every web.AppKey of the application, in one place."""

from __future__ import annotations

from aiohttp import web

from progress_server.auth import FailedLoginLimiter, KeyRing
from progress_server.events import EventBus
from progress_server.fanout import Hub
from progress_server.looplag import LoopLagMonitor
from progress_server.metrics import Metrics
from progress_server.processing.tools import MediaTools
from progress_server.queries import TaskQueries
from progress_server.scheduler import Scheduler
from progress_server.sessions import SessionStore
from progress_server.settings import Settings
from progress_server.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
BUS = web.AppKey("bus", EventBus)
SCHEDULER = web.AppKey("scheduler", Scheduler)
QUERIES = web.AppKey("queries", TaskQueries)
KEYRING = web.AppKey("keyring", KeyRing)
LOGIN_LIMITER = web.AppKey("login_limiter", FailedLoginLimiter)
# Whether ffmpeg/ffprobe exist, found once at start-up.
MEDIA_TOOLS = web.AppKey("media_tools", MediaTools)
WS_HUB = web.AppKey("ws_hub", Hub)
# Worst event-loop lag since start and over the last minute (exported by /metrics).
LOOP_LAG = web.AppKey("loop_lag", LoopLagMonitor)
METRICS = web.AppKey("metrics", Metrics)
SESSIONS = web.AppKey("sessions", SessionStore)
