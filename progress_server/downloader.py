"""Where the download engine used to live; it is now the `progress_server.engine` package."""

from progress_server.engine import Downloader, DownloadError, TransferObserver, TransferOutcome

__all__ = ["DownloadError", "Downloader", "TransferObserver", "TransferOutcome"]
