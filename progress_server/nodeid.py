"""This server's node id: the one given, or one made at its first start and kept in DATA_DIR,
so a node keeps its name across restarts and two nodes on one machine never share one."""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

from progress_server.settings import NODE_ID_PATTERN, Settings

FILE_NAME = "node-id"


def node_id(settings: Settings) -> str:
    if settings.node_id:
        return settings.node_id
    path = settings.data_dir / FILE_NAME
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if NODE_ID_PATTERN.fullmatch(kept):
        return kept
    made = _new_id()
    _write_atomically(path, made)
    return made


def _new_id() -> str:
    # The host name says where the node runs; the suffix tells apart nodes on one host.
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]).strip("-._")
    return f"{host[:40] or 'node'}-{secrets.token_hex(3)}"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(text + "\n")
    scratch.replace(path)
