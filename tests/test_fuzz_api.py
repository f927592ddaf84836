"""Fuzz the REST API with schemathesis against the OpenAPI document it serves.

A real server subprocess, a valid key, a bounded budget: zero 5xx, and every answer (status,
content type, headers, body) as documented; schema-invalid input must be refused with 4xx.

Schemathesis invents URLs for POST /api/downloads, so the server under fuzz runs with
--loopback-only: a generated `http://example.com/` fails as `invalid_url` before any name
is looked up, and no traffic leaves the machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from yarl import URL

from progress_server.netpolicy import NetworkPolicy, PolicyViolation
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.serverproc import ServerProcess, create_key

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


# Schema-invalid input must be refused with one of these (schemathesis' default list lacks
# 413, which is what a body over the server's size limit rightly gets).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
"""


# CPython before 3.11.8 counts the depth of the nodes ast.parse builds in one counter shared by
# all threads: if a finalizer run by the garbage collector mid-parse lets another thread parse
# too, one of them fails with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905, fixed in 3.11.8 by python/cpython#113476). Hypothesis parses
# schemathesis' own source to describe a filter lambda, in each of the two worker threads, so on
# such an interpreter the coverage phase died now and then with a "Runtime Error" inside
# schemathesis. One parse at a time avoids it; nothing else about the run changes.
SCHEMATHESIS_MAIN = """
import ast, sys, threading
if sys.version_info < (3, 11, 8):
    _parse, _one_at_a_time = ast.parse, threading.Lock()
    def _serial_parse(*args, **kwargs):
        with _one_at_a_time:
            return _parse(*args, **kwargs)
    ast.parse = _serial_parse
from schemathesis.cli import schemathesis
schemathesis()
"""


def schemathesis(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCHEMATHESIS_MAIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def failures(output: str) -> str:
    """The FAILURES section of schemathesis' output, each line cut short (bodies are long)."""
    section = output.partition("= FAILURES =")[2].partition("= WARNINGS =")[0] or output[-5000:]
    return "\n".join(line[:300] for line in section.splitlines())


@pytest.mark.timeout(400)
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(tmp_path: Path) -> None:
    # An admin key, so that GET /metrics (admin only) is fuzzed past its 403 as well.
    key = create_key(tmp_path, "fuzzer", admin=True)
    server = ServerProcess(
        tmp_path,
        "--loopback-only",
        "--max-size",
        "4096",
        "--max-retries",
        "0",
        "--connect-timeout",
        "2",
    )
    with server:
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        result = schemathesis(
            "--config-file",
            str(config),
            "run",
            f"{server.base_url}/api/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            CHECKS,
            # The page (cookie + CSRF forms, HTML) is for browsers, and its failed logins
            # would lock this address out of the API; the WebSocket is fuzzed frame by frame
            # in its own tests.
            "--exclude-tag",
            "page",
            "--exclude-path",
            "/api/progress/ws",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--max-time",
            "100",
            "--workers",
            "2",
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            timeout=360,
        )
        log = server.log_text()
    report = failures(result.stdout) + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "Traceback" not in log, log[-5000:]
    # The run really exercised the API, not only loaded the document.
    selected = re.search(r"Operations:\s+(\d+) selected", result.stdout)
    assert selected is not None and int(selected.group(1)) >= 14, report
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), report
    # No operation met only 401/403 (schemathesis warns so): each one was fuzzed past its auth.
    assert "Authentication failed" not in result.stdout, result.stdout[-3000:]


def test_loopback_only_refuses_other_hosts_without_looking_them_up() -> None:
    policy = NetworkPolicy(deny_private=False, loopback_only=True)
    for allowed in (
        "http://127.0.0.1:9/x",
        "http://127.8.9.10/",
        "http://[::1]:80/",
        "http://localhost/",
    ):
        policy.check_url(URL(allowed))
    for refused in (
        "http://example.com/",
        "http://10.0.0.1/",
        "http://0.0.0.0:9/",
        "https://[::ffff:8.8.8.8]/",
    ):
        with pytest.raises(PolicyViolation):
            policy.check_url(URL(refused))


async def test_loopback_only_server_fails_other_hosts_as_invalid_url(make_api: MakeApi) -> None:
    api: Api = await make_api(loopback_only=True)
    # 0.0.0.0 is not loopback, yet connecting to it would stay on this machine: if the policy
    # let it through, the task would fail as network_error, not invalid_url.
    task = await api.submit("http://0.0.0.0:9/file?x=1")
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "invalid_url", failed
