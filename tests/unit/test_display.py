"""The figures and names people read, on the status page and in the terminal alike
(progress_server.display): one set of rules, so the two never disagree."""

from __future__ import annotations

import pytest

from progress_server.display import (
    DASH,
    STATE_LABELS,
    display_name,
    format_bytes,
    format_eta,
    format_percentage,
    format_size,
    format_speed,
    host_of,
    progress_figures,
    segment_bar,
    shown_percentage,
)
from progress_server.models import Progress, TaskState


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, DASH),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1_500_000, "1.4 MiB"),
        (1_048_576, "1.0 MiB"),
        (1_073_741_823, "1024.0 MiB"),
        (2 * 2**30, "2.0 GiB"),
        (3.4 * 2**40, "3.4 TiB"),
        (5000 * 2**40, "5000.0 TiB"),
    ],
)
def test_bytes_read_in_binary_units_like_the_results_size_mb(count: int | None, text: str) -> None:
    # One unit family everywhere people read sizes: the API's size_mb is MiB (#11).
    assert format_bytes(None if count is None else int(count)) == text


def test_size_is_done_of_total_while_under_way_and_the_file_size_once_completed() -> None:
    assert format_size(1_200_000, 2_500_000) == "1.1 MiB / 2.4 MiB"
    assert format_size(1_200_000, None) == "1.1 MiB"
    assert format_size(2_500_000, 2_500_000, completed=True) == "2.4 MiB"
    # A download of unannounced size: the bytes that arrived are its size.
    assert format_size(700, None, completed=True) == "700 B"


@pytest.mark.parametrize(
    ("mbps", "text"),
    [
        (None, DASH),
        (0.0, DASH),
        (0.85, "830 KiB/s"),
        (1.0, "977 KiB/s"),
        (1.048576, "1.0 MiB/s"),
        (12.345, "11.8 MiB/s"),
    ],
)
def test_speed_is_a_dash_when_standing_still(mbps: float | None, text: str) -> None:
    assert format_speed(mbps) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, DASH), (0, "0:00"), (59, "0:59"), (61, "1:01"), (3599, "59:59"), (3661, "1:01:01")],
)
def test_eta_is_minutes_and_seconds_with_hours_from_an_hour_on(
    seconds: int | None, text: str
) -> None:
    assert format_eta(seconds) == text


def test_eta_never_reads_negative_and_drops_fractions() -> None:
    assert format_eta(-5) == "0:00"
    assert format_eta(90.9) == "1:30"


def test_percentage_has_one_decimal_and_a_dash_while_the_size_is_unknown() -> None:
    assert format_percentage(45.5) == "45.5 %"
    assert format_percentage(100.0) == "100.0 %"
    assert format_percentage(None) == DASH


def test_completed_reads_100_and_processing_has_no_download_percentage() -> None:
    assert shown_percentage("completed", None) == 100.0
    assert shown_percentage(TaskState.COMPLETED, 40.0) == 100.0
    assert shown_percentage("processing", 100.0) is None
    assert shown_percentage("paused", 40.0) == 40.0


def test_figures_show_speed_and_eta_only_while_downloading() -> None:
    wire = Progress(downloaded_bytes=1_000_000, total_bytes=4_000_000, speed_bps=1_500_000)
    moving = progress_figures("downloading", wire.to_wire())
    assert (moving.percentage, moving.size, moving.speed, moving.eta) == (
        "25.0 %",
        "976.6 KiB / 3.8 MiB",
        "1.4 MiB/s",
        "0:02",
    )
    paused = progress_figures("paused", wire.to_wire())
    assert (paused.percentage, paused.speed, paused.eta) == ("25.0 %", DASH, DASH)
    done = progress_figures("completed", Progress(4_000_000, None).to_wire())
    assert (done.percentage, done.size) == ("100.0 %", "3.8 MiB")
    assert progress_figures("pending", None).size == DASH


def test_name_is_the_produced_file_then_the_given_name_then_the_url() -> None:
    url = "https://example.com/media/My%20Film.mkv?token=1#t=2"
    assert display_name(url, "film.mkv", "film.mp4") == "film.mp4"
    assert display_name(url, "film.mkv") == "film.mkv"
    # Until the origin names the file: the URL's last segment, unquoted, without query.
    assert display_name(url, None) == "My Film.mkv"
    assert display_name(url, "", "") == "My Film.mkv"


def test_a_url_without_a_file_part_is_named_by_its_host() -> None:
    assert display_name("https://downloads.example.com/", None) == "downloads.example.com"
    assert display_name("https://downloads.example.com/files/", None) == "downloads.example.com"
    assert host_of("https://downloads.example.com:8443/a") == "downloads.example.com"


def test_every_state_has_a_label_and_a_distinct_symbol() -> None:
    assert set(STATE_LABELS) == {state.value for state in TaskState}
    symbols = [symbol for _, symbol in STATE_LABELS.values()]
    assert len(set(symbols)) == len(symbols)
    assert STATE_LABELS["paused"] == STATE_LABELS[TaskState.PAUSED] == ("Paused", "‖")


def test_segment_bar_fills_each_part_where_it_lies() -> None:
    # Four parts of 1000 bytes over 8 columns: two columns each.
    parts = [[0, 1000, 1000], [1000, 2000, 500], [2000, 3000, 0], [3000, 4000, 250]]
    assert segment_bar(parts, 4000, width=8) == "▕███   ▌ ▏"
    assert segment_bar([], 4000, width=4) == "▕    ▏"
    assert segment_bar(parts, 0) == ""
