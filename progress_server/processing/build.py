"""The pipeline every task goes through, built from the settings."""

from __future__ import annotations

from progress_server.processing.pipeline import Pipeline
from progress_server.processing.verify import VerifyChecksum
from progress_server.settings import Settings


def build_pipeline(settings: Settings) -> Pipeline:
    return Pipeline([VerifyChecksum()], max_concurrent=settings.max_processing)
