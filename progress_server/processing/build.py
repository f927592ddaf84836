"""The pipeline every task goes through, built from the settings and the tools found."""

from __future__ import annotations

import asyncio

from progress_server.processing.pipeline import Pipeline
from progress_server.processing.probe import ProbeMedia, Prober
from progress_server.processing.tools import MediaTools
from progress_server.processing.transcode import Transcode
from progress_server.processing.verify import VerifyChecksum
from progress_server.settings import Settings


def build_pipeline(settings: Settings, tools: MediaTools | None = None) -> Pipeline:
    tools = tools or MediaTools()
    prober = Prober(tools)
    # Transcodes have their own limit, apart from downloads: a long one never takes a
    # download slot, and never more than --max-processing of them load the CPU at once.
    transcodes = asyncio.Semaphore(settings.max_processing)
    return Pipeline(
        [
            VerifyChecksum(),
            ProbeMedia(prober),
            Transcode(
                tools, prober, settings.downloads_dir, transcodes, settings.progress_interval
            ),
        ]
    )
