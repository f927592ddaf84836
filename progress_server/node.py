"""What this server is: alone on SQLite (LocalNode), or one node of a cluster sharing a
PostgreSQL database (progress_server.cluster.node). The app asks the node for its store,
its event log, its coordinator and what it shares with other nodes; nothing else in the
app differs between the two."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from progress_server.coordination import Coordinator, LocalCoordinator
from progress_server.events import EventBus, EventLog, LocalLog
from progress_server.nodeid import node_id
from progress_server.sessions import SharedSessions
from progress_server.settings import Settings
from progress_server.store import Store
from progress_server.store.sqlite import SqliteStore


class Node(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def log(self) -> EventLog: ...

    @property
    def label(self) -> str | None:
        """The node id /metrics labels its figures with; None when the server is alone."""

    @property
    def shared_sessions(self) -> SharedSessions | None:
        """Where page sessions made by other nodes are found; None when alone."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def coordinator(self, bus: EventBus) -> Coordinator: ...


class NodeUnavailable(Exception):
    """The node cannot start (its database is unreachable, an extra is missing)."""


class LocalNode:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store = SqliteStore(settings.db_path)
        self._log = LocalLog(self._store)

    @property
    def store(self) -> Store:
        return self._store

    @property
    def log(self) -> EventLog:
        return self._log

    @property
    def label(self) -> str | None:
        return None

    @property
    def shared_sessions(self) -> SharedSessions | None:
        return None

    async def open(self) -> None:
        await self._store.open()

    async def close(self) -> None:
        await self._store.close()

    def coordinator(self, bus: EventBus) -> Coordinator:
        return LocalCoordinator(self._settings, self._store)


def new_node(settings: Settings, *, serving: bool = True) -> Node:
    """The node `settings` describe; `serving` False for a command that only uses its
    store (`keys`), which then leaves no node id behind in DATA_DIR."""
    if settings.database is None:
        return LocalNode(settings)
    try:
        # Imported only when asked for: a plain install has no asyncpg.
        from progress_server.cluster.node import ClusterNode
    except ImportError as exc:
        raise NodeUnavailable(
            f"--database needs the postgres extra (pip install 'progress-server[postgres]'): {exc}"
        ) from exc
    return ClusterNode(settings, node_id(settings) if serving else None)


@asynccontextmanager
async def opened_node(settings: Settings, *, serving: bool = True) -> AsyncIterator[Node]:
    node = new_node(settings, serving=serving)
    try:
        await node.open()
        yield node
    finally:
        await node.close()
