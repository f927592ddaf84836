"""How the worker names what yt-dlp raised, and the job it is handed; real yt-dlp errors,
wrapped the way yt-dlp wraps them, no stand-ins."""

from __future__ import annotations

import errno
import io
import sys
from pathlib import Path

import pytest
from yt_dlp.networking import Response
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, PostProcessingError, UnsupportedError

from progress_server.media.errors import MediaError, classify, clean_message
from progress_server.media.job import MediaJob
from progress_server.netpolicy import PolicyViolation


def wrapped(inner: BaseException, message: str = "ERROR: something") -> DownloadError:
    """A DownloadError around `inner`, as YoutubeDL.trouble() raises it."""
    try:
        raise inner
    except BaseException:
        return DownloadError(message, sys.exc_info())


def http_error(status: int) -> HTTPError:
    return HTTPError(Response(io.BytesIO(b""), "http://x/", {}, status=status, reason="Nope"))


def test_unsupported_url_is_extract_error_with_yt_dlps_reason() -> None:
    error = classify(wrapped(UnsupportedError("http://x/page")), extracting=True)
    assert (error.error_type, error.message) == ("extract_error", "Unsupported URL: http://x/page")
    assert not error.retryable


def test_extractor_error_caused_by_http_keeps_the_status() -> None:
    try:
        raise http_error(404)
    except HTTPError as cause:
        extractor_error = ExtractorError("Unable to download webpage", cause=cause)
    error = classify(wrapped(extractor_error), extracting=True)
    assert (error.error_type, error.status, error.retryable) == ("http_error", 404, False)
    assert classify(wrapped(http_error(503)), extracting=False).retryable


def test_network_and_timeout_failures_keep_their_types_and_are_retryable() -> None:
    refused = TransportError(cause=ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    timed_out = TransportError(cause=TimeoutError("read timed out"))
    assert classify(wrapped(refused), extracting=False).error_type == "network_error"
    assert classify(wrapped(timed_out), extracting=False).error_type == "timeout"
    assert classify(wrapped(refused), extracting=False).retryable


def test_a_full_disk_is_a_disk_error() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert classify(wrapped(full), extracting=False).error_type == "disk_error"


def test_policy_and_postprocessing_and_give_ups() -> None:
    policy = classify(wrapped(PolicyViolation("10.0.0.1 is private")), extracting=False)
    assert (policy.error_type, policy.retryable) == ("invalid_url", False)
    merge = classify(wrapped(PostProcessingError("Conversion failed!")), extracting=False)
    assert merge.error_type == "processing_error"
    # A downloader that gave up after its own retries: another run may get past it.
    gave_up = classify(
        DownloadError("ERROR: fragment 3 not found, unable to continue"), extracting=False
    )
    assert (gave_up.error_type, gave_up.retryable) == ("network_error", True)
    assert gave_up.message == "fragment 3 not found, unable to continue"


def test_messages_lose_yt_dlps_prefix_and_boilerplate() -> None:
    text = "ERROR: [generic] x: Oops; please report this issue on  https://github.com/yt-dlp/..."
    assert clean_message(text) == "[generic] x: Oops"


def test_urls_in_messages_lose_credentials_and_query() -> None:
    text = "ERROR: Unsupported URL: https://bob:secret@example.com:8443/v/1?token=abc#t=3"
    assert clean_message(text) == "Unsupported URL: https://example.com:8443/v/1"
    assert clean_message("see http://[::1]:80/a?b=c.") == "see http://[::1]:80/a"


def test_error_events_round_trip() -> None:
    error = MediaError("http_error", "HTTP 503", retryable=True, status=503)
    assert MediaError.from_event(error.to_event()) == error


def test_media_job_round_trips_and_refuses_unknown_fields(tmp_path: Path) -> None:
    job = MediaJob(
        url="https://example.com/v", output_dir=tmp_path, ratelimit=1000, playlist=False,
        deny_private=True, allow_networks=("10.0.0.0/8",),
    )  # fmt: skip
    assert MediaJob.from_json(job.to_json()) == job
    with pytest.raises(ValueError, match="unknown media job fields: colour"):
        MediaJob.from_json('{"url": "https://x/", "output_dir": "/tmp", "colour": 1}')
    with pytest.raises(ValueError):
        MediaJob.from_json("[1, 2]")
