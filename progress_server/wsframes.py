"""The bytes the server writes to a WebSocket: JSON payloads, batch payloads, and whole
RFC 6455 text frames built once and written as they are to every socket that sends them.

Our sockets never negotiate compression (web/ws.py opens them with `compress=False`), and
a server never masks its frames, so a text frame is a fixed header followed by the
payload: the same bytes for every socket. That is what lets the fan-out frame a batch
once and write it to hundreds of transports without going through aiohttp's per-socket
writer. Control frames (ping, pong, close) still go through aiohttp; each of those, like
each of ours, is a single `transport.write`, so frames never interleave.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import Any

from progress_server.models import Event
from progress_server.outbox import Frame

_FIN_TEXT = 0x81
_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack
BATCH_HEAD = b'{"event": "batch", "events": ['
BATCH_TAIL = b"]}"


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def event_frame(event: Event) -> Frame:
    """An event as the outbox and the log hold it: encoded once, for every socket."""
    return Frame(
        encode(event.to_wire()),
        seq=event.seq,
        task_id=event.task_id,
        owner=event.owner_key_id,
        progress=event.is_progress,
    )


def batch_payload(payloads: Iterable[bytes]) -> bytes:
    return BATCH_HEAD + b", ".join(payloads) + BATCH_TAIL


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked, uncompressed text frame carrying `payload`."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 65536:
        return _LEN2(_FIN_TEXT, 126, size) + payload
    return _LEN8(_FIN_TEXT, 127, size) + payload


def text_frames(payloads: Iterable[bytes]) -> bytes:
    """Several text frames back to back, for one write."""
    return b"".join(text_frame(p) for p in payloads)
