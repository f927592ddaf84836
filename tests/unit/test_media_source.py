"""Which source a URL takes ("auto", "http", "media"), and the server without yt-dlp."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from progress_server.media import source
from tests.serverproc import REPO_ROOT


@pytest.fixture(autouse=True)
def fresh_caches() -> None:
    source.media_available.cache_clear()
    source.has_site_extractor.cache_clear()
    source.format_problem.cache_clear()


@pytest.mark.parametrize(
    "url",
    [
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "https://youtu.be/dQw4w9WgXcQ",
        "https://vimeo.com/76979871",
        "https://www.youtube.com/playlist?list=PLBCF2DAC6FFB574DE",
    ],
)
def test_auto_is_media_where_a_site_extractor_knows_the_url(url: str) -> None:
    assert source.resolve("auto", url) == "media"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/files/linux.iso",
        "http://127.0.0.1:8000/file?size=100",
        # Only yt-dlp's generic extractor takes these: a plain download, as the contract says.
        "https://example.com/",
        "https://example.com/page-with-a-video.html",
        # A manifest's name in the query is not a manifest's path.
        "https://example.com/proxy?u=stream.m3u8",
    ],
)
def test_auto_is_http_for_everything_else(url: str) -> None:
    assert source.resolve("auto", url) == "http"


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/live/stream.m3u8",
        "https://cdn.example.com/vod/master.M3U8?token=abc",
        "http://10.0.0.5:8080/dash/manifest.mpd",
    ],
)
def test_auto_is_media_for_a_manifest_whatever_the_site(url: str) -> None:
    # A manifest is never what a user wants as a file (a 1 KB text file of fragment URLs).
    assert source.resolve("auto", url) == "media"


def test_a_format_given_with_auto_asks_for_media() -> None:
    assert source.resolve("auto", "https://example.com/page.html", format_given=True) == "media"


def test_format_selectors_are_read_by_yt_dlp_itself() -> None:
    assert source.format_problem("bv*[height<=720]+ba/b") is None
    assert source.format_problem("ba/b") is None
    problem = source.format_problem("bv*+")
    assert problem is not None and problem.startswith("'format' is not a yt-dlp format selector")
    assert source.format_problem("best[height<=abc]") is not None
    assert source.format_problem("") is not None
    assert source.format_problem("b" * 501) is not None
    assert source.format_problem("b\nb") is not None
    # yt-dlp's parser raises TypeError for this one (found by fuzzing), not SyntaxError.
    assert source.format_problem('o`$":+[)#Z/^ ,') is not None


def test_the_joined_patterns_say_what_every_extractor_says() -> None:
    """The one-regex matcher agrees with asking each site extractor, on URLs from yt-dlp's
    own extractor tests (sites it knows) and on URLs no site claims."""
    from yt_dlp.extractor import _extractors, gen_extractor_classes

    urls: list[str] = []
    for name in sorted(dir(_extractors))[::11]:
        for case in getattr(getattr(_extractors, name), "_TESTS", None) or []:
            if isinstance(case, dict) and isinstance(case.get("url"), str):
                urls.append(case["url"])
    urls += [f"https://files.example.org/{n}/archive-{n}.tar.gz" for n in range(20)]
    assert len(urls) > 200
    extractors = [ie for ie in gen_extractor_classes() if ie.ie_key() != "Generic"]
    for url in urls:
        expected = any(ie.suitable(url) for ie in extractors)
        assert source.has_site_extractor(url) is expected, url


def test_explicit_sources_are_taken_as_asked() -> None:
    assert source.resolve("http", "https://www.youtube.com/watch?v=dQw4w9WgXcQ") == "http"
    assert source.resolve("media", "https://example.com/page.html") == "media"
    with pytest.raises(ValueError, match="auto, http, media"):
        source.resolve("ftp", "https://example.com/")


def test_resolving_is_cheap_once_warm() -> None:
    source.warm_up()
    began = time.perf_counter()
    for n in range(50):
        source.resolve("auto", f"https://example.com/files/{n}.bin")
    # Pattern matching only, no request: well under a millisecond or two per URL (about
    # 0.6 ms with the joined patterns, 2.5 ms asking each extractor, on a quiet machine).
    assert (time.perf_counter() - began) / 50 < 0.05


def test_without_yt_dlp_auto_is_http_and_media_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "yt_dlp", None)

    assert not source.media_available()
    assert source.resolve("auto", "https://www.youtube.com/watch?v=dQw4w9WgXcQ") == "http"
    with pytest.raises(source.MediaUnavailable, match=r"progress-server\[media\]"):
        source.resolve("media", "https://www.youtube.com/watch?v=dQw4w9WgXcQ")
    assert source.startup_warning() == source.MISSING_MESSAGE


def test_the_server_imports_and_builds_its_app_without_yt_dlp(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['yt_dlp'] = None\n"
        "from progress_server.app import create_app\n"
        "from progress_server.settings import Settings\n"
        "import progress_server.cli, progress_server.media.transfer, progress_server.media.worker\n"
        "from progress_server.media import source\n"
        f"create_app(Settings(data_dir=__import__('pathlib').Path({str(tmp_path)!r})))\n"
        "assert not source.media_available()\n"
        "assert 'yt_dlp' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_the_worker_without_yt_dlp_says_what_to_install(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['yt_dlp'] = None\n"
        "from progress_server.media.worker import main\n"
        "sys.exit(main())\n"
    )
    job = json.dumps({"url": "https://example.com/v", "output_dir": str(tmp_path)})
    run = subprocess.run(
        [sys.executable, "-c", script],
        input=job + "\n", cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    event = json.loads(run.stdout)
    assert event["event"] == "error" and event["type"] == "internal_error"
    assert "pip install 'progress-server[media]'" in event["message"]
