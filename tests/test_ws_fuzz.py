"""Fuzzing the WebSocket's frames: whatever a client sends below 64 KiB, the socket answers
exactly once (an error frame when the frame is not a valid action) and stays usable."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.serverproc import ServerProcess, create_key
from tests.wsclient import JSON, flatten

ACTIONS = ("auth", "subscribe", "unsubscribe", "ping", "configure")
ERROR_TYPES = {
    "invalid_json",
    "invalid_frame",
    "invalid_request",
    "unknown_action",
    "not_found",
    "unauthorized",
    "rate_limited",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
action_frames = st.fixed_dictionaries(
    {"action": st.sampled_from(ACTIONS) | st.text(max_size=12)},
    optional={
        "task_id": json_values | st.sampled_from(["*", str(uuid.uuid4())]),
        "after_seq": json_values | st.integers(-3, 2**63),
        "batch_ms": json_values | st.integers(-10, 100_000),
        "api_key": json_values,
    },
)
frames = st.one_of(
    json_values.map(lambda value: json.dumps(value)),
    action_frames.map(lambda value: json.dumps(value)),
    st.text(max_size=300),
    st.binary(max_size=300),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path_factory.mktemp("ws-fuzz") / "data"
    key = create_key(data, "fuzz")
    with ServerProcess(data, "--min-free-space", "0") as proc:
        yield proc, key


def is_action(frame: str | bytes) -> bool:
    if isinstance(frame, bytes):
        return False
    try:
        parsed: Any = json.loads(frame)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("action") in ACTIONS


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames)
def test_every_frame_gets_one_answer_and_the_socket_survives(
    server: tuple[ServerProcess, str], frame: str | bytes
) -> None:
    proc, key = server
    headers = {"Authorization": f"Bearer {key}"}
    with connect(proc.ws_url, additional_headers=headers, open_timeout=30) as ws:
        ws.send(frame)
        ws.send(json.dumps({"action": "ping"}))
        # One answer per frame: the fuzzed frame's, then the pong (batch frames, which a
        # valid `configure` turns on, are flattened).
        answers: list[JSON] = []
        while len(answers) < 2:
            answers += flatten(json.loads(ws.recv(timeout=30)))
    assert len(answers) == 2 and answers[1] == {"event": "pong"}, (frame, answers)
    reply = answers[0]
    if reply["event"] == "error":
        assert reply.keys() == {"event", "error"}, reply
        assert reply["error"].keys() == {"type", "message"}, reply
        assert reply["error"]["type"] in ERROR_TYPES, reply
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    else:
        assert is_action(frame), (frame, reply)
        assert reply["event"] in {"subscribed", "unsubscribed", "configured", "pong"}, reply
