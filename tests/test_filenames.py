"""File names: refused when a user typed them badly, repaired when an origin sent them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_server import filenames


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        (".bashrc", "bashrc"),
        ("a..b", "a_b"),
        ("clip.mp4.part", "clip.mp4_part"),
        ("CON", "_CON"),
        ("new\nline.txt", "new_line.txt"),
        ('what?"*<>|.txt', "what______.txt"),
        ("  spaced.txt  ", "spaced.txt"),
    ],
)
def test_sanitise_repairs_origin_names(raw: str, expected: str) -> None:
    assert filenames.sanitise(raw) == expected


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@given(st.text(max_size=600))
def test_sanitised_names_are_always_one_plain_component(raw: str) -> None:
    name = filenames.sanitise(raw)
    if name:
        assert filenames.user_filename_problem(name) is None, name
        assert len(filenames.part_name(name).encode()) <= filenames.MAX_NAME_BYTES


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_name_sources_in_order_of_preference() -> None:
    url = "http://example.com/media/My%20Clip.mp4?token=secret"
    cd = "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    assert filenames.choose("mine.bin", cd, url, "tid") == "mine.bin"
    assert filenames.choose(None, cd, url, "tid") == "résumé.pdf"
    assert filenames.choose(None, None, url, "tid") == "My Clip.mp4"
    assert filenames.choose(None, "attachment; filename=", "http://example.com/", "tid") == "tid"
    assert filenames.choose(None, "garbage;;;=", "http://example.com/x.bin", "tid") == "x.bin"


def test_unique_skips_names_taken_by_tasks_and_files(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"")
    (tmp_path / "a (1).bin.part").write_bytes(b"")
    assert filenames.unique(tmp_path, "a.bin", {"a (2).bin"}) == "a (3).bin"
    assert filenames.unique(tmp_path, "noext", {"noext"}) == "noext (1)"
    assert filenames.unique(tmp_path, "free.bin", set()) == "free.bin"


def test_longest_names_still_fit_with_suffixes(tmp_path: Path) -> None:
    longest = "x" * 251 + ".bin"
    assert filenames.user_filename_problem(longest) is None
    part = filenames.part_name(longest)
    assert len(part.encode()) <= 255
    (tmp_path / part).write_bytes(b"really creatable")
    second = filenames.unique(tmp_path, longest, {longest})
    assert len(second.encode()) <= 255 and second.endswith(" (1).bin")
    (tmp_path / second).write_bytes(b"")
    assert filenames.part_name(longest) != filenames.part_name("x" * 251 + ".bim")


def test_inside_refuses_escapes(tmp_path: Path) -> None:
    assert filenames.inside(tmp_path, "ok.bin") == (tmp_path / "ok.bin").resolve()
    for bad in ("../x", "/etc/passwd", "a/b"):
        with pytest.raises(ValueError):
            filenames.inside(tmp_path, bad)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "header",
    [
        "attachment; filename*=no-such-charset''x.bin",
        "attachment; filename*=ascii''%ff%fe.bin",
        "attachment; filename*0*=no-such-charset''a; filename*1=b.bin",
        "attachment; filename*0*=utf-8''%ff; filename*1=.bin",
    ],
)
def test_an_undecodable_disposition_still_names_the_file(header: str) -> None:
    # A charset that does not exist or octets that do not decode never fail the download:
    # the name is what could be decoded, or the URL's.
    name = filenames.choose(None, header, "http://example.com/from-url.bin", "t")
    assert name and filenames.user_filename_problem(name) is None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@given(st.text(max_size=300))
def test_any_disposition_header_gives_a_plain_name_or_none(header: str) -> None:
    name = filenames.from_content_disposition("attachment; filename*=" + header)
    assert name is None or filenames.user_filename_problem(name) is None
