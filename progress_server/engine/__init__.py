"""The download engine: resumable, segmented HTTP transfers into one `.part` file."""

from progress_server.engine.downloader import Downloader
from progress_server.engine.errors import DownloadError
from progress_server.engine.network import TransferObserver, TransferOutcome

__all__ = ["DownloadError", "Downloader", "TransferObserver", "TransferOutcome"]
