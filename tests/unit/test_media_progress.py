"""CombinedProgress: several requested formats shown as one bar that never goes back."""

from __future__ import annotations

import itertools

from progress_server.media.progress import CombinedProgress, PartSize


def shown(
    progress: CombinedProgress, reports: list[tuple[int, int, int | None, bool]]
) -> list[float]:
    seen = []
    for part, downloaded, total, finished in reports:
        progress.update(part, downloaded, total, finished=finished)
        if progress.percentage is not None:
            seen.append(progress.percentage)
    return seen


def never_decreasing(values: list[float]) -> bool:
    return all(b >= a for a, b in itertools.pairwise(values))


def test_known_sizes_add_up_and_the_audio_part_does_not_restart_the_bar() -> None:
    progress = CombinedProgress([PartSize(size=800), PartSize(size=200)])
    seen = shown(
        progress,
        [(0, 400, 800, False), (0, 800, 800, True), (1, 0, 200, False), (1, 100, 200, False)],
    )
    assert seen == [40.0, 80.0, 80.0, 90.0]
    progress.update(1, 200, 200, finished=True)
    assert (progress.downloaded, progress.total, progress.percentage) == (1000, 1000, 100.0)


def test_growing_estimates_hold_the_percentage_instead_of_lowering_it() -> None:
    progress = CombinedProgress([PartSize()])
    # HLS: each fragment revises the estimate, up and down.
    seen = shown(
        progress,
        [
            (0, 100, 1000, False),
            (0, 200, 4000, False),
            (0, 300, 1500, False),
            (0, 900, 1000, False),
        ],
    )
    assert never_decreasing(seen)
    assert seen[0] == seen[1] == 10.0
    assert seen[-1] == 90.0
    progress.update(0, 1000, None, finished=True)
    assert progress.total == 1000 and progress.percentage == 100.0


def test_an_unknown_part_size_is_guessed_from_its_siblings_bitrate() -> None:
    progress = CombinedProgress([PartSize(tbr=300.0), PartSize(tbr=100.0)])
    progress.update(0, 300, 3000, finished=False)
    # The audio part, at a third of the video's bitrate, counts as a third of its size.
    assert progress.total == 4000


def test_unknown_without_any_clue_stays_unknown() -> None:
    progress = CombinedProgress([PartSize(), PartSize()])
    progress.update(0, 500, None)
    assert progress.total is None and progress.percentage is None
    assert progress.downloaded == 500


def test_bytes_never_go_back_when_a_fragment_is_retried() -> None:
    progress = CombinedProgress([PartSize(size=1000)])
    progress.update(0, 600, 1000)
    progress.update(0, 450, 1000)  # the fragment in flight started over
    assert progress.downloaded == 600


def test_a_resumed_run_starts_from_the_fraction_already_shown() -> None:
    first = CombinedProgress([PartSize(size=1000), PartSize()])
    first.update(0, 1000, 1000, finished=True)
    first.update(1, 500, 1000)
    assert first.percentage is not None and round(first.percentage) == 75

    # The next run finds the video done and guesses the audio as large as the video.
    resumed = CombinedProgress([PartSize(size=1000, tbr=1.0), PartSize(tbr=1.0)], first.fraction)
    resumed.update(0, 1000, 1000, finished=True)
    assert resumed.percentage is not None and resumed.percentage >= 75.0
    resumed.update(1, 400, 1000)
    resumed.update(1, 1000, None, finished=True)
    assert resumed.percentage == 100.0


def test_finishing_a_later_part_closes_the_earlier_ones() -> None:
    progress = CombinedProgress([PartSize(size=1000), PartSize(size=100)])
    progress.update(0, 990, 1000)  # its "finished" line was never seen
    progress.update(1, 100, 100, finished=True)
    assert progress.total == progress.downloaded == 1090
