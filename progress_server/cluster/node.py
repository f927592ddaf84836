"""ClusterNode: this server as one node of a cluster: its id, the shared PostgreSQL store,
the event log every node reads back, and the coordinator that claims its work."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from progress_server.cluster.buslog import ClusterLog
from progress_server.cluster.coordinator import ClusterCoordinator
from progress_server.coordination import Coordinator
from progress_server.events import EventBus, EventLog
from progress_server.node import NodeUnavailable
from progress_server.sessions import SharedSessions
from progress_server.settings import Settings
from progress_server.store import Store
from progress_server.store.postgres import PostgresStore

log = logging.getLogger("progress_server")


def redacted_url(url: str) -> str:
    """The database URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class ClusterNode:
    def __init__(self, settings: Settings, name: str | None) -> None:
        """`name`: the node's id when it serves; None for a command (`keys --database`)."""
        assert settings.database is not None, "a cluster node needs --database"
        self._settings = settings
        self.node_id = name
        # Named in pg_stat_activity, so an operator sees which node holds which connection
        # (the feed's own connection: "<name> feed").
        shown = f"progress-server {name}" if name else "progress-server command"
        self._store = PostgresStore(settings.database, application_name=shown[:63])
        self._log: ClusterLog | None = None

    @property
    def store(self) -> Store:
        return self._store

    @property
    def log(self) -> EventLog:
        assert self._log is not None, "the node is not open"
        return self._log

    @property
    def label(self) -> str | None:
        return self.node_id

    @property
    def shared_sessions(self) -> SharedSessions | None:
        return self._store

    async def open(self) -> None:
        try:
            await self._store.open()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            where = redacted_url(self._store.url)
            raise NodeUnavailable(f"cannot use the database {where}: {exc}") from exc
        self._log = ClusterLog(self._store)
        if self.node_id is not None:
            log.info("cluster node %s, database %s", self.node_id, redacted_url(self._store.url))

    async def close(self) -> None:
        await self._store.close()

    def coordinator(self, bus: EventBus) -> Coordinator:
        assert self._log is not None and self.node_id is not None, "not a serving node"
        return ClusterCoordinator(self._settings, self._store, bus, self._log, self.node_id)
