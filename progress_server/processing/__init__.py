"""Post-processing: what happens to a file between `downloading` and `completed`."""

from progress_server.processing.pipeline import Pipeline, ProcessingContext, ProcessingError

__all__ = ["Pipeline", "ProcessingContext", "ProcessingError"]
